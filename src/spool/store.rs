//! The spool's tables in one redb file (`<dir>/spool.redb`): what is written in one
//! transaction, what is read back, and nothing else. Synchronous; the writer thread and
//! `spawn_blocking` call it.
//!
//! Tables (keys are the entries' sequence numbers unless said otherwise):
//!
//! | table | value | written |
//! | --- | --- | --- |
//! | `events` | received (ms since the epoch), hook path, client address, the packed event exactly as it goes onto the bus | once, at accept |
//! | `pending` | push attempts recorded, entry size | at accept; gone when confirmed |
//! | `done` | confirmation time (ms), attempts, entry size | when the echo was seen |
//! | `dedup_age` | (accept time, key hash) → () | at accept, for deliveries with a replay key |
//! | `info` | `spool_id`, `next_seq` | at creation, and by commits that prune |
//!
//! What a commit costs is the pages it writes (copy-on-write: every leaf it changes and the
//! branches above it), so every table is keyed in arrival order: a grouped commit appends to
//! the rightmost leaf of each. The replay keys are kept in age order only (a table keyed by
//! the random hash would change one random leaf per hook); a key accepted again after it
//! expired gets a second row ([`Store::dedup_keys`] returns rows newest first, and
//! `Spool::dedup_keys` keeps each key's newest for the replay guard). `next_seq` follows from
//! the last `events` row unless pruning removed it, so only commits that prune write it.
//!
//! An entry is in exactly one of `pending` and `done` while its `events` row exists, and each
//! row of one transaction lands or none does: a crash at any instant leaves either the state
//! before a commit or after it. Sizes count the event, the path, the address and
//! [`ROW_OVERHEAD`].

use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::SpoolError;

const EVENTS: TableDefinition<'static, u64, (u64, &str, &str, &[u8])> =
    TableDefinition::new("events");
const PENDING: TableDefinition<'static, u64, (u32, u64)> = TableDefinition::new("pending");
const DONE: TableDefinition<'static, u64, (u64, u32, u64)> = TableDefinition::new("done");
/// The table earlier spools kept beside `dedup_age` (hash → sequence number, time); dropped
/// when such a spool is opened.
const OLD_DEDUP: TableDefinition<'static, u128, (u64, u64)> = TableDefinition::new("dedup");
const DEDUP_AGE: TableDefinition<'static, (u64, u128), ()> = TableDefinition::new("dedup_age");
const INFO: TableDefinition<'static, &str, u64> = TableDefinition::new("info");

/// Bytes an entry costs beyond its event, path and address (keys and row headers of its rows).
pub const ROW_OVERHEAD: u64 = 96;

/// The spool file's name inside the spool directory.
pub const FILE_NAME: &str = "spool.redb";

/// Where the spool lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `<dir>/spool.redb`: durable.
    Dir(PathBuf),
    /// In memory: the same code path, nothing survives the process (fast tests).
    Memory,
}

/// One accepted hook, ready to be written.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its sequence number.
    pub seq: u64,
    /// When it was accepted, ms since the epoch.
    pub received_ms: u64,
    /// The hook path.
    pub path: String,
    /// The resolved client address.
    pub client: String,
    /// The packed event, id filled in.
    pub event: Bytes,
    /// Its replay key, if the rule has one.
    pub dedup: Option<u128>,
}

impl Row {
    /// What the entry costs in the spool's byte count.
    pub fn size(&self) -> u64 {
        (self.event.len() + self.path.len() + self.client.len()) as u64 + ROW_OVERHEAD
    }
}

/// Pruning asked of one transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune {
    /// Delivered entries confirmed before this (ms) go.
    pub delivered_before_ms: u64,
    /// Delivered entries also go, oldest first, until this many bytes are freed.
    pub free_bytes: u64,
    /// Replay keys accepted before this (ms) go.
    pub dedup_before_ms: u64,
    /// Replay keys also go, oldest first, until this many are gone.
    pub dedup_over: u64,
    /// At most this many rows of each kind per transaction (bounds the commit).
    pub max_rows: usize,
}

/// Everything one transaction does.
#[derive(Debug, Default)]
pub struct Work {
    /// New entries.
    pub rows: Vec<Row>,
    /// Entries whose echo was seen: sequence number, attempts.
    pub confirms: Vec<(u64, u32)>,
    /// Pending entries pushed again: sequence number, attempts so far.
    pub attempts: Vec<(u64, u32)>,
    /// Delivered entries to deliver again.
    pub redelivers: Vec<u64>,
    /// The next sequence number to hand out.
    pub next_seq: u64,
    /// Pruning, if due.
    pub prune: Option<Prune>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

impl Work {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.confirms.is_empty()
            && self.attempts.is_empty()
            && self.redelivers.is_empty()
            && self.prune.is_none()
    }
}

/// What a transaction changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Confirmed entries that were pending, and their sizes.
    pub confirmed: Vec<(u64, u64)>,
    /// Entries put back to pending: sequence number, attempts, event, size.
    pub redelivered: Vec<(u64, u32, Bytes, u64)>,
    /// Delivered entries pruned, and their bytes.
    pub pruned: (u64, u64),
    /// Replay keys added (new ones) and pruned.
    pub dedup: (u64, u64),
}

/// The state of a store when it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The spool's id (random, made at creation).
    pub spool_id: u64,
    /// The next sequence number.
    pub next_seq: u64,
    /// Entries not confirmed, and their bytes.
    pub pending: (u64, u64),
    /// The first entry not confirmed.
    pub first_pending: Option<u64>,
    /// Delivered entries kept, and their bytes.
    pub delivered: (u64, u64),
    /// Replay keys kept.
    pub dedup: u64,
}

/// Whether an entry still waits for its confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not confirmed yet.
    Pending,
    /// Its echo was seen on the bus.
    Delivered,
}

/// One entry as the delivery log lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryInfo {
    /// Its sequence number.
    pub seq: u64,
    /// The delivery id in its event.
    pub id: String,
    /// When it was accepted, ms since the epoch.
    pub received_ms: u64,
    /// The hook path.
    pub path: String,
    /// The resolved client address.
    pub client: String,
    /// Pending or delivered.
    pub state: State,
    /// Pushes recorded (a pending entry's first push is not recorded until it is confirmed).
    pub attempts: u32,
    /// When its echo was seen, ms since the epoch.
    pub confirmed_ms: Option<u64>,
    /// Its size in the spool's byte count.
    pub bytes: u64,
}

/// Which entries [`Store::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only entries before this sequence number (paging backwards); `None`: from the newest.
    pub before: Option<u64>,
    /// Only hook paths equal to this or below it (`github` matches `github/deploy`).
    pub path: Option<String>,
    /// Only entries in this state.
    pub state: Option<State>,
    /// At most this many.
    pub limit: usize,
}

/// Rows [`Store::list`] looks at per call at most, matching or not.
pub const LIST_SCAN: usize = 20_000;

/// The spool's database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: Option<PathBuf>,
    spool_id: u64,
}

fn store_err(e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Store(e.into().to_string())
}

impl Store {
    /// Opens (or creates) the store, repairing it after a crash; `cache` bytes of page cache.
    pub fn open(storage: &Storage, cache: usize) -> Result<(Store, Recovered), SpoolError> {
        let mut builder = Database::builder();
        builder.set_cache_size(cache);
        let (db, path) = match storage {
            Storage::Memory => (
                builder
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(store_err)?,
                None,
            ),
            Storage::Dir(dir) => {
                let path = dir.join(FILE_NAME);
                (open_file(&builder, dir, &path)?, Some(path))
            }
        };
        let mut store = Store {
            db,
            path,
            spool_id: 0,
        };
        let recovered = store.init()?;
        store.spool_id = recovered.spool_id;
        Ok((store, recovered))
    }

    /// The spool's id.
    pub fn spool_id(&self) -> u64 {
        self.spool_id
    }

    /// The file's size on disk (0 in memory).
    pub fn file_bytes(&self) -> u64 {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Creates the tables and the spool id when missing; reads the state back.
    fn init(&self) -> Result<Recovered, SpoolError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut info = txn.open_table(INFO).map_err(store_err)?;
            if info.get("spool_id").map_err(store_err)?.is_none() {
                // Never 0, so that an id of zeros is never ours.
                let id = rand::random::<u64>().max(1);
                info.insert("spool_id", id).map_err(store_err)?;
            }
            txn.open_table(EVENTS).map_err(store_err)?;
            txn.open_table(PENDING).map_err(store_err)?;
            txn.open_table(DONE).map_err(store_err)?;
            txn.open_table(DEDUP_AGE).map_err(store_err)?;
        }
        txn.delete_table(OLD_DEDUP).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        self.recovered()
    }

    /// The state of the store now, as [`Store::open`] reports it.
    pub fn recovered(&self) -> Result<Recovered, SpoolError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let info = txn.open_table(INFO).map_err(store_err)?;
        let get = |k: &str| -> Result<u64, SpoolError> {
            Ok(info.get(k).map_err(store_err)?.map_or(0, |v| v.value()))
        };
        let spool_id = get("spool_id")?;
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let last = events
            .last()
            .map_err(store_err)?
            .map_or(0, |(k, _)| k.value() + 1);
        let pending = txn.open_table(PENDING).map_err(store_err)?;
        let mut pending_sum = (0u64, 0u64);
        let mut first_pending = None;
        for row in pending.iter().map_err(store_err)? {
            let (k, v) = row.map_err(store_err)?;
            first_pending.get_or_insert(k.value());
            pending_sum.0 += 1;
            pending_sum.1 += v.value().1;
        }
        let done = txn.open_table(DONE).map_err(store_err)?;
        let mut done_sum = (0u64, 0u64);
        for row in done.iter().map_err(store_err)? {
            let (_, v) = row.map_err(store_err)?;
            done_sum.0 += 1;
            done_sum.1 += v.value().2;
        }
        let dedup = txn
            .open_table(DEDUP_AGE)
            .map_err(store_err)?
            .len()
            .map_err(store_err)?;
        Ok(Recovered {
            spool_id,
            next_seq: get("next_seq")?.max(last),
            pending: pending_sum,
            first_pending,
            delivered: done_sum,
            dedup,
        })
    }

    /// Writes `work` in one transaction. `durable`: on disk when this returns (one fsync);
    /// otherwise made durable by the next durable commit, or lost in a crash (only confirmations
    /// and attempt counts are written so: losing them means a delivery is pushed once more).
    pub fn commit(&self, work: &Work, durable: bool) -> Result<Applied, SpoolError> {
        let mut txn = self.db.begin_write().map_err(store_err)?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| SpoolError::Store(e.to_string()))?;
        }
        let applied = Self::apply(&txn, work).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(applied)
    }

    fn apply(txn: &redb::WriteTransaction, work: &Work) -> Result<Applied, redb::Error> {
        let mut applied = Applied::default();
        let mut events = txn.open_table(EVENTS)?;
        let mut pending = txn.open_table(PENDING)?;
        let mut done = txn.open_table(DONE)?;
        let mut dedup_age = txn.open_table(DEDUP_AGE)?;
        for row in &work.rows {
            events.insert(
                row.seq,
                (
                    row.received_ms,
                    row.path.as_str(),
                    row.client.as_str(),
                    &row.event[..],
                ),
            )?;
            pending.insert(row.seq, (0u32, row.size()))?;
            if let Some(key) = row.dedup
                && dedup_age.insert((row.received_ms, key), ())?.is_none()
            {
                applied.dedup.0 += 1;
            }
        }
        for &(seq, attempts) in &work.confirms {
            let was = pending.remove(seq)?.map(|v| v.value());
            if let Some((recorded, size)) = was {
                done.insert(seq, (work.now_ms, attempts.max(recorded), size))?;
                applied.confirmed.push((seq, size));
            }
        }
        for &(seq, attempts) in &work.attempts {
            let size = pending.get(seq)?.map(|v| v.value().1);
            if let Some(size) = size {
                pending.insert(seq, (attempts, size))?;
            }
        }
        for &seq in &work.redelivers {
            let was = done.remove(seq)?.map(|v| v.value());
            let Some((_, attempts, size)) = was else {
                continue;
            };
            let event = events
                .get(seq)?
                .map(|v| Bytes::copy_from_slice(v.value().3));
            match event {
                Some(event) => {
                    pending.insert(seq, (attempts, size))?;
                    applied.redelivered.push((seq, attempts, event, size));
                }
                None => {
                    done.insert(seq, (work.now_ms, attempts, size))?;
                }
            }
        }
        if let Some(prune) = work.prune {
            let mut gone = Vec::new();
            let mut freed = 0u64;
            for row in done.iter()? {
                let (k, v) = row?;
                let (confirmed_ms, _, size) = v.value();
                let old = confirmed_ms < prune.delivered_before_ms;
                if gone.len() >= prune.max_rows || !(old || freed < prune.free_bytes) {
                    break;
                }
                gone.push(k.value());
                freed += size;
            }
            for seq in &gone {
                done.remove(*seq)?;
                events.remove(*seq)?;
            }
            applied.pruned = (gone.len() as u64, freed);
            let mut keys = Vec::new();
            for row in dedup_age.iter()? {
                let (k, _) = row?;
                let (ms, key) = k.value();
                let due = ms < prune.dedup_before_ms || (keys.len() as u64) < prune.dedup_over;
                if keys.len() >= prune.max_rows || !due {
                    break;
                }
                keys.push((ms, key));
            }
            for &(ms, key) in &keys {
                dedup_age.remove((ms, key))?;
            }
            applied.dedup.1 = keys.len() as u64;
        }
        if work.prune.is_some() {
            let mut info = txn.open_table(INFO)?;
            info.insert("next_seq", work.next_seq)?;
        }
        Ok(applied)
    }

    /// Pending entries from `from` on, in order: at most `max_rows`, and no more once
    /// `max_bytes` of events are read (at least one). Each: sequence number, attempts, event.
    pub fn pending_from(
        &self,
        from: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, u32, Bytes)>, SpoolError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let pending = txn.open_table(PENDING).map_err(store_err)?;
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in pending.range(from..).map_err(store_err)? {
            if out.len() >= max_rows || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (k, v) = row.map_err(store_err)?;
            let seq = k.value();
            if let Some(ev) = events.get(seq).map_err(store_err)? {
                let event = Bytes::copy_from_slice(ev.value().3);
                bytes += event.len();
                out.push((seq, v.value().0, event));
            }
        }
        Ok(out)
    }

    /// When the oldest pending entry was accepted (ms since the epoch).
    pub fn oldest_pending_ms(&self) -> Result<Option<u64>, SpoolError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let pending = txn.open_table(PENDING).map_err(store_err)?;
        let Some((k, _)) = pending.first().map_err(store_err)? else {
            return Ok(None);
        };
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        Ok(events
            .get(k.value())
            .map_err(store_err)?
            .map(|v| v.value().0))
    }

    /// Replay keys accepted at or after `since_ms`, newest first, at most `max`: (hash, ms).
    pub fn dedup_keys(&self, since_ms: u64, max: usize) -> Result<Vec<(u128, u64)>, SpoolError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let age = txn.open_table(DEDUP_AGE).map_err(store_err)?;
        let mut out = Vec::new();
        for row in age.range((since_ms, 0u128)..).map_err(store_err)?.rev() {
            if out.len() >= max {
                break;
            }
            let (k, _) = row.map_err(store_err)?;
            let (ms, key) = k.value();
            out.push((key, ms));
        }
        Ok(out)
    }

    /// The delivery log: entries matching `query`, newest first. Also returns where a next
    /// page would start (`before`), when there may be more.
    pub fn list(&self, query: &Query) -> Result<(Vec<DeliveryInfo>, Option<u64>), SpoolError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let pending = txn.open_table(PENDING).map_err(store_err)?;
        let done = txn.open_table(DONE).map_err(store_err)?;
        let mut out = Vec::new();
        let mut next = None;
        let rows = events
            .range(..query.before.unwrap_or(u64::MAX))
            .map_err(store_err)?;
        for (scanned, row) in rows.rev().enumerate() {
            let (k, v) = row.map_err(store_err)?;
            let seq = k.value();
            if out.len() >= query.limit.max(1) || scanned >= LIST_SCAN {
                next = Some(seq + 1);
                break;
            }
            let (received_ms, path, client, _) = v.value();
            if let Some(prefix) = &query.path {
                let below = path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                if !below {
                    continue;
                }
            }
            let info = |state, attempts, confirmed_ms, bytes| DeliveryInfo {
                seq,
                id: super::id::format_id(self.spool_id, seq),
                received_ms,
                path: path.to_owned(),
                client: client.to_owned(),
                state,
                attempts,
                confirmed_ms,
                bytes,
            };
            let entry = if let Some(p) = pending.get(seq).map_err(store_err)? {
                let (attempts, bytes) = p.value();
                info(State::Pending, attempts, None, bytes)
            } else if let Some(d) = done.get(seq).map_err(store_err)? {
                let (ms, attempts, bytes) = d.value();
                info(State::Delivered, attempts, Some(ms), bytes)
            } else {
                // Every entry is pending or delivered (one transaction moves it): not
                // reachable, but skipped rather than shown in a state it does not have.
                continue;
            };
            if query.state.is_none_or(|s| s == entry.state) {
                out.push(entry);
            }
        }
        Ok((out, next))
    }

    /// One entry and its event exactly as it goes onto the bus.
    pub fn get(&self, seq: u64) -> Result<Option<(DeliveryInfo, Bytes)>, SpoolError> {
        let (mut found, _) = self.list(&Query {
            before: seq.checked_add(1),
            limit: 1,
            ..Query::default()
        })?;
        let Some(info) = found.pop().filter(|i| i.seq == seq) else {
            return Ok(None);
        };
        let txn = self.db.begin_read().map_err(store_err)?;
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let event = events
            .get(seq)
            .map_err(store_err)?
            .map(|v| Bytes::copy_from_slice(v.value().3));
        Ok(event.map(|e| (info, e)))
    }
}

/// Creates the directory (owner-only when saltgate makes it) and opens the file (owner-only:
/// it holds hook bodies).
fn open_file(builder: &redb::Builder, dir: &Path, path: &Path) -> Result<Database, SpoolError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let open_err = |what: &str, e: &dyn std::fmt::Display| SpoolError::Open {
        path: path.to_path_buf(),
        why: format!("{what}: {e}"),
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| open_err("cannot create the directory", &e))?;
    }
    let db = builder.create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            open_err("in use", &"another saltgate process has this spool open")
        }
        other => open_err("cannot open", &other),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| open_err("cannot restrict its permissions", &e))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, body: &str, dedup: Option<u128>) -> Row {
        Row {
            seq,
            received_ms: 1_000 + seq,
            path: "github/deploy".into(),
            client: "10.0.0.1".into(),
            event: Bytes::from(format!("salt/netapi/hook/github/deploy\n\n{body}")),
            dedup,
        }
    }

    fn ingest(store: &Store, rows: Vec<Row>, next: u64) {
        let work = Work {
            rows,
            next_seq: next,
            now_ms: 5_000,
            ..Work::default()
        };
        store.commit(&work, true).unwrap();
    }

    #[test]
    fn entries_move_from_pending_to_delivered_and_are_listed() {
        let (store, r) = Store::open(&Storage::Memory, 1 << 20).unwrap();
        assert_ne!(r.spool_id, 0);
        ingest(&store, (0..5).map(|i| row(i, "x", None)).collect(), 5);
        let work = Work {
            confirms: vec![(1, 1), (3, 2), (9, 1)],
            next_seq: 5,
            now_ms: 6_000,
            ..Work::default()
        };
        let applied = store.commit(&work, false).unwrap();
        let sizes: Vec<u64> = applied.confirmed.iter().map(|c| c.0).collect();
        assert_eq!(sizes, vec![1, 3]);
        let pending = store.pending_from(0, 10, 1 << 20).unwrap();
        let seqs: Vec<u64> = pending.iter().map(|p| p.0).collect();
        assert_eq!(seqs, vec![0, 2, 4]);
        assert_eq!(store.oldest_pending_ms().unwrap(), Some(1_000));
        let (all, next) = store
            .list(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(next, None);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].seq, 4);
        assert_eq!(all[1].state, State::Delivered);
        assert_eq!(all[1].confirmed_ms, Some(6_000));
        assert_eq!(all[1].attempts, 2);
        let (delivered, _) = store
            .list(&Query {
                state: Some(State::Delivered),
                path: Some("github".into()),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(delivered.iter().map(|d| d.seq).collect::<Vec<_>>(), [3, 1]);
        let (none, _) = store
            .list(&Query {
                path: Some("git".into()),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert!(none.is_empty(), "prefixes match on segment boundaries");
        let (page, next) = store
            .list(&Query {
                limit: 2,
                ..Query::default()
            })
            .unwrap();
        assert_eq!((page.len(), next), (2, Some(3)));
        let (info, event) = store.get(2).unwrap().unwrap();
        assert_eq!(info.id, super::super::id::format_id(r.spool_id, 2));
        assert!(event.starts_with(b"salt/netapi/hook/github/deploy\n\n"));
        assert!(store.get(77).unwrap().is_none());
    }

    #[test]
    fn redeliver_puts_a_delivered_entry_back() {
        let (store, _) = Store::open(&Storage::Memory, 1 << 20).unwrap();
        ingest(&store, vec![row(0, "x", None)], 1);
        let confirm = Work {
            confirms: vec![(0, 1)],
            next_seq: 1,
            ..Work::default()
        };
        store.commit(&confirm, true).unwrap();
        let again = Work {
            redelivers: vec![0, 5],
            next_seq: 1,
            ..Work::default()
        };
        let applied = store.commit(&again, true).unwrap();
        assert_eq!(applied.redelivered.len(), 1);
        assert_eq!(applied.redelivered[0].1, 1);
        assert_eq!(store.pending_from(0, 10, 1 << 20).unwrap().len(), 1);
    }

    #[test]
    fn pruning_frees_delivered_entries_and_old_replay_keys_only() {
        let (store, _) = Store::open(&Storage::Memory, 1 << 20).unwrap();
        let rows = (0..10)
            .map(|i| row(i, "x", Some(u128::from(i) + 100)))
            .collect();
        ingest(&store, rows, 10);
        let confirm = Work {
            confirms: (0..8).map(|i| (i, 1)).collect(),
            next_seq: 10,
            now_ms: 2_000,
            ..Work::default()
        };
        store.commit(&confirm, true).unwrap();
        let prune = Work {
            next_seq: 10,
            prune: Some(Prune {
                delivered_before_ms: 0,
                free_bytes: 3 * row(0, "x", None).size(),
                dedup_before_ms: 1_004,
                dedup_over: 0,
                max_rows: 100,
            }),
            ..Work::default()
        };
        let applied = store.commit(&prune, true).unwrap();
        assert_eq!(applied.pruned.0, 3);
        assert_eq!(applied.dedup.1, 4);
        let (left, _) = store
            .list(&Query {
                limit: 100,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(left.len(), 7);
        assert_eq!(left.last().unwrap().seq, 3);
        let keys = store.dedup_keys(0, 100).unwrap();
        assert_eq!(keys.len(), 6);
        assert_eq!(keys[0], (109, 1_009));
        // Pending entries are never pruned, whatever the pressure.
        let all = Work {
            next_seq: 10,
            prune: Some(Prune {
                delivered_before_ms: u64::MAX,
                free_bytes: u64::MAX,
                max_rows: 100,
                ..Prune::default()
            }),
            ..Work::default()
        };
        store.commit(&all, true).unwrap();
        assert_eq!(store.pending_from(0, 10, 1 << 20).unwrap().len(), 2);
    }

    #[test]
    fn a_replay_key_seen_again_comes_back_newest_first() {
        let (store, _) = Store::open(&Storage::Memory, 1 << 20).unwrap();
        ingest(&store, vec![row(0, "a", Some(7))], 1);
        ingest(&store, vec![row(1, "b", Some(7))], 2);
        assert_eq!(
            store.dedup_keys(0, 10).unwrap(),
            vec![(7, 1_001), (7, 1_000)]
        );
    }

    /// A crash mid-batch: the process dies with a transaction written but not committed, and
    /// with commits that were never made durable. Reopening shows exactly the durable commits.
    #[test]
    fn reopening_after_a_drop_mid_batch_keeps_exactly_the_durable_commits() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::Dir(dir.path().join("spool"));
        let spool_id;
        {
            let (store, r) = Store::open(&storage, 1 << 20).unwrap();
            spool_id = r.spool_id;
            ingest(
                &store,
                (0..3).map(|i| row(i, "durable", Some(9))).collect(),
                3,
            );
            // Confirmed without an fsync: may be lost, must not corrupt.
            let confirm = Work {
                confirms: vec![(0, 1)],
                next_seq: 3,
                ..Work::default()
            };
            store.commit(&confirm, false).unwrap();
            // A batch written into a transaction that is never committed.
            let txn = store.db.begin_write().unwrap();
            {
                let mut events = txn.open_table(EVENTS).unwrap();
                events.insert(3u64, (1u64, "p", "c", &b"torn"[..])).unwrap();
                let mut pending = txn.open_table(PENDING).unwrap();
                pending.insert(3u64, (0u32, 10u64)).unwrap();
            }
            std::mem::forget(txn);
            // Dropping the database without closing it, as a killed process would.
            std::mem::forget(store);
        }
        // The file lock of the leaked handle belongs to this process: open a copy instead,
        // which is what a new process sees after the old one died.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("spool").join(FILE_NAME),
            copy.path().join(FILE_NAME),
        )
        .unwrap();
        let (store, r) = Store::open(&Storage::Dir(copy.path().to_path_buf()), 1 << 20).unwrap();
        assert_eq!(r.spool_id, spool_id);
        assert_eq!(r.next_seq, 3);
        let seqs: Vec<u64> = store
            .pending_from(0, 10, 1 << 20)
            .unwrap()
            .iter()
            .map(|p| p.0)
            .collect();
        // Entry 0's confirmation was never durable: pending again (pushed once more), or
        // confirmed; never lost, never torn.
        assert!(seqs == [1, 2] || seqs == [0, 1, 2], "{seqs:?}");
        assert_eq!(r.pending.0 as usize, seqs.len());
        // One row per acceptance of the key (three, at 1,000–1,002 ms).
        assert_eq!(store.dedup_keys(0, 10).unwrap().len(), 3);
        let (all, _) = store
            .list(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(all.len(), 3, "the torn batch is not there");
    }

    #[test]
    fn a_second_process_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::Dir(dir.path().to_path_buf());
        let _first = Store::open(&storage, 1 << 20).unwrap();
        let err = Store::open(&storage, 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("spool.redb") && err.contains("in use"),
            "{err}"
        );
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let err = Store::open(&Storage::Dir("/proc/saltgate-spool".into()), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/saltgate-spool"), "{err}");
        assert!(err.contains("cannot create the directory"), "{err}");
    }
}

//! The durable spool: every hook that passed the pipeline is committed here before it is
//! answered, and delivered onto the bus from here, confirmed by its echo.
//!
//! - [`store`]: the redb file and its tables (accepted events exactly as they go onto the bus,
//!   delivery state, replay keys), crash-safe: a commit lands whole or not at all.
//! - [`wal`]: the log in front of it. Accepted hooks are appended there and fsynced before
//!   they are answered; the store takes them afterwards without an fsync, and a checkpoint
//!   makes the store durable every few MiB or at most a second apart. On open, the hooks in the
//!   log that the store's durable state lacks are committed to it first.
//! - `writer`: one thread owns the log. Handlers hand it their event and wait; it takes all
//!   that queued up during the previous fsync into one group, so concurrent hooks share one
//!   fsync (a grouped commit); a second thread commits the groups to the store. The queue in
//!   front of them is bounded in bytes until the store has a hook (`queue_bytes`, 503 `busy`
//!   past it); the spool is bounded in bytes too (`max_bytes`: 503 `spool_full` with
//!   `Retry-After` once pending entries fill it; delivered entries kept for the log make room
//!   first).
//! - `pusher`: one task pushes committed entries onto the bus in order, at most a window of
//!   them unconfirmed at a time, and marks each delivered when its echo comes back on the
//!   master's publisher (the bus reader hands echoes over through a bounded queue and never
//!   waits). An entry whose echo does not come within a deadline derived from the measured
//!   push-to-echo time is pushed again (at-least-once). After the master (re)connects, nothing
//!   is flushed until the master's Reactor answers ([`reactor`]).
//! - [`id`]: each event's data carries `_saltgate: {id: "<spool>-<seq>"}`, the key echoes are
//!   matched by (Reactor SLS that read `data.post`, `data.headers` or `data.body` are unaffected).
//!
//! On start everything not confirmed is delivered again, and the replay keys kept here let the
//! replay guard answer a sender's retry `duplicate` after a restart. On the built-in bus a fire
//! that returns reaches every subscriber, so an entry is confirmed when it is pushed.
//!
//! Imports nothing of the HTTP edge: it takes an [`Event`] and a [`Hook`] and answers
//! [`Accepted`] or a [`SpoolError`].

pub mod id;
pub mod metrics;
mod pusher;
pub mod reactor;
pub mod store;
pub mod wal;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::salt::bus::{Tap, Tapped};
use crate::salt::{Event, SharedBus};

pub use id::DELIVERY_KEY;
pub use reactor::ReactorCheck;
pub use store::{DeliveryInfo, Query, State, Storage};

/// Settings of the spool (`saltgate.spool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Where it lives.
    pub storage: Storage,
    /// Bytes of entries (pending and delivered) the spool holds at most.
    pub max_bytes: u64,
    /// Bytes of hooks waiting for the writer at most.
    pub queue_bytes: usize,
    /// How long delivered entries are kept for the delivery log.
    pub retention: Duration,
    /// How long a replay key is kept (the replay guard's TTL).
    pub dedup_ttl: Duration,
    /// Replay keys kept at most (the replay guard's capacity).
    pub dedup_capacity: usize,
    /// Ask the Reactor before flushing into a master that (re)connected; `None`: the master
    /// has no Reactor (no `reactor:` in its config), or the check is turned off.
    pub reactor: Option<ReactorCheck>,
    /// The page cache of the store, in bytes. Its pages are copies of what the kernel's page
    /// cache holds anyway; on the built-in bus at 64 connections, 4 MiB / 1 MiB / 256 KiB gave
    /// 35 / 31 / 29 MiB of RSS at the same hooks/s (2026-12-04).
    pub cache_bytes: usize,
}

impl SpoolConfig {
    /// Defaults for `storage`.
    pub fn new(storage: Storage) -> Self {
        let max_bytes = match storage {
            Storage::Dir(_) => DEFAULT_MAX_BYTES,
            Storage::Memory => MEMORY_MAX_BYTES,
        };
        Self {
            storage,
            max_bytes,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            retention: DEFAULT_RETENTION,
            dedup_ttl: Duration::from_secs(86_400),
            dedup_capacity: 100_000,
            reactor: None,
            cache_bytes: 256 << 10,
        }
    }
}

/// Default `max_bytes`: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default `max_bytes` of a spool in memory: 16 MiB (it is process memory).
pub const MEMORY_MAX_BYTES: u64 = 16 << 20;
/// Default `queue_bytes`: 32 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;
/// Default retention of delivered entries: a day.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(86_400);

/// Why a hook was not spooled, or the spool could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// Pending entries fill `max_bytes`: retry after this many seconds.
    #[error("the spool is full")]
    Full(u64),
    /// The queue in front of the writer is full.
    #[error("the spool's queue is full")]
    Busy,
    /// The store failed (disk error); nothing was accepted.
    #[error("spool store: {0}")]
    Store(String),
    /// The spool cannot be opened.
    #[error("saltgate.spool: {}: {why}", path.display())]
    Open {
        /// The spool file.
        path: std::path::PathBuf,
        /// What failed.
        why: String,
    },
    /// The event cannot be packed.
    #[error("cannot pack the event: {0}")]
    Encode(String),
    /// The spool has stopped.
    #[error("the spool has stopped")]
    Stopped,
}

/// Who sent a hook, for the delivery log and the replay guard.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The hook path (the tag's suffix).
    pub path: String,
    /// The resolved client address.
    pub client: IpAddr,
    /// The replay key ([`crate::security::replay::Reservation::key_hash`]), if any.
    pub dedup: Option<u128>,
}

/// A hook committed to the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The delivery id in its event.
    pub id: String,
    /// True when it will wait: the bus is down, the Reactor has not answered yet, or the
    /// master is not taking events as fast as they come.
    pub queued: bool,
}

/// Upper bounds of the commit-latency histogram, in seconds.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Link states, as [`SpoolStatus::link`] names them.
const LINK_NAMES: [&str; 3] = ["down", "waiting_for_reactor", "up"];

/// Counters and gauges shared by the handle, the writer and the pusher.
#[derive(Debug, Default)]
struct Shared {
    pending: AtomicU64,
    pending_bytes: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    dedup_keys: AtomicU64,
    accepted: AtomicU64,
    refused_full: AtomicU64,
    refused_busy: AtomicU64,
    commits: AtomicU64,
    lazy_commits: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_micros: AtomicU64,
    commit_failures: AtomicU64,
    confirmed: AtomicU64,
    repushed: AtomicU64,
    redelivered: AtomicU64,
    recovered: AtomicU64,
    repeats: AtomicU64,
    echoes_dropped: AtomicU64,
    reactor_asks: AtomicU64,
    reactor_answers: AtomicU64,
    inflight: AtomicU64,
    rto_micros: AtomicU64,
    link: AtomicU8,
    delivering: AtomicBool,
    /// Bytes of committed entries handed to the pusher and not yet taken.
    fresh_bytes: AtomicUsize,
    /// Set (and `fresh_dropped_wake` notified) when the writer could not hand some over.
    fresh_dropped: AtomicBool,
    fresh_dropped_wake: Notify,
    /// Bytes of new entries the writer handed to the store thread and it has not counted yet.
    staged_bytes: AtomicU64,
    /// Bytes of events in groups sent to the store thread and not taken by it yet; the writer
    /// waits while they are over [`writer::APPLY_BYTES`] (`applied_cv` wakes it).
    apply_queued: AtomicU64,
    /// Every hook answered from the log has a sequence number below this.
    answered_next: AtomicU64,
    /// The store's durable state holds every sequence number below this.
    durable_next: AtomicU64,
    /// Groups the log had no room for (committed to the store durably instead).
    log_full: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_micros: AtomicU64,
    /// Every sequence number below this is in the store; `applied_cv` is notified when it
    /// moves.
    applied: std::sync::Mutex<u64>,
    applied_cv: std::sync::Condvar,
}

impl Shared {
    /// Durable commits (one fsync each) go into the histogram; the others are only counted.
    fn observe_commit(&self, took: Duration, durable: bool) {
        if !durable {
            self.lazy_commits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (slot, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            if secs <= bound {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A durable commit of the store nobody waited for.
    fn observe_checkpoint(&self, took: Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.checkpoint_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The store now holds every sequence number below `next`.
    fn applied(&self, next: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if next > *applied {
            *applied = next;
            self.applied_cv.notify_all();
        }
    }

    /// Waits (at most `timeout`) until every hook answered so far is in the store, so that a
    /// read of the store sees it.
    fn wait_applied(&self, timeout: Duration) {
        let target = self.answered_next.load(Ordering::Acquire);
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .applied_cv
            .wait_timeout_while(applied, timeout, |a| *a < target);
    }
}

/// A snapshot for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpoolStatus {
    /// Entries not confirmed yet (the spool's depth).
    pub pending: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Delivered entries kept for the log.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// The spool file's size on disk.
    pub file_bytes: u64,
    /// Seconds since the oldest pending entry was accepted.
    pub oldest_pending_secs: Option<f64>,
    /// Replay keys kept.
    pub dedup_keys: u64,
    /// Hooks accepted since start.
    pub accepted: u64,
    /// Hooks refused because the spool was full.
    pub refused_full: u64,
    /// Hooks refused because the writer's queue was full.
    pub refused_busy: u64,
    /// Durable commits since start that hooks waited for (each one fsync, however many hooks
    /// it holds): appends to the log, and commits of the store the log had no room for.
    pub commits: u64,
    /// Durable commits of the store nobody waited for (checkpoints of what the log holds).
    pub checkpoints: u64,
    /// Seconds spent in them.
    pub checkpoint_seconds: f64,
    /// Groups of hooks the log had no room for.
    pub log_full: u64,
    /// Commits left to the next durable one (confirmations only).
    pub lazy_commits: u64,
    /// Durable commits that took at most each of [`COMMIT_BUCKETS`].
    pub commit_buckets: [u64; COMMIT_BUCKETS.len()],
    /// Seconds spent in durable commits.
    pub commit_seconds: f64,
    /// Commits that failed.
    pub commit_failures: u64,
    /// Entries confirmed by their echo (or, on the built-in bus, by their push).
    pub confirmed: u64,
    /// Pushes of an entry after its first one (no echo within the deadline, or the master
    /// went away before it came).
    pub repushed: u64,
    /// Deliveries fired again on request.
    pub redelivered: u64,
    /// Entries found pending when the spool was opened, delivered again.
    pub recovered: u64,
    /// Echoes of entries already confirmed: events the bus carried more than once.
    pub repeats: u64,
    /// Echoes the bus reader could not hand over (the queue was full); each makes a re-push.
    pub echoes_dropped: u64,
    /// Requests sent to the master's Reactor ([`reactor`]), and answers seen.
    pub reactor_asks: u64,
    /// See [`SpoolStatus::reactor_asks`].
    pub reactor_answers: u64,
    /// Entries pushed and not yet confirmed.
    pub inflight: u64,
    /// The current re-push deadline, in seconds.
    pub repush_after_secs: f64,
    /// `up`, `down` or `waiting_for_reactor`.
    pub link: &'static str,
    /// Whether hooks accepted now go straight out (else they are answered `queued`).
    pub delivering: bool,
}

/// Messages to the pusher from the handle.
#[derive(Debug)]
enum Ctl {
    /// An entry put back to pending: push it (again).
    Redeliver(u64, u32, bytes::Bytes),
    /// Answer once nothing is pending, or at the deadline.
    Drain(tokio::time::Instant, oneshot::Sender<()>),
}

/// The spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<store::Store>,
    ops: std::sync::mpsc::Sender<writer::Op>,
    queue: Arc<Semaphore>,
    queue_bytes: usize,
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<Ctl>,
    spool_id: u64,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Longest wait of a read of the delivery log for the hooks answered before it to reach the
/// store (they are in the log already; the store takes them within a commit).
const READ_WAIT: Duration = Duration::from_secs(2);

/// Echoes the bus reader may have handed over and the pusher not yet taken.
const ECHO_QUEUE: usize = 32_768;

impl Spool {
    /// Opens (or creates and recovers) the spool and starts its writer thread and pusher task
    /// on `bus`. Must be called inside a tokio runtime.
    pub fn open(config: SpoolConfig, bus: SharedBus) -> Result<Spool, SpoolError> {
        let (store, mut recovered) = store::Store::open(&config.storage, config.cache_bytes)?;
        let wal = match &config.storage {
            Storage::Dir(dir) => {
                let (mut wal, rows) = wal::Wal::open(dir, recovered.spool_id)?;
                let rows: Vec<store::Row> = rows
                    .into_iter()
                    .filter(|r| r.seq >= recovered.next_seq)
                    .collect();
                if let Some(last) = rows.last().map(|r| r.seq) {
                    let hooks = rows.len();
                    let work = store::Work {
                        rows,
                        next_seq: last + 1,
                        now_ms: now_ms(),
                        ..store::Work::default()
                    };
                    store.commit(&work, true)?;
                    recovered = store.recovered()?;
                    tracing::info!(
                        hooks,
                        "Spool: hooks answered before the last stop, found in its log, are in the store again"
                    );
                }
                wal.begin(recovered.next_seq)?;
                Some(wal)
            }
            Storage::Memory => None,
        };
        let store = Arc::new(store);
        let shared = Arc::new(Shared::default());
        shared.pending.store(recovered.pending.0, Ordering::Relaxed);
        shared
            .pending_bytes
            .store(recovered.pending.1, Ordering::Relaxed);
        shared
            .delivered
            .store(recovered.delivered.0, Ordering::Relaxed);
        shared
            .delivered_bytes
            .store(recovered.delivered.1, Ordering::Relaxed);
        shared.dedup_keys.store(recovered.dedup, Ordering::Relaxed);
        if recovered.pending.0 > 0 {
            tracing::info!(
                pending = recovered.pending.0,
                bytes = recovered.pending.1,
                "Spool opened with undelivered hooks; delivering them again"
            );
        }
        let spool_id = recovered.spool_id;
        shared
            .durable_next
            .store(recovered.next_seq, Ordering::Relaxed);
        shared
            .answered_next
            .store(recovered.next_seq, Ordering::Relaxed);
        shared.applied(recovered.next_seq);
        let (ops, ops_rx) = std::sync::mpsc::channel();
        let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel(writer::APPLY_QUEUE);
        let (fresh_tx, fresh_rx) = mpsc::unbounded_channel();
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (echo_tx, echo_rx) = mpsc::channel(ECHO_QUEUE);
        let (link_tx, link_rx) = tokio::sync::watch::channel(pusher::Link::default());
        let (reactor_tx, reactor_rx) = tokio::sync::watch::channel(0u64);
        let instant = bus.fire_is_delivery();
        if !instant {
            let tap_shared = Arc::clone(&shared);
            let tap = Tap {
                prefixes: &["salt/netapi/hook", reactor::ANSWER_TAG],
                call: Arc::new(move |item| match item {
                    Tapped::Event(event) if event.tag == reactor::ANSWER_TAG => {
                        tap_shared.reactor_answers.fetch_add(1, Ordering::Relaxed);
                        reactor_tx.send_modify(|n| *n += 1);
                    }
                    Tapped::Event(event) => {
                        if let Some((spool, seq)) = id::event_id(event) {
                            if spool == spool_id && echo_tx.try_send(seq).is_err() {
                                tap_shared.echoes_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Tapped::Connected => link_tx.send_modify(|l| {
                        l.generation += 1;
                        l.up = true;
                    }),
                    Tapped::Disconnected => link_tx.send_modify(|l| l.up = false),
                }),
            };
            if !bus.set_tap(tap) {
                return Err(SpoolError::Open {
                    path: storage_path(&config.storage),
                    why: "the event bus already has a spool".into(),
                });
            }
        }
        let applier = writer::Applier::new(
            Arc::clone(&store),
            apply_rx,
            Arc::clone(&shared),
            fresh_tx,
            recovered.next_seq,
        );
        let writer = writer::Writer::new(
            writer::WriterParts {
                rx: ops_rx,
                shared: Arc::clone(&shared),
                wal,
                apply: apply_tx,
                spool_id,
                next_seq: recovered.next_seq,
            },
            &config,
        );
        let thread_err = |e: std::io::Error| SpoolError::Open {
            path: storage_path(&config.storage),
            why: format!("cannot start the spool's threads: {e}"),
        };
        std::thread::Builder::new()
            .name("saltgate-spool-store".into())
            .spawn(move || applier.run())
            .map_err(thread_err)?;
        std::thread::Builder::new()
            .name("saltgate-spool".into())
            .spawn(move || writer.run())
            .map_err(thread_err)?;
        let stop = CancellationToken::new();
        let connected = instant || bus.status().connected;
        let pusher = pusher::Pusher::new(pusher::Parts {
            bus,
            store: Arc::clone(&store),
            ops: ops.clone(),
            shared: Arc::clone(&shared),
            instant,
            reactor: config.reactor.clone(),
            first: recovered.first_pending.unwrap_or(recovered.next_seq),
            connected,
        });
        let inputs = pusher::Inputs {
            echo: echo_rx,
            link: link_rx,
            reactor: reactor_rx,
            fresh: fresh_rx,
            ctl: ctl_rx,
        };
        shared
            .recovered
            .store(recovered.pending.0, Ordering::Relaxed);
        tokio::spawn(pusher.run(inputs, stop.clone()));
        Ok(Spool {
            inner: Arc::new(Inner {
                store,
                ops,
                queue: Arc::new(Semaphore::new(config.queue_bytes)),
                queue_bytes: config.queue_bytes,
                shared,
                ctl: ctl_tx,
                spool_id,
                stop,
            }),
        })
    }

    /// Commits `event` (a hook's, its data a map) and answers once it is on disk. The event
    /// gets its delivery id ([`DELIVERY_KEY`]) first.
    pub async fn accept(&self, event: Event, hook: Hook) -> Result<Accepted, SpoolError> {
        let inner = &self.inner;
        let slotted = id::pack_slotted(event).map_err(|e| SpoolError::Encode(e.to_string()))?;
        let cost = (slotted.bytes.len() + hook.path.len() + 64).min(inner.queue_bytes);
        let permit = Arc::clone(&inner.queue)
            .try_acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .map_err(|_| {
                inner.shared.refused_busy.fetch_add(1, Ordering::Relaxed);
                SpoolError::Busy
            })?;
        let (reply, answer) = oneshot::channel();
        let ingest = writer::Ingest {
            slotted,
            path: hook.path,
            client: hook.client.to_string(),
            dedup: hook.dedup,
            received_ms: now_ms(),
            reply,
            _permit: permit,
        };
        inner
            .ops
            .send(writer::Op::Ingest(ingest))
            .map_err(|_| SpoolError::Stopped)?;
        let seq = answer.await.map_err(|_| SpoolError::Stopped)??;
        Ok(Accepted {
            id: id::format_id(inner.spool_id, seq),
            queued: !inner.shared.delivering.load(Ordering::Acquire),
        })
    }

    /// The spool's state now.
    pub fn status(&self) -> SpoolStatus {
        let s = &self.inner.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let pending = get(&s.pending);
        let oldest_pending_secs = if pending == 0 {
            None
        } else {
            self.inner
                .store
                .oldest_pending_ms()
                .ok()
                .flatten()
                .map(|ms| now_ms().saturating_sub(ms) as f64 / 1000.0)
        };
        let mut commit_buckets = [0u64; COMMIT_BUCKETS.len()];
        for (out, slot) in commit_buckets.iter_mut().zip(&s.commit_buckets) {
            *out = get(slot);
        }
        SpoolStatus {
            pending,
            pending_bytes: get(&s.pending_bytes),
            delivered: get(&s.delivered),
            delivered_bytes: get(&s.delivered_bytes),
            file_bytes: self.inner.store.file_bytes(),
            oldest_pending_secs,
            dedup_keys: get(&s.dedup_keys),
            accepted: get(&s.accepted),
            refused_full: get(&s.refused_full),
            refused_busy: get(&s.refused_busy),
            commits: get(&s.commits),
            checkpoints: get(&s.checkpoints),
            checkpoint_seconds: get(&s.checkpoint_micros) as f64 / 1e6,
            log_full: get(&s.log_full),
            lazy_commits: get(&s.lazy_commits),
            commit_buckets,
            commit_seconds: get(&s.commit_micros) as f64 / 1e6,
            commit_failures: get(&s.commit_failures),
            confirmed: get(&s.confirmed),
            repushed: get(&s.repushed),
            redelivered: get(&s.redelivered),
            recovered: get(&s.recovered),
            repeats: get(&s.repeats),
            echoes_dropped: get(&s.echoes_dropped),
            reactor_asks: get(&s.reactor_asks),
            reactor_answers: get(&s.reactor_answers),
            inflight: get(&s.inflight),
            repush_after_secs: get(&s.rto_micros) as f64 / 1e6,
            link: LINK_NAMES
                .get(usize::from(s.link.load(Ordering::Relaxed)))
                .copied()
                .unwrap_or("down"),
            delivering: s.delivering.load(Ordering::Relaxed),
        }
    }

    /// Replay keys accepted within the last `ttl`, newest first, at most `max` rows read: each
    /// key once, with when it was last accepted. For [`crate::security::ReplayGuard::restore`] at start.
    pub fn dedup_keys(&self, ttl: Duration, max: usize) -> Vec<(u128, SystemTime)> {
        let since = now_ms().saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        match self.inner.store.dedup_keys(since, max) {
            // A key accepted again after it left the guard has a row per acceptance: only the
            // newest (the first here) counts.
            Ok(keys) => {
                let mut seen = std::collections::HashSet::with_capacity(keys.len());
                keys.into_iter()
                    .filter(|(k, _)| seen.insert(*k))
                    .map(|(k, ms)| (k, SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the spool's replay keys; retries of earlier deliveries will be fired again");
                Vec::new()
            }
        }
    }

    /// The delivery log: entries matching `query`, newest first, and where the next page
    /// starts (`query.before`) when there may be more.
    pub async fn list(&self, query: Query) -> Result<(Vec<DeliveryInfo>, Option<u64>), SpoolError> {
        let store = Arc::clone(&self.inner.store);
        let shared = Arc::clone(&self.inner.shared);
        tokio::task::spawn_blocking(move || {
            shared.wait_applied(READ_WAIT);
            store.list(&query)
        })
        .await
        .map_err(|_| SpoolError::Stopped)?
    }

    /// One entry and its event exactly as it went onto the bus.
    pub async fn get(&self, seq: u64) -> Result<Option<(DeliveryInfo, Event)>, SpoolError> {
        let store = Arc::clone(&self.inner.store);
        let shared = Arc::clone(&self.inner.shared);
        let found = tokio::task::spawn_blocking(move || {
            shared.wait_applied(READ_WAIT);
            store.get(seq)
        })
        .await
        .map_err(|_| SpoolError::Stopped)??;
        match found {
            None => Ok(None),
            Some((info, raw)) => Event::unpack(&raw)
                .map(|e| Some((info, e)))
                .map_err(|e| SpoolError::Store(format!("entry {seq}: {e}"))),
        }
    }

    /// Fires a delivered entry again (same event, same delivery id); `false` when there is no
    /// such delivered entry (unknown, pruned, or still pending).
    pub async fn redeliver(&self, seq: u64) -> Result<bool, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(writer::Op::Redeliver(seq, reply))
            .map_err(|_| SpoolError::Stopped)?;
        let Some((attempts, event)) = answer.await.map_err(|_| SpoolError::Stopped)?? else {
            return Ok(false);
        };
        self.inner
            .shared
            .redelivered
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(seq, "Redelivering a spooled hook");
        let _ = self.inner.ctl.send(Ctl::Redeliver(seq, attempts, event));
        Ok(true)
    }

    /// Waits until nothing is pending or `timeout` passed, then makes every commit durable.
    /// For shutdown: entries still pending stay in the spool for the next start.
    pub async fn drain(&self, timeout: Duration) {
        let (reply, drained) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + timeout;
        if self.inner.ctl.send(Ctl::Drain(deadline, reply)).is_ok() {
            let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), drained).await;
        }
        let (reply, synced) = oneshot::channel();
        if self.inner.ops.send(writer::Op::Sync(reply)).is_ok() {
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), synced).await {
                tracing::error!(error = %e, "Spool: the final commit failed");
            }
        }
        let pending = self.inner.shared.pending.load(Ordering::Relaxed);
        if pending > 0 {
            tracing::warn!(
                pending,
                "Stopping with undelivered hooks in the spool; they are delivered at the next start"
            );
        }
    }
}

fn storage_path(storage: &Storage) -> std::path::PathBuf {
    match storage {
        Storage::Dir(dir) => dir.join(store::FILE_NAME),
        Storage::Memory => "(memory)".into(),
    }
}

/// Now, ms since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;

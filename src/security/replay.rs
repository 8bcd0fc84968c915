//! Duplicate-delivery guard and timestamp window.
//!
//! What the delivery-id guard stops, exactly: a sender's retries and redeliveries (they reuse
//! the id) and two copies of one delivery being fired at once (the second is refused while the
//! first is in flight). What it does not stop: an attacker who captured a signed delivery and
//! sends it again with a new or no id. GitHub (`X-GitHub-Delivery`), GitLab
//! (`Idempotency-Key`, else `X-Gitlab-Webhook-UUID`), Gitea/Forgejo (`X-Gitea-Delivery`, `X-Forgejo-Delivery`) and
//! Bitbucket (`X-Request-UUID`) ids, and a generic `hmac` rule's `delivery_header`, are plain
//! headers outside the signature, so a changed id still verifies. Only Amazon SNS signs its id (`MessageId`). Against resent bodies, the
//! defences are the signed timestamp window ([`check_timestamp`]: Slack, Stripe, Standard
//! Webhooks, SNS) and, for senders whose bodies are unique per delivery, a rule's
//! `dedupe: body`, which keys the guard on the body's SHA-256 ([`body_key`]) instead of the id.
//!
//! A delivery already fired within the TTL is answered as a duplicate, and a delivery still
//! being processed is refused too, so two concurrent retries cannot both fire. A reservation
//! dropped without [`Reservation::commit`] releases its key, so a delivery that failed to fire
//! can be retried by the sender. Memory is bounded: at capacity the oldest entry is evicted.
//! Keys are stored as 128-bit SHA-256 prefixes, so a long attacker-chosen id costs 16 bytes.
//!
//! [`check_timestamp`] refuses signed timestamps outside a window in both directions. Time is
//! always an argument.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// The first 128 bits of the id's SHA-256: 16 bytes per id whatever its length, and a chance
/// collision (which would answer a fresh delivery as a duplicate) is out of reach.
type KeyHash = u128;

fn key_hash(key: &str) -> KeyHash {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The guard key for `dedupe: body`: the rule's scope and the SHA-256 of the raw body, so a
/// resent body is a duplicate whatever delivery id (or none) it comes with.
pub fn body_key(scope: &str, body: &[u8]) -> String {
    format!("{scope}:body:{}", hex::encode(Sha256::digest(body)))
}

/// Why [`ReplayGuard::begin`] refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Duplicate {
    /// The key was fired (committed) within the TTL.
    #[error("delivery already processed")]
    Committed,
    /// The key is reserved by a delivery that has not finished yet.
    #[error("delivery already in progress")]
    InProgress,
}

/// A signed timestamp outside the allowed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// Older than the window allows; `age_secs` past `now`.
    #[error("timestamp is {age_secs}s old")]
    TooOld {
        /// Seconds between the timestamp and now.
        age_secs: u64,
    },
    /// Further in the future than the window allows.
    #[error("timestamp is {ahead_secs}s in the future")]
    InFuture {
        /// Seconds between now and the timestamp.
        ahead_secs: u64,
    },
}

/// Refuses `ts_unix` when it is more than `window` before or after `now_unix`.
pub fn check_timestamp(ts_unix: i64, now_unix: i64, window: Duration) -> Result<(), Stale> {
    let diff = i128::from(now_unix) - i128::from(ts_unix);
    let window = i128::from(window.as_secs());
    let secs = u64::try_from(diff.unsigned_abs()).unwrap_or(u64::MAX);
    if diff > window {
        Err(Stale::TooOld { age_secs: secs })
    } else if -diff > window {
        Err(Stale::InFuture { ahead_secs: secs })
    } else {
        Ok(())
    }
}

/// One place of a shard's ring: a key, held as two halves so that a slot is 24 bytes (a
/// `u128` field would align it to 32), and `committed_ms`: when the delivery was fired
/// (milliseconds since the epoch), or [`IN_FLIGHT`] while it is being processed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u64,
    committed_ms: u64,
}

impl Slot {
    fn new(key: KeyHash, committed_ms: u64) -> Slot {
        // Each half is exactly 64 bits of the key.
        Slot {
            hi: (key >> 64) as u64,
            lo: key as u64,
            committed_ms,
        }
    }

    fn key(&self) -> KeyHash {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

const IN_FLIGHT: u64 = u64::MAX;

fn epoch_ms(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    u64::try_from(ms)
        .unwrap_or(IN_FLIGHT - 1)
        .min(IN_FLIGHT - 1)
}

/// One shard: the keys in a ring of slots, and an index from key to place. About 30 bytes per
/// id (a 24-byte slot, a 4-byte place and a control byte in a table at most 7/8 full): 100,000
/// ids take about 3 MiB.
///
/// The key given sequence number `seq` sits at place `seq % capacity`; when that place is
/// reused, the key still indexed there is the one evicted. So there are never more than
/// `capacity` keys, and a reservation made with `seq` still owns its key while its place has
/// not been reused (`next_seq <= seq + capacity`) and the index points there.
#[derive(Debug, Default)]
struct Inner {
    ring: Vec<Slot>,
    index: HashTable<u32>,
    /// Keyed per process, so that nobody can choose ids that pile into one bucket.
    hasher: RandomState,
    next_seq: u64,
}

impl Inner {
    fn hash(&self, key: KeyHash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The place and slot of `key`.
    fn get(&self, key: KeyHash) -> Option<(usize, Slot)> {
        let ring = &self.ring;
        self.index
            .find(self.hash(key), |&p| {
                ring.get(p as usize).is_some_and(|s| s.key() == key)
            })
            .and_then(|&p| ring.get(p as usize).map(|s| (p as usize, *s)))
    }

    /// Forgets `key`, wherever it is.
    fn remove(&mut self, key: KeyHash) {
        let hash = self.hash(key);
        let ring = &self.ring;
        if let Ok(entry) = self.index.find_entry(hash, |&p| {
            ring.get(p as usize).is_some_and(|s| s.key() == key)
        }) {
            entry.remove();
        }
    }

    /// Whether the reservation made with `seq` still owns `key`'s entry.
    fn owns(&self, key: KeyHash, seq: u64, capacity: usize) -> Option<usize> {
        let place = (seq % capacity as u64) as usize;
        let current = self.next_seq <= seq.saturating_add(capacity as u64);
        match self.get(key) {
            Some((p, _)) if current && p == place => Some(place),
            _ => None,
        }
    }

    fn insert(&mut self, key: KeyHash, committed_ms: u64, capacity: usize) -> u64 {
        self.remove(key);
        let seq = self.next_seq;
        self.next_seq += 1;
        // `capacity` fits in u64 and the remainder is below it: both conversions are exact.
        let place = (seq % capacity as u64) as usize;
        let slot = Slot::new(key, committed_ms);
        if let Some(old) = self.ring.get(place).map(Slot::key) {
            let hash = self.hash(old);
            if let Ok(entry) = self.index.find_entry(hash, |&p| p as usize == place) {
                entry.remove();
            }
            self.ring[place] = slot;
        } else {
            if self.ring.capacity() == 0 {
                self.ring.reserve_exact(capacity);
            }
            self.ring.push(slot);
        }
        let hash = self.hash(key);
        let Inner {
            ring,
            index,
            hasher,
            ..
        } = self;
        // Places are below the shard's capacity, which `ReplayGuard::new` keeps within u32.
        index.insert_unique(hash, place as u32, |&p| {
            ring.get(p as usize).map_or(0, |s| hasher.hash_one(s.key()))
        });
        seq
    }

    fn remove_if(&mut self, key: KeyHash, seq: u64, capacity: usize) {
        if self.owns(key, seq, capacity).is_some() {
            self.remove(key);
        }
    }
}

/// Guards of at least this capacity are split into [`SHARDS`] tables by key hash, so that
/// concurrent hooks on different worker threads rarely wait for each other's lock; smaller
/// ones (tests, tiny configs) keep one table and an exact capacity.
const SHARD_FROM: usize = 4096;
/// Tables of a sharded guard.
const SHARDS: usize = 8;

/// The seen-id cache. Cheap to clone (shared state); thread-safe.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    shards: Arc<[Mutex<Inner>]>,
    /// Ids each shard holds at most.
    per_shard: usize,
    capacity: usize,
    ttl: Duration,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` ids (at least 1), each for `ttl` after commit.
    ///
    /// In-flight reservations count against the capacity and are evicted like committed ids, so
    /// `capacity` should comfortably exceed the number of deliveries processed concurrently
    /// plus the ids expected within `ttl`; an evicted id can be accepted once more.
    pub fn new(capacity: usize, ttl: Duration) -> ReplayGuard {
        // Places are u32 in the index: at most 2^32 - 1 ids per shard.
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let n = if capacity >= SHARD_FROM { SHARDS } else { 1 };
        ReplayGuard {
            shards: (0..n).map(|_| Mutex::new(Inner::default())).collect(),
            per_shard: capacity.div_ceil(n),
            capacity,
            ttl,
        }
    }

    /// The table holding `key`.
    fn shard(&self, key: KeyHash) -> MutexGuard<'_, Inner> {
        // The remainder is below the number of shards: the conversion is exact.
        let i = (key % self.shards.len() as u128) as usize;
        lock(&self.shards[i])
    }

    /// Reserves `key`; refuses it when committed within the TTL or in flight.
    ///
    /// Include the hook rule in `key` (e.g. `github/deploy:<delivery id>`) so that ids from
    /// different senders cannot collide, and use only ids the scheme returned in
    /// [`crate::security::Verified`], i.e. after the signature passed.
    pub fn begin(&self, key: &str, now: SystemTime) -> Result<Reservation, Duplicate> {
        let hash = key_hash(key);
        let mut inner = self.shard(hash);
        if let Some((_, entry)) = inner.get(hash) {
            if entry.committed_ms == IN_FLIGHT {
                return Err(Duplicate::InProgress);
            }
            if self.fresh(entry.committed_ms, now) {
                return Err(Duplicate::Committed);
            }
            inner.remove(hash);
        }
        let seq = inner.insert(hash, IN_FLIGHT, self.per_shard);
        drop(inner);
        Ok(Reservation {
            guard: self.clone(),
            key: hash,
            seq,
            done: false,
        })
    }

    /// Remembers a key committed at `committed` (its [`Reservation::key_hash`]), as kept by a
    /// store across restarts, so that a sender's retry after a restart is still a duplicate.
    /// Keys already held, or expired at `now`, are left alone.
    pub fn restore(&self, key: u128, committed: SystemTime, now: SystemTime) {
        let at = epoch_ms(committed);
        if !self.fresh(at, now) {
            return;
        }
        let mut inner = self.shard(key);
        if inner.get(key).is_none() {
            inner.insert(key, at, self.per_shard);
        }
    }

    /// The most ids held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a committed id stays a duplicate.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Number of ids held (in flight or committed, expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).index.len()).sum()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, committed_ms: u64, now: SystemTime) -> bool {
        // A clock that went backwards counts as zero elapsed: still a duplicate.
        let elapsed = Duration::from_millis(epoch_ms(now).saturating_sub(committed_ms));
        elapsed < self.ttl
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The map stays consistent at every await-free step, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reserved delivery id. Call [`Reservation::commit`] once the event was fired; dropping it
/// uncommitted releases the id so the sender's retry is accepted.
#[derive(Debug)]
#[must_use = "dropping a reservation releases the id; commit it after firing"]
pub struct Reservation {
    guard: ReplayGuard,
    key: KeyHash,
    seq: u64,
    done: bool,
}

impl Reservation {
    /// The key as the guard stores it (a 128-bit hash), for a store that keeps it across
    /// restarts ([`ReplayGuard::restore`]).
    pub fn key_hash(&self) -> u128 {
        self.key
    }

    /// Marks the id as processed at `now`; it is a duplicate until `now + ttl`.
    pub fn commit(mut self, now: SystemTime) {
        self.done = true;
        let per_shard = self.guard.per_shard;
        let mut inner = self.guard.shard(self.key);
        let at = epoch_ms(now);
        match inner.owns(self.key, self.seq, per_shard) {
            Some(place) => inner.ring[place].committed_ms = at,
            // Evicted meanwhile (or replaced after eviction): remembered anew as committed.
            None => {
                inner.insert(self.key, at, per_shard);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let per_shard = self.guard.per_shard;
            self.guard
                .shard(self.key)
                .remove_if(self.key, self.seq, per_shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A large guard is sharded: every key is still found, and it never holds more than its
    /// capacity (rounded up to whole shards).
    #[test]
    fn sharded_guard_keeps_its_keys_and_its_bound() {
        let g = ReplayGuard::new(SHARD_FROM, Duration::from_secs(60));
        assert_eq!(g.shards.len(), SHARDS);
        for i in 0..1000 {
            g.begin(&format!("k{i}"), at(100)).unwrap().commit(at(100));
        }
        for i in 0..1000 {
            assert!(matches!(
                g.begin(&format!("k{i}"), at(101)),
                Err(Duplicate::Committed)
            ));
        }
        for i in 0..(4 * SHARD_FROM) {
            g.begin(&format!("m{i}"), at(100)).unwrap().commit(at(100));
        }
        assert!(
            g.len() <= SHARD_FROM.div_ceil(SHARDS) * SHARDS,
            "{}",
            g.len()
        );
        assert!(g.len() >= SHARD_FROM / 2, "{}", g.len());
    }

    #[test]
    fn committed_key_is_duplicate_within_ttl() {
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        g.begin("a", at(100)).unwrap().commit(at(100));
        assert!(matches!(g.begin("a", at(159)), Err(Duplicate::Committed)));
        assert!(g.begin("a", at(160)).is_ok());
        assert!(g.begin("b", at(101)).is_ok());
    }

    #[test]
    fn in_flight_key_is_refused_then_released_on_drop() {
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        let r = g.begin("a", at(100)).unwrap();
        assert!(matches!(g.begin("a", at(100)), Err(Duplicate::InProgress)));
        drop(r);
        assert!(g.is_empty());
        let r = g.begin("a", at(101)).unwrap();
        r.commit(at(101));
        assert!(matches!(g.begin("a", at(102)), Err(Duplicate::Committed)));
    }

    #[test]
    fn restored_keys_are_duplicates_until_their_ttl() {
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        let r = g.begin("a", at(100)).unwrap();
        let hash = r.key_hash();
        r.commit(at(100));
        // A new process: the key comes back from the store.
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        g.restore(hash, at(100), at(120));
        assert!(matches!(g.begin("a", at(130)), Err(Duplicate::Committed)));
        assert!(g.begin("a", at(160)).is_ok());
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        g.restore(hash, at(100), at(200));
        assert!(g.is_empty(), "expired keys are not restored");
    }

    #[test]
    fn clock_going_backwards_is_still_duplicate() {
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        g.begin("a", at(100)).unwrap().commit(at(100));
        assert!(matches!(g.begin("a", at(50)), Err(Duplicate::Committed)));
    }

    #[test]
    fn capacity_evicts_oldest() {
        let g = ReplayGuard::new(2, Duration::from_secs(60));
        for k in ["a", "b", "c"] {
            g.begin(k, at(100)).unwrap().commit(at(100));
        }
        assert_eq!(g.len(), 2);
        assert!(g.begin("a", at(101)).is_ok(), "oldest evicted");
        assert!(matches!(g.begin("c", at(101)), Err(Duplicate::Committed)));
    }

    #[test]
    fn evicted_reservation_commits_and_does_not_remove_newer() {
        let g = ReplayGuard::new(1, Duration::from_secs(60));
        let r1 = g.begin("a", at(100)).unwrap();
        let r2 = g.begin("b", at(100)).unwrap(); // evicts "a"
        let r3 = g.begin("a", at(100)).unwrap(); // evicts "b"
        drop(r2); // "b" no longer present: nothing removed
        assert_eq!(g.len(), 1);
        drop(r1); // stale reservation of "a" must not release r3's entry
        assert!(matches!(g.begin("a", at(100)), Err(Duplicate::InProgress)));
        r3.commit(at(100));
        assert!(matches!(g.begin("a", at(100)), Err(Duplicate::Committed)));
    }

    #[test]
    fn commit_keeps_its_place_so_capacity_counts_deliveries() {
        let g = ReplayGuard::new(3, Duration::from_secs(60));
        for k in ["a", "b", "c"] {
            g.begin(k, at(100)).unwrap().commit(at(100));
        }
        for k in ["a", "b", "c"] {
            assert!(
                matches!(g.begin(k, at(101)), Err(Duplicate::Committed)),
                "{k}"
            );
        }
    }

    #[test]
    fn never_holds_more_than_capacity() {
        let g = ReplayGuard::new(7, Duration::from_secs(60));
        let mut held = Vec::new();
        for i in 0..500u64 {
            let key = format!("k{}", i % 11);
            if let Ok(r) = g.begin(&key, at(100 + i)) {
                match i % 3 {
                    0 => r.commit(at(100 + i)),
                    1 => held.push(r),
                    _ => drop(r),
                }
            }
            if i % 5 == 0 {
                if let Some(r) = held.pop() {
                    r.commit(at(100 + i));
                }
            }
            assert!(g.len() <= 7, "len {} at {i}", g.len());
        }
    }

    /// The ring-and-index shard against a plain model of the same rules (a map from key to
    /// its sequence number and state, evicting the key placed `capacity` insertions ago):
    /// 20,000 random begins, commits and drops over 40 keys and a capacity of 7 get the same
    /// answers from both, and the guard never holds more than its capacity.
    #[test]
    fn ring_and_index_answer_as_the_plain_model() {
        use std::collections::HashMap;
        const CAP: u64 = 7;
        let g = ReplayGuard::new(CAP as usize, Duration::from_secs(60));
        // key -> (seq, committed)
        let mut model: HashMap<u64, (u64, bool)> = HashMap::new();
        let mut order: Vec<u64> = Vec::new(); // seq -> key
        let mut held: Vec<(u64, u64, Reservation)> = Vec::new(); // key, seq, reservation
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let insert = |model: &mut HashMap<u64, (u64, bool)>, order: &mut Vec<u64>, key, done| {
            model.remove(&key);
            let seq = order.len() as u64;
            if seq >= CAP {
                let old = order[(seq - CAP) as usize];
                if model.get(&old).is_some_and(|e| e.0 == seq - CAP) {
                    model.remove(&old);
                }
            }
            order.push(key);
            model.insert(key, (seq, done));
            seq
        };
        for step in 0..20_000 {
            let r = next();
            let key = r % 40;
            match (r >> 8) % 3 {
                0 => {
                    let want = match model.get(&key) {
                        Some((_, false)) => Err(Duplicate::InProgress),
                        Some((_, true)) => Err(Duplicate::Committed),
                        None => Ok(()),
                    };
                    let got = g.begin(&format!("k{key}"), at(100));
                    assert_eq!(
                        got.as_ref().map(|_| ()).map_err(|e| *e),
                        want,
                        "step {step}"
                    );
                    if let Ok(res) = got {
                        let seq = insert(&mut model, &mut order, key, false);
                        held.push((key, seq, res));
                    }
                }
                1 if !held.is_empty() => {
                    let (key, seq, res) = held.swap_remove((r >> 16) as usize % held.len());
                    res.commit(at(100));
                    match model.get_mut(&key) {
                        Some(e) if e.0 == seq => e.1 = true,
                        _ => {
                            insert(&mut model, &mut order, key, true);
                        }
                    }
                }
                2 if !held.is_empty() => {
                    let (key, seq, res) = held.swap_remove((r >> 16) as usize % held.len());
                    drop(res);
                    if model.get(&key).is_some_and(|e| e.0 == seq) {
                        model.remove(&key);
                    }
                }
                _ => {}
            }
            assert_eq!(g.len(), model.len(), "step {step}");
            assert!(g.len() <= CAP as usize, "step {step}");
        }
    }

    #[test]
    fn long_keys_are_bounded() {
        let g = ReplayGuard::new(4, Duration::from_secs(60));
        let key = "x".repeat(1 << 20);
        g.begin(&key, at(1)).unwrap().commit(at(1));
        assert!(matches!(g.begin(&key, at(2)), Err(Duplicate::Committed)));
    }

    #[test]
    fn concurrent_begin_admits_one() {
        let g = ReplayGuard::new(16, Duration::from_secs(60));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let g = g.clone();
                    s.spawn(move || g.begin("same", at(1)).map(std::mem::forget).is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(admitted, 1);
    }

    #[test]
    fn body_keys_ignore_everything_but_scope_and_bytes() {
        let g = ReplayGuard::new(10, Duration::from_secs(60));
        g.begin(&body_key("github/deploy", b"{}"), at(1))
            .unwrap()
            .commit(at(1));
        assert!(matches!(
            g.begin(&body_key("github/deploy", b"{}"), at(2)),
            Err(Duplicate::Committed)
        ));
        assert!(g.begin(&body_key("github/deploy", b"{} "), at(2)).is_ok());
        assert!(g.begin(&body_key("gitlab", b"{}"), at(2)).is_ok());
    }

    #[track_caller]
    fn check(ts: i64, now: i64, expected: Result<(), Stale>) {
        assert_eq!(check_timestamp(ts, now, Duration::from_secs(300)), expected);
    }

    #[test]
    fn timestamp_window() {
        check(1000, 1000, Ok(()));
        check(700, 1000, Ok(()));
        check(699, 1000, Err(Stale::TooOld { age_secs: 301 }));
        check(1300, 1000, Ok(()));
        check(1301, 1000, Err(Stale::InFuture { ahead_secs: 301 }));
        check(
            i64::MIN,
            i64::MAX,
            Err(Stale::TooOld { age_secs: u64::MAX }),
        );
        check(
            i64::MAX,
            i64::MIN,
            Err(Stale::InFuture {
                ahead_secs: u64::MAX,
            }),
        );
    }
}

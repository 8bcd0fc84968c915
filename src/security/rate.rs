//! Per-rule, per-client rate limits, and the keyed buckets they and the authentication
//! throttle ([`super::throttle`]) are built from.
//!
//! Defends against floods of hook deliveries (and the Reactor runs they would trigger) from one
//! client. Each hook rule has its own table of buckets keyed only by the resolved client
//! address ([`ClientKeys`]), never by a header value an attacker could vary freely. An IPv4
//! address is one key (`/32`); an IPv6 address is keyed by its network prefix, `/64` by
//! default (`saltgate.rate_limit_ipv6_prefix`), because one host is routinely handed a whole
//! `/64` and could otherwise take a fresh bucket per address; an IPv4-mapped IPv6 address is
//! keyed as the IPv4 address it maps.
//!
//! The rate engine is the `governor` crate: each table is one keyed governor limiter, a GCRA
//! (the generic cell rate algorithm) with governor's [`Quota`] of `burst` cells refilled at
//! `per_second`. Its state store (`LruStore`) keeps one "theoretical arrival time" per key,
//! the whole state of that key's token bucket, in a bounded LRU table.
//!
//! Memory is bounded: each table holds at most `max_keys` keys, and when it is full the key
//! used least recently is evicted ([`super::lru`], O(1)), so a flood from more keys than that
//! never merges honest senders into a shared bucket. What remains: an attacker who controls
//! more than `max_keys` keys (that many IPv4 addresses, or IPv6 `/64`s, or addresses behind a
//! trusted proxy) can evict an honest sender's bucket, which resets it to full. That is
//! generous to the honest sender (it may send a fresh burst), never a starvation; the attacker
//! gains nothing over what its many keys already give it, one burst each. Housekeeping
//! ([`RateLimiter::housekeep`], on a timer) drops keys whose buckets are full again and gives
//! their memory back.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{NotUntil, Quota};

use super::lru::Lru;

/// Default cap on tracked keys per table.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Default IPv6 prefix length clients are keyed by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Tables at least this large are split into [`SHARDS`] independently locked shards.
const SHARD_THRESHOLD: usize = 16 * 1024;
const SHARDS: usize = 16;

/// A rule's quota: `per_second` requests replenished each second, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Sustained rate.
    pub per_second: NonZeroU32,
    /// Largest burst allowed after a quiet period.
    pub burst: NonZeroU32,
}

/// A refused request and how long until it would be allowed: the `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up, at least 1.
    pub fn as_header_secs(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// A monotonic time source: the time elapsed since the clock's own origin.
pub trait Clock: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Now, as time since the origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to (tests). Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(nanos(d), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a client is counted as: an IPv4 address, or an IPv6 network of the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (also an IPv4-mapped IPv6 one).
    V4(u32),
    /// An IPv6 address with the bits past the prefix cleared.
    V6(u128),
}

/// How client addresses become [`ClientKey`]s, and how many keys a table tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKeys {
    ipv6_prefix: u8,
    max_keys: usize,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::new(DEFAULT_IPV6_PREFIX)
    }
}

impl ClientKeys {
    /// IPv6 clients keyed by their first `ipv6_prefix` bits (clamped to 1..=128), tables of
    /// [`DEFAULT_MAX_KEYS`].
    pub fn new(ipv6_prefix: u8) -> Self {
        Self {
            ipv6_prefix: ipv6_prefix.clamp(1, 128),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// The same keying with tables of at most `max_keys` keys (at least 1).
    pub fn with_max_keys(self, max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            ..self
        }
    }

    /// The prefix length in use.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// Keys a table tracks at most.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The key `ip` is counted under.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                ClientKey::V6(u128::from(v6) & mask)
            }
        }
    }
}

/// A bucket's parameters: governor's [`Quota`], `burst` cells refilled one per interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    quota: Quota,
}

impl Gcra {
    /// A bucket of `burst` cells, one refilled every `interval` (at least 1 ns).
    pub fn new(interval: Duration, burst: NonZeroU32) -> Self {
        let interval = interval.max(Duration::from_nanos(1));
        // `with_period` is `None` only for a zero interval, excluded above.
        let quota = Quota::with_period(interval).unwrap_or(Quota::per_second(NonZeroU32::MAX));
        Self {
            quota: quota.allow_burst(burst),
        }
    }

    /// `quota.burst` cells refilled at `quota.per_second`.
    pub fn from_quota(quota: RateQuota) -> Self {
        Self {
            quota: Quota::per_second(quota.per_second).allow_burst(quota.burst),
        }
    }

    /// governor's emission interval: what one cell adds to a bucket's arrival time.
    fn interval(&self) -> Nanos {
        Nanos::new(nanos(self.quota.replenish_interval()).max(1))
    }
}

/// Our [`Clock`] as governor's clock: nanoseconds since the clock's origin.
#[derive(Debug, Clone)]
struct GovernorClock<C>(C);

impl<C: Clock> governor::clock::Clock for GovernorClock<C> {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(nanos(self.0.now()))
    }
}

/// What [`LruStore`] does with governor's decision about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Use {
    /// Store the new arrival time when governor allows the cell (governor's own `check`).
    Take,
    /// Store nothing, touch nothing: governor's answer as a question only.
    Peek,
    /// Like `Take`, but a refused cell is charged anyway (one more interval): for charging
    /// what already happened.
    Force,
}

/// The key governor sees: a client key and what to do with the answer. One limiter (so one
/// clock origin) serves checks, peeks and charges; the table itself is keyed by `key` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Probe {
    key: ClientKey,
    with: Use,
}

/// governor's state store for keyed limiters, held in bounded LRU tables (sharded when large):
/// each entry is one key's theoretical arrival time, relative to the limiter's start.
#[derive(Debug)]
struct LruStore {
    shards: Box<[Mutex<Lru<ClientKey, Nanos>>]>,
    hasher: RandomState,
    interval: Nanos,
}

impl LruStore {
    fn new(max_keys: usize, interval: Nanos) -> Self {
        let max_keys = max_keys.max(1);
        let shards = if max_keys >= SHARD_THRESHOLD {
            SHARDS
        } else {
            1
        };
        let per_shard = max_keys.div_ceil(shards);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(Lru::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            interval,
        }
    }

    fn shard(&self, key: &ClientKey) -> MutexGuard<'_, Lru<ClientKey, Nanos>> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(key) as usize) % self.shards.len()
        };
        lock(&self.shards[i])
    }
}

// A panic while holding the lock leaves the table consistent (no partial updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateStore for LruStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(&probe.key);
        if probe.with == Use::Peek {
            return f(shard.peek(&probe.key).copied()).map(|(out, _)| out);
        }
        // The lookup marks the key used, refused or not.
        if let Some(tat) = shard.get_mut(&probe.key) {
            return match f(Some(*tat)) {
                Ok((out, next)) => {
                    *tat = next;
                    Ok(out)
                }
                Err(refused) => {
                    if probe.with == Use::Force {
                        *tat = *tat + self.interval;
                    }
                    Err(refused)
                }
            };
        }
        // An unknown key has a full bucket: governor allows its first cell.
        let (out, next) = f(None)?;
        shard.get_or_insert(probe.key, || next);
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<Probe> for LruStore {
    fn retain_recent(&self, drop_below: Nanos) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, &tat| tat > drop_below);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(s).is_empty())
    }
}

/// A bounded table of GCRA buckets (governor's keyed [`governor::RateLimiter`]), one per
/// [`ClientKey`], evicting the least recently used key when full.
#[derive(Debug)]
pub struct Buckets<C: Clock = MonotonicClock> {
    limiter: governor::RateLimiter<Probe, LruStore, GovernorClock<C>, NoOpMiddleware<Nanos>>,
    burst: NonZeroU32,
}

impl<C: Clock> Buckets<C> {
    /// Buckets of `gcra` for at most `max_keys` keys (about: large tables are sharded, each
    /// shard holding its share rounded up).
    pub fn new(gcra: Gcra, max_keys: usize, clock: C) -> Self {
        let store = LruStore::new(max_keys, gcra.interval());
        Self {
            limiter: governor::RateLimiter::new(gcra.quota, store, GovernorClock(clock)),
            burst: gcra.quota.burst_size(),
        }
    }

    fn retry_after(&self, refused: &NotUntil<Nanos>) -> RetryAfter {
        RetryAfter(refused.wait_time_from(governor::clock::Clock::now(self.limiter.clock())))
    }

    /// Takes one cell from `key`'s bucket, or says how long until one is there (and takes
    /// nothing).
    pub fn check(&self, key: ClientKey) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(&Probe {
                key,
                with: Use::Take,
            })
            .map_err(|refused| self.retry_after(&refused))
    }

    /// Whether one cell could be taken now, taking nothing (and not counting as a use).
    pub fn peek(&self, key: ClientKey) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(&Probe {
                key,
                with: Use::Peek,
            })
            .map_err(|refused| self.retry_after(&refused))
    }

    /// Whether `key`'s bucket is full: nothing taken from it is still being refilled (a whole
    /// burst could be taken now).
    pub fn is_full(&self, key: ClientKey) -> bool {
        let probe = Probe {
            key,
            with: Use::Peek,
        };
        matches!(self.limiter.check_key_n(&probe, self.burst), Ok(Ok(())))
    }

    /// Takes one cell from `key`'s bucket even when it is empty (the arrival time moves on, so
    /// the wait grows): for charging what already happened.
    pub fn charge(&self, key: ClientKey) {
        let probe = Probe {
            key,
            with: Use::Force,
        };
        // Refused or not, the cell is charged.
        let _ = self.limiter.check_key(&probe);
    }

    /// Drops keys whose buckets have refilled (they would behave as new keys anyway).
    pub fn housekeep(&self) {
        self.limiter.retain_recent();
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// One bucket table per hook rule, indexed by the rule's position in the config. Each table is
/// shared (`Arc`), so that a reload can hand a rule's table to the new limiter
/// ([`RateLimiter::reloaded`]).
#[derive(Debug)]
pub struct RateLimiter<C: Clock = MonotonicClock> {
    rules: Vec<(RateQuota, Arc<Buckets<C>>)>,
    keys: ClientKeys,
    clock: C,
}

impl RateLimiter<MonotonicClock> {
    /// Limiters for `quotas` (rule `i` uses `quotas[i]`), keying clients by `keys` (at most
    /// `keys.max_keys()` per rule), on the real clock.
    pub fn new(quotas: &[RateQuota], keys: ClientKeys) -> Self {
        RateLimiter::with_clock(quotas, keys, MonotonicClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// Limiters for `quotas` on `clock` (tests pass a [`ManualClock`]).
    pub fn with_clock(quotas: &[RateQuota], keys: ClientKeys, clock: C) -> Self {
        let rules = quotas
            .iter()
            .map(|q| (*q, Self::table(*q, keys, &clock)))
            .collect();
        RateLimiter { rules, keys, clock }
    }

    fn table(quota: RateQuota, keys: ClientKeys, clock: &C) -> Arc<Buckets<C>> {
        Arc::new(Buckets::new(
            Gcra::from_quota(quota),
            keys.max_keys(),
            clock.clone(),
        ))
    }

    /// The limiter a reload builds: slot `i` gets `quotas[i].0`, and keeps the table of this
    /// limiter's slot `quotas[i].1` when that one has the same quota, so a sender's bucket
    /// survives the reload unless its rule's quota changed (a changed quota starts every
    /// sender with a full bucket of the new size). Keying is this limiter's.
    pub fn reloaded(&self, quotas: &[(RateQuota, Option<usize>)]) -> Self {
        let rules = quotas
            .iter()
            .map(|(quota, from)| {
                let kept = from
                    .and_then(|i| self.rules.get(i))
                    .filter(|(old, _)| old == quota)
                    .map(|(_, table)| Arc::clone(table));
                let table = kept.unwrap_or_else(|| Self::table(*quota, self.keys, &self.clock));
                (*quota, table)
            })
            .collect();
        RateLimiter {
            rules,
            keys: self.keys,
            clock: self.clock.clone(),
        }
    }

    /// Whether slot `slot` uses the same bucket table as `other`'s slot `other_slot` (tests of
    /// [`Self::reloaded`]).
    pub fn shares_table(&self, slot: usize, other: &Self, other_slot: usize) -> bool {
        match (self.rules.get(slot), other.rules.get(other_slot)) {
            (Some((_, a)), Some((_, b))) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Counts one request from `ip` against rule `rule`. A rule index without a quota is not
    /// limited.
    pub fn check(&self, rule: usize, ip: IpAddr) -> Result<(), RetryAfter> {
        match self.rules.get(rule) {
            Some((_, r)) => r.check(self.keys.key(ip)),
            None => Ok(()),
        }
    }

    /// Drops keys whose buckets have refilled and releases the memory. Call periodically, e.g.
    /// every minute.
    pub fn housekeep(&self) {
        for (_, r) in &self.rules {
            r.housekeep();
        }
    }

    /// Keys tracked for `rule`.
    pub fn tracked(&self, rule: usize) -> usize {
        self.rules.get(rule).map_or(0, |(_, r)| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_second: u32, burst: u32) -> RateQuota {
        RateQuota {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(quotas: &[RateQuota], max_keys: usize) -> (RateLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        let keys = ClientKeys::default().with_max_keys(max_keys);
        let l = RateLimiter::with_clock(quotas, keys, clock.clone());
        (l, clock)
    }

    #[test]
    fn burst_then_refused_with_retry_after() {
        let (l, clock) = limiter(&[quota(1, 3)], 10);
        for _ in 0..3 {
            assert!(l.check(0, ip("192.0.2.1")).is_ok());
        }
        let err = l.check(0, ip("192.0.2.1")).unwrap_err();
        assert_eq!(err, RetryAfter(Duration::from_secs(1)));
        assert_eq!(err.as_header_secs(), 1);
        // another client is unaffected
        assert!(l.check(0, ip("192.0.2.2")).is_ok());
        clock.advance(Duration::from_secs(1));
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(l.check(0, ip("192.0.2.1")).is_err());
    }

    #[test]
    fn sustained_rate_is_per_second() {
        let (l, clock) = limiter(&[quota(4, 1)], 10);
        let mut allowed = 0;
        for _ in 0..400 {
            if l.check(0, ip("192.0.2.1")).is_ok() {
                allowed += 1;
            }
            clock.advance(Duration::from_millis(10));
        }
        // 4 s at 4/s
        assert_eq!(allowed, 16);
    }

    #[test]
    fn rules_are_independent_and_unknown_rule_is_open() {
        let (l, _) = limiter(&[quota(1, 1), quota(1, 1)], 10);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(matches!(l.check(0, ip("192.0.2.1")), Err(RetryAfter(_))));
        assert!(l.check(1, ip("192.0.2.1")).is_ok());
        assert!(l.check(7, ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn mapped_address_shares_bucket() {
        let (l, _) = limiter(&[quota(1, 1)], 10);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(matches!(
            l.check(0, ip("::ffff:192.0.2.1")),
            Err(RetryAfter(_))
        ));
    }

    #[test]
    fn ipv6_is_keyed_by_its_slash_64() {
        let (l, _) = limiter(&[quota(1, 2)], 10);
        assert!(l.check(0, ip("2001:db8:1:2::1")).is_ok());
        assert!(l.check(0, ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_ok());
        // a third address in the same /64 shares the bucket
        assert!(l.check(0, ip("2001:db8:1:2:dead::beef")).is_err());
        assert_eq!(l.tracked(0), 1);
        // the next /64 is another client
        assert!(l.check(0, ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(l.tracked(0), 2);
    }

    #[test]
    fn ipv6_prefix_is_configurable_and_ipv4_stays_per_address() {
        let k = ClientKeys::new(48);
        assert_eq!(
            k.key(ip("2001:db8:1:2::1")),
            k.key(ip("2001:db8:1:ffff::9"))
        );
        assert_ne!(k.key(ip("2001:db8:1::1")), k.key(ip("2001:db8:2::1")));
        let k = ClientKeys::new(128);
        assert_ne!(k.key(ip("2001:db8::1")), k.key(ip("2001:db8::2")));
        // IPv4 is per /32 whatever the IPv6 prefix; mapped addresses are IPv4
        let k = ClientKeys::new(1);
        assert_ne!(k.key(ip("192.0.2.1")), k.key(ip("192.0.2.2")));
        assert_eq!(k.key(ip("::ffff:192.0.2.1")), k.key(ip("192.0.2.1")));
        assert_eq!(ClientKeys::new(0).ipv6_prefix(), 1);
        assert_eq!(ClientKeys::new(200).ipv6_prefix(), 128);
    }

    #[test]
    fn full_table_evicts_least_recently_used_not_a_shared_bucket() {
        let (l, _) = limiter(&[quota(1, 2)], 3);
        // the honest sender uses its burst
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(l.check(0, ip("192.0.2.1")).is_err());
        // a flood from many addresses: each gets its own bucket, the table stays at 3
        for i in 0..1000u32 {
            let flood = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.check(0, flood).is_ok());
            assert!(l.tracked(0) <= 3);
            // the most recent key is still limited: no collapse into an overflow bucket
            assert!(l.check(0, flood).is_ok());
            assert!(l.check(0, flood).is_err());
        }
        assert_eq!(l.tracked(0), 3);
        // the honest sender was evicted: its bucket reset to full (generous, not starved)
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_recently_used_key_survives_a_flood_smaller_than_the_table() {
        let (l, _) = limiter(&[quota(1, 1)], 100);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        for i in 0..50u32 {
            let flood = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(0, flood);
        }
        // still tracked, still limited
        assert!(l.check(0, ip("192.0.2.1")).is_err());
    }

    #[test]
    fn housekeep_frees_refilled_keys() {
        let (l, clock) = limiter(&[quota(1, 2)], 10);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(l.check(0, ip("192.0.2.2")).is_ok());
        assert_eq!(l.tracked(0), 2);
        l.housekeep();
        assert_eq!(l.tracked(0), 2);
        clock.advance(Duration::from_secs(10));
        l.housekeep();
        assert_eq!(l.tracked(0), 0);
        assert!(l.check(0, ip("192.0.2.5")).is_ok());
        assert_eq!(l.tracked(0), 1);
    }

    #[test]
    fn large_tables_are_sharded_and_bounded() {
        let clock = ManualClock::default();
        let b = Buckets::new(
            Gcra::new(Duration::from_secs(1), NonZeroU32::new(1).unwrap()),
            SHARD_THRESHOLD,
            clock,
        );
        for i in 0..(3 * SHARD_THRESHOLD as u32) {
            let _ = b.check(ClientKey::V4(i));
        }
        assert!(b.len() <= SHARD_THRESHOLD + SHARDS, "{}", b.len());
        assert!(b.len() >= SHARD_THRESHOLD * 3 / 4, "{}", b.len());
    }

    #[test]
    fn peek_and_charge_count_what_already_happened() {
        let clock = ManualClock::default();
        let b = Buckets::new(
            Gcra::new(Duration::from_secs(10), NonZeroU32::new(2).unwrap()),
            10,
            clock.clone(),
        );
        let k = ClientKey::V4(1);
        assert!(b.peek(k).is_ok());
        assert!(b.is_empty(), "peek stores nothing");
        assert!(b.is_full(k));
        b.charge(k);
        assert!(!b.is_full(k));
        assert!(b.peek(k).is_ok());
        b.charge(k);
        assert_eq!(b.peek(k), Err(RetryAfter(Duration::from_secs(10))));
        // charging past empty pushes the wait further out
        b.charge(k);
        assert_eq!(b.peek(k), Err(RetryAfter(Duration::from_secs(20))));
        clock.advance(Duration::from_secs(20));
        assert!(b.peek(k).is_ok());
    }

    #[test]
    fn a_reload_keeps_a_senders_bucket_unless_its_quota_changed() {
        let (old, clock) = limiter(&[quota(1, 2), quota(1, 2), quota(5, 5)], 10);
        let sender = ip("192.0.2.1");
        for slot in 0..2 {
            assert!(old.check(slot, sender).is_ok());
            assert!(old.check(slot, sender).is_ok());
            assert!(old.check(slot, sender).is_err());
        }
        // Slot 0 stays as it was (now at index 1), slot 1's quota changes, slot 2 is dropped,
        // and a new rule arrives.
        let new = old.reloaded(&[
            (quota(3, 3), None),
            (quota(1, 2), Some(0)),
            (quota(1, 3), Some(1)),
        ]);
        assert!(new.shares_table(1, &old, 0));
        assert!(!new.shares_table(2, &old, 1));
        // The unchanged rule: the sender's empty bucket came along.
        assert!(new.check(1, sender).is_err());
        // The changed quota: a full bucket of the new size.
        for _ in 0..3 {
            assert!(new.check(2, sender).is_ok());
        }
        assert!(new.check(2, sender).is_err());
        assert!(new.check(0, sender).is_ok());
        // Both limiters run on the same clock: the kept bucket refills as before.
        clock.advance(Duration::from_secs(1));
        assert!(new.check(1, sender).is_ok());
        assert!(new.check(1, sender).is_err());
        // Unknown previous slots start fresh.
        let fresh = old.reloaded(&[(quota(1, 2), Some(9))]);
        assert!(fresh.check(0, sender).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).as_header_secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).as_header_secs(), 2);
        assert_eq!(RetryAfter(Duration::ZERO).as_header_secs(), 1);
    }
}

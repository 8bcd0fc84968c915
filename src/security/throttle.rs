//! Throttling of credential guessing: failed logins and failed token checks, per client.
//!
//! Defends the master against password and token guessing through saltgate. Every `/login`,
//! `/token` or eauth credential sent to the master costs it an eauth check, and every unknown
//! token costs it a `get_token`; unthrottled, a handful of connections can keep the master's
//! request workers busy and slow every real login.
//!
//! - **Failures per client** ([`AuthThrottle::check`], [`AuthThrottle::failed`]): a GCRA bucket
//!   (governor's, see [`super::rate`]) of `failure_burst` failures per client key
//!   ([`ClientKeys`]: IPv4 address, IPv6 `/64`), refilled at `failures_per_minute`. A client
//!   whose bucket is empty is refused (429) before anything is sent to the master. Only failures
//!   are charged: a successful login or a valid token costs nothing, so honest clients are never
//!   slowed by their own successes. governor's `check` consumes a cell when it allows one, so
//!   the check before an attempt is governor's decision made without storing its result
//!   ([`Buckets::peek`]: nothing taken, the key not even inserted), and the charge after a
//!   failure takes the cell ([`Buckets::charge`]), even from an empty bucket: a failure that
//!   already happened (one of several in flight) still pushes the client's next attempt further
//!   out, where a plain `check` would refuse it and charge nothing. The check
//!   is made before the attempt and the charge after it, so concurrent attempts from one client
//!   may overshoot the burst by the number in flight; the caller re-checks once it holds its
//!   slot to the master, which bounds the overshoot by that (small) slot count.
//! - **Negative token answers** ([`AuthThrottle::known_bad`]): a token the master just said it
//!   does not know is remembered for `negative_ttl` (a few seconds), so repeating it costs the
//!   master nothing. Tokens are stored as SHA-256 digests, never in clear; the cache is an LRU
//!   of `negative_capacity` digests. The TTL is short so that a token issued later is not
//!   refused for long (a fresh login also clears its token from the cache).
//!
//! The key table is bounded and evicts the least recently used key ([`super::rate`]): a
//! client with more keys than the table holds can evict others' buckets, which resets them (that
//! helps the evicted client, it does not lock it out). What remains: a guesser with many
//! addresses gets `failure_burst` guesses per key and `failures_per_minute` after that.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::lru::Lru;
use super::rate::{Buckets, ClientKey, ClientKeys, Clock, Gcra, MonotonicClock, RetryAfter};

/// How often the failure table drops refilled keys (amortised over failures).
const HOUSEKEEP_EVERY: Duration = Duration::from_secs(60);

/// The throttle's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failed checks a client may make at once.
    pub failure_burst: NonZeroU32,
    /// Failed checks a client may make per minute after its burst.
    pub failures_per_minute: NonZeroU32,
    /// How addresses become client keys, and how many are tracked at most.
    pub keys: ClientKeys,
    /// How long a token the master did not know is answered from the cache.
    pub negative_ttl: Duration,
    /// Unknown tokens remembered at most.
    pub negative_capacity: usize,
}

/// Default failures allowed at once per client.
pub const DEFAULT_FAILURE_BURST: u32 = 10;
/// Default failures per minute per client after the burst.
pub const DEFAULT_FAILURES_PER_MINUTE: u32 = 6;
/// How long an unknown token is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3);
/// Unknown tokens remembered at most.
pub const NEGATIVE_CAPACITY: usize = 10_000;

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            failure_burst: NonZeroU32::new(DEFAULT_FAILURE_BURST).unwrap_or(NonZeroU32::MIN),
            failures_per_minute: NonZeroU32::new(DEFAULT_FAILURES_PER_MINUTE)
                .unwrap_or(NonZeroU32::MIN),
            keys: ClientKeys::default(),
            negative_ttl: NEGATIVE_TTL,
            negative_capacity: NEGATIVE_CAPACITY,
        }
    }
}

/// Per-client failure budgets and the cache of tokens the master did not know.
#[derive(Debug)]
pub struct AuthThrottle<C: Clock = MonotonicClock> {
    failures: Buckets<C>,
    keys: ClientKeys,
    negative: Mutex<Lru<[u8; 32], Duration>>,
    negative_ttl: Duration,
    clock: C,
    /// When the failure table was last housekept, in nanoseconds of `clock`.
    housekept: AtomicU64,
}

impl AuthThrottle<MonotonicClock> {
    /// A throttle on the real clock.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self::with_clock(settings, MonotonicClock::default())
    }
}

impl<C: Clock> AuthThrottle<C> {
    /// A throttle on `clock` (tests pass a [`super::rate::ManualClock`]).
    pub fn with_clock(settings: ThrottleSettings, clock: C) -> Self {
        let interval = Duration::from_secs(60) / settings.failures_per_minute.get();
        Self {
            failures: Buckets::new(
                Gcra::new(interval, settings.failure_burst),
                settings.keys.max_keys(),
                clock.clone(),
            ),
            keys: settings.keys,
            negative: Mutex::new(Lru::new(settings.negative_capacity)),
            negative_ttl: settings.negative_ttl,
            clock,
            housekept: AtomicU64::new(0),
        }
    }

    /// Whether `client` may make one more credential check now; if not, when it may.
    pub fn check(&self, client: IpAddr) -> Result<(), RetryAfter> {
        self.failures.peek(self.keys.key(client))
    }

    /// The key `client` is counted under.
    pub fn key(&self, client: IpAddr) -> ClientKey {
        self.keys.key(client)
    }

    /// Whether `client` has no recent failure (its budget is full).
    pub fn clean(&self, client: IpAddr) -> bool {
        self.failures.is_full(self.keys.key(client))
    }

    /// Counts one failed check (wrong password, unknown token) against `client`.
    pub fn failed(&self, client: IpAddr) {
        self.failures.charge(self.keys.key(client));
        self.maybe_housekeep();
    }

    /// Whether the master said `token` was unknown within the last `negative_ttl`.
    pub fn known_bad(&self, token: &str) -> bool {
        let digest = digest(token);
        let now = self.clock.now();
        let mut cache = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        let until = cache.peek(&digest).copied();
        match until {
            Some(until) if until > now => true,
            Some(_) => {
                cache.remove(&digest);
                false
            }
            None => false,
        }
    }

    /// Remembers that the master does not know `token`.
    pub fn remember_bad(&self, token: &str) {
        let until = self.clock.now() + self.negative_ttl;
        self.negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest(token), until);
    }

    /// Forgets a negative answer for `token` (it was just issued or found valid).
    pub fn forget_bad(&self, token: &str) {
        self.negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(token));
    }

    /// Client keys with a failure budget in use.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }

    /// Unknown tokens remembered (expired ones included until they are looked up or evicted).
    pub fn remembered(&self) -> usize {
        self.negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn maybe_housekeep(&self) {
        let now = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
        let last = self.housekept.load(Ordering::Relaxed);
        let every = u64::try_from(HOUSEKEEP_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .housekept
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.failures.housekeep();
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::super::rate::ManualClock;
    use super::*;

    fn throttle(burst: u32, per_minute: u32) -> (AuthThrottle<ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        let settings = ThrottleSettings {
            failure_burst: NonZeroU32::new(burst).unwrap(),
            failures_per_minute: NonZeroU32::new(per_minute).unwrap(),
            ..ThrottleSettings::default()
        };
        (AuthThrottle::with_clock(settings, clock.clone()), clock)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_exhaust_the_burst_then_refill() {
        let (t, clock) = throttle(3, 6);
        let a = ip("192.0.2.1");
        assert!(t.clean(a));
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            t.failed(a);
            assert!(!t.clean(a));
        }
        let wait = t.check(a).unwrap_err();
        assert_eq!(wait, RetryAfter(Duration::from_secs(10)));
        // another client is unaffected
        assert!(t.check(ip("192.0.2.2")).is_ok());
        clock.advance(Duration::from_secs(10));
        assert!(t.check(a).is_ok());
        t.failed(a);
        assert!(t.check(a).is_err());
    }

    #[test]
    fn successes_are_never_charged() {
        let (t, _) = throttle(1, 1);
        let a = ip("192.0.2.1");
        for _ in 0..1000 {
            // a success is a check with no failure after it
            assert!(t.check(a).is_ok());
        }
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn ipv6_guesses_from_one_slash_64_share_a_budget() {
        let (t, _) = throttle(2, 1);
        t.failed(ip("2001:db8:0:1::1"));
        t.failed(ip("2001:db8:0:1::2"));
        assert!(t.check(ip("2001:db8:0:1:abcd::3")).is_err());
        assert!(t.check(ip("2001:db8:0:2::1")).is_ok());
    }

    #[test]
    fn negative_answers_expire_and_are_stored_hashed() {
        let (t, clock) = throttle(1, 1);
        let token = "0123456789abcdef0123456789abcdef";
        assert!(!t.known_bad(token));
        t.remember_bad(token);
        assert!(t.known_bad(token));
        assert!(!t.known_bad("fedcba"));
        {
            let cache = t.negative.lock().unwrap();
            assert!(cache.peek(&digest(token)).is_some());
            let stored = format!("{:?}", cache.keys_by_recency());
            assert!(!stored.contains("0123456789abcdef"), "{stored}");
        }
        clock.advance(NEGATIVE_TTL);
        assert!(!t.known_bad(token));
        assert_eq!(t.remembered(), 0);
        t.remember_bad(token);
        t.forget_bad(token);
        assert!(!t.known_bad(token));
    }

    #[test]
    fn negative_cache_is_bounded() {
        let clock = ManualClock::default();
        let t = AuthThrottle::with_clock(
            ThrottleSettings {
                negative_capacity: 100,
                ..ThrottleSettings::default()
            },
            clock,
        );
        for i in 0..10_000 {
            t.remember_bad(&format!("{i:x}"));
        }
        assert_eq!(t.remembered(), 100);
        assert!(t.known_bad(&format!("{:x}", 9_999)));
        assert!(!t.known_bad("0"));
    }

    #[test]
    fn failure_table_is_bounded_and_housekept() {
        let clock = ManualClock::default();
        let t = AuthThrottle::with_clock(
            ThrottleSettings {
                keys: ClientKeys::default().with_max_keys(50),
                ..ThrottleSettings::default()
            },
            clock.clone(),
        );
        for i in 0..1000u32 {
            t.failed(IpAddr::from(std::net::Ipv4Addr::from(i)));
        }
        assert_eq!(t.tracked(), 50);
        clock.advance(Duration::from_secs(3600));
        t.failed(ip("192.0.2.1"));
        assert_eq!(t.tracked(), 1);
    }
}

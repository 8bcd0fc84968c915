//! Per-rule, per-client rate limits.
//!
//! Defends against floods of hook deliveries (and the Reactor runs they would trigger) from one
//! address. Each hook rule has its own governor keyed limiter, keyed only by the resolved client
//! [`IpAddr`], never by a header value an attacker could vary freely.
//!
//! Memory is bounded twice: the server calls [`RateLimiter::housekeep`] on a timer, which drops
//! keys whose buckets are full again (`retain_recent`), and each rule tracks at most `max_keys`
//! addresses. At the cap the rule stops keying: every request on it, from any address, is
//! charged to one shared overflow bucket with the rule's quota, and nothing new is stored,
//! until housekeeping frees room. Memory stays bounded and the rule stays limited; the price
//! is that during a flood from more than `max_keys` addresses all clients of that rule are
//! limited together (fail closed rather than grow without bound). The cap is approximate
//! under concurrency: it may be exceeded by the number of requests racing at that moment.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};

/// Default cap on tracked addresses per rule.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A rule's quota: `per_second` requests replenished each second, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Sustained rate.
    pub per_second: NonZeroU32,
    /// Largest burst allowed after a quiet period.
    pub burst: NonZeroU32,
}

impl RateQuota {
    fn to_governor(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
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

type Keyed<C> = governor::RateLimiter<
    IpAddr,
    DashMapStateStore<IpAddr>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;
type Direct<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

#[derive(Debug)]
struct Rule<C: Clock> {
    keyed: Keyed<C>,
    overflow: Direct<C>,
}

/// One keyed limiter per hook rule, indexed by the rule's position in the config.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    rules: Vec<Rule<C>>,
    clock: C,
    max_keys: usize,
}

impl RateLimiter<DefaultClock> {
    /// Limiters for `quotas` (rule `i` uses `quotas[i]`), on the default clock, with
    /// [`DEFAULT_MAX_KEYS`] addresses per rule.
    pub fn new(quotas: &[RateQuota]) -> Self {
        RateLimiter::with_clock(quotas, DEFAULT_MAX_KEYS, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Limiters for `quotas` on `clock` (tests pass governor's `FakeRelativeClock`), holding at
    /// most `max_keys` addresses per rule (at least 1).
    pub fn with_clock(quotas: &[RateQuota], max_keys: usize, clock: C) -> Self {
        let rules = quotas
            .iter()
            .map(|q| Rule {
                keyed: governor::RateLimiter::dashmap_with_clock(q.to_governor(), clock.clone()),
                overflow: governor::RateLimiter::direct_with_clock(q.to_governor(), clock.clone()),
            })
            .collect();
        RateLimiter {
            rules,
            clock,
            max_keys: max_keys.max(1),
        }
    }

    /// Counts one request from `ip` against rule `rule`. A rule index without a quota is not
    /// limited. IPv4-mapped addresses share the IPv4 address's bucket.
    pub fn check(&self, rule: usize, ip: IpAddr) -> Result<(), RetryAfter> {
        let Some(r) = self.rules.get(rule) else {
            return Ok(());
        };
        let ip = ip.to_canonical();
        let outcome = if r.keyed.len() >= self.max_keys {
            // Full: the shared overflow bucket only, so the key set cannot grow.
            r.overflow.check()
        } else {
            r.keyed.check_key(&ip)
        };
        outcome.map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// Drops addresses whose buckets have refilled (they would behave as new keys anyway) and
    /// releases the memory. Call periodically, e.g. every minute.
    pub fn housekeep(&self) {
        for r in &self.rules {
            r.keyed.retain_recent();
            r.keyed.shrink_to_fit();
        }
    }

    /// Addresses tracked for `rule`.
    pub fn tracked(&self, rule: usize) -> usize {
        self.rules.get(rule).map_or(0, |r| r.keyed.len())
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

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

    #[test]
    fn burst_then_refused_with_retry_after() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(&[quota(1, 3)], 10, clock.clone());
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
    }

    #[test]
    fn rules_are_independent_and_unknown_rule_is_open() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(&[quota(1, 1), quota(1, 1)], 10, clock);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(matches!(l.check(0, ip("192.0.2.1")), Err(RetryAfter(_))));
        assert!(l.check(1, ip("192.0.2.1")).is_ok());
        assert!(l.check(7, ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn mapped_address_shares_bucket() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(&[quota(1, 1)], 10, clock);
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(matches!(
            l.check(0, ip("::ffff:192.0.2.1")),
            Err(RetryAfter(_))
        ));
    }

    #[test]
    fn key_cap_uses_overflow_bucket_and_housekeep_frees() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(&[quota(1, 2)], 2, clock.clone());
        assert!(l.check(0, ip("192.0.2.1")).is_ok());
        assert!(l.check(0, ip("192.0.2.2")).is_ok());
        assert_eq!(l.tracked(0), 2);
        // at the cap: every request shares one overflow bucket of burst 2; nothing new is tracked
        assert!(l.check(0, ip("192.0.2.3")).is_ok());
        assert!(l.check(0, ip("192.0.2.4")).is_ok());
        assert!(matches!(l.check(0, ip("192.0.2.5")), Err(RetryAfter(_))));
        assert_eq!(l.tracked(0), 2);
        clock.advance(Duration::from_secs(10));
        l.housekeep();
        assert_eq!(l.tracked(0), 0);
        assert!(l.check(0, ip("192.0.2.5")).is_ok());
        assert_eq!(l.tracked(0), 1);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).as_header_secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).as_header_secs(), 2);
        assert_eq!(RetryAfter(Duration::ZERO).as_header_secs(), 1);
    }
}

//! Security controls: pure checks over bytes, headers and addresses.
//!
//! Everything here defends the hook and API endpoints against untrusted input: forged
//! client addresses, unsigned or replayed deliveries, floods and credential leaks into the
//! event bus or logs. Body size and parser bounds live where the bytes are read
//! (`api::body::read_capped`, `api::body`), so there is one implementation of each. Each
//! check is a plain function or a small type over `&[u8]`, [`http::HeaderMap`] and
//! [`std::net::IpAddr`]; time is always passed in (`now`), never read inside a check, so every
//! control is deterministic under test.
//!
//! This module must never import axum, `crate::api`, `crate::config` or `crate::salt`: it is a
//! leaf so it can be fuzzed, benched and reused.

pub mod acl;
pub mod allowlist;
pub mod client_ip;
pub mod lru;
pub mod rate;
pub mod redact;
pub mod replay;
pub mod secret;
pub mod signature;
pub mod throttle;

pub use allowlist::AllowList;
pub use rate::{ClientKeys, RateLimiter, RateQuota, RetryAfter};
pub use replay::{Duplicate, ReplayGuard, Reservation, Stale};
pub use secret::{EmptySecret, NoSecrets, Secret, SecretSet};
pub use signature::{SignError, Verified, Verifier, VerifyError};
pub use throttle::AuthThrottle;

#[cfg(test)]
mod tests {
    fn shared_across_tasks<T: Send + Sync + 'static>() {}

    #[test]
    fn controls_are_send_and_sync() {
        shared_across_tasks::<super::RateLimiter>();
        shared_across_tasks::<super::AuthThrottle>();
        shared_across_tasks::<super::ReplayGuard>();
        shared_across_tasks::<super::Reservation>();
        shared_across_tasks::<super::Verifier>();
        shared_across_tasks::<super::AllowList>();
        shared_across_tasks::<super::SecretSet>();
    }

    #[test]
    fn default_clock_limiter_works() {
        let q = super::RateQuota {
            per_second: std::num::NonZeroU32::MIN,
            burst: std::num::NonZeroU32::MIN,
        };
        let l = super::RateLimiter::new(&[q], super::ClientKeys::default());
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        assert!(l.check(0, ip).is_ok());
        assert!(l.check(0, ip).is_err());
    }
}

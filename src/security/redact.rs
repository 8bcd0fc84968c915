//! Headers that carry credentials and are stripped from events and logs.
//!
//! Defends against credential leaks: anything on the Salt event bus is readable by every
//! `/events` subscriber and every Reactor, and log lines travel further still. Session tokens,
//! cookies and authorization headers are always stripped; a hook rule adds its verifier's
//! signature or token headers (`Verifier::credential_headers`).

use http::HeaderName;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};

/// `X-Auth-Token`: salt-api's session token header.
pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// Header names stripped from every event and log line, whatever the rule says.
pub const ALWAYS_REDACTED: [HeaderName; 5] = [
    X_AUTH_TOKEN,
    COOKIE,
    AUTHORIZATION,
    PROXY_AUTHORIZATION,
    SET_COOKIE,
];

/// Whether `name` must be stripped: one of [`ALWAYS_REDACTED`] or one of `extra` (the rule's
/// credential headers). Header names are compared case-insensitively, as `HeaderName` is
/// lower-case.
pub fn is_sensitive(name: &HeaderName, extra: &[HeaderName]) -> bool {
    ALWAYS_REDACTED.contains(name) || extra.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(name: &str, expected: bool) {
        let extra = [HeaderName::from_static("x-hub-signature-256")];
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        assert_eq!(is_sensitive(&name, &extra), expected, "{name}");
    }

    #[test]
    fn table() {
        check("X-Auth-Token", true);
        check("cookie", true);
        check("Authorization", true);
        check("proxy-authorization", true);
        check("Set-Cookie", true);
        check("X-Hub-Signature-256", true);
        check("X-GitHub-Event", false);
        check("content-type", false);
    }
}

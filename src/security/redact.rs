//! Headers that carry credentials and are stripped from events and logs.
//!
//! Defends against credential leaks: anything on the Salt event bus is readable by every
//! `/events` subscriber and every Reactor, and log lines travel further still. Session tokens,
//! cookies and authorization headers are always stripped; a hook rule adds its verifier's
//! signature or token headers (`Verifier::credential_headers`).

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName};

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

/// Removes every sensitive header (see [`is_sensitive`]) from `headers`.
pub fn strip(headers: &mut HeaderMap, extra: &[HeaderName]) {
    for name in ALWAYS_REDACTED.iter().chain(extra) {
        headers.remove(name);
    }
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

    #[test]
    fn strip_removes_all_values() {
        let mut map = HeaderMap::new();
        map.append(COOKIE, "a=1".parse().unwrap());
        map.append(COOKIE, "b=2".parse().unwrap());
        map.append(X_AUTH_TOKEN, "t".parse().unwrap());
        map.append("x-hub-signature-256", "sha256=00".parse().unwrap());
        map.append("x-github-event", "push".parse().unwrap());
        strip(&mut map, &[HeaderName::from_static("x-hub-signature-256")]);
        let left: Vec<_> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-github-event"]);
    }
}

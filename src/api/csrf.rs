//! Cross-site request forgery: unsafe methods that a browser authenticates on its own.
//!
//! The `session_id` cookie is `SameSite=Strict`, which keeps it off requests started by other
//! *sites*, but not off requests from the same site: a sibling subdomain, another port of this
//! host, or an injected script on any of them can post a form to `POST /` and run commands with
//! the victim's session. So, as well as the cookie attribute:
//!
//! - a `POST`/`PUT`/`PATCH`/`DELETE` that carries a `session_id` cookie and no `X-Auth-Token`
//!   header (the route would authenticate it by the cookie) must come from this server's own
//!   origin;
//! - so must every `POST /login`, cookie or not: a forged login would sign the victim in as the
//!   attacker (login CSRF).
//!
//! "Own origin" means: `Sec-Fetch-Site` is `same-origin` or `none`, or `Origin` names the
//! request's own host (the `Host` header, or the authority of an HTTP/2 request). Origins listed
//! in `rest_cherrypy: cors_origin` are not exempt: CORS never grants them credentials, so they
//! have no business sending the cookie. A request carrying a header a cross-site form cannot
//! send (`X-Auth-Token`, `X-Requested-With`; a cross-origin script needs a CORS preflight for it,
//! which only `cors_origin` can grant) passes, and so does a request with neither `Origin` nor
//! `Sec-Fetch-Site`: browsers send one of them on every cross-origin `POST`, so such a request
//! is a script or a tool, which holds the cookie only if its user gave it. Token-in-header
//! clients (salt-pepper, scripts) are unaffected.
//!
//! A refusal is 403 `cross_origin` in the negotiated format, before the body is read. rest_cherrypy
//! has no such check (it even echoes any `Origin` with credentials, API.md §14.2).

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};

use super::error::ApiError;

/// The refusal of a cross-origin unsafe request that a browser authenticated by itself, or
/// `None` for a request that may go on. [`super::frame`] checks every request with it.
pub fn refusal(request: &Request) -> Option<Response> {
    let login = request.uri().path().trim_end_matches('/') == "/login";
    if needs_check(request.method(), request.headers(), login)
        && !same_origin(request.headers(), request.uri())
    {
        let origin = request
            .headers()
            .get(http::header::ORIGIN)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        tracing::info!(
            path = %request.uri().path(),
            origin = origin.as_deref().unwrap_or("-"),
            status = 403,
            code = "cross_origin",
            "Cross-origin request refused"
        );
        return Some(ApiError::CrossOrigin.into_response());
    }
    None
}

/// Whether a browser could have sent this request with ambient credentials that the route would
/// accept: an unsafe method, no header a form cannot set, and the session cookie (or `/login`).
pub fn needs_check(method: &Method, headers: &HeaderMap, login: bool) -> bool {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return false;
    }
    let has = |name: &str| {
        headers
            .get(name)
            .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
    };
    if has("x-auth-token") || has("x-requested-with") {
        return false;
    }
    // With no `X-Auth-Token`, the token the routes would use is the cookie's.
    login || super::auth::session_token(headers).is_some()
}

/// Whether the browser's own signals say the request comes from this origin. No signal at all:
/// not a browser's cross-origin request.
pub fn same_origin(headers: &HeaderMap, uri: &http::Uri) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if matches!(fetch_site, Some("same-origin" | "none")) {
        return true;
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return fetch_site.is_none();
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim();
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null` (sandboxed frames, file: pages) and anything malformed
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str));
    let Some(host) = host else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let norm = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_owned(),
            None => a,
        }
    };
    norm(authority) == norm(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn only_unsafe_cookie_or_login_requests_are_checked() {
        let cookie = ("cookie", "a=1; session_id=abc");
        assert!(needs_check(&Method::POST, &h(&[cookie]), false));
        assert!(needs_check(&Method::DELETE, &h(&[cookie]), false));
        assert!(!needs_check(&Method::GET, &h(&[cookie]), false));
        assert!(!needs_check(&Method::POST, &h(&[]), false));
        assert!(needs_check(&Method::POST, &h(&[]), true));
        assert!(!needs_check(
            &Method::POST,
            &h(&[cookie, ("x-auth-token", "ab")]),
            false
        ));
        assert!(!needs_check(
            &Method::POST,
            &h(&[cookie, ("x-requested-with", "XMLHttpRequest")]),
            false
        ));
        assert!(needs_check(
            &Method::POST,
            &h(&[cookie, ("x-auth-token", " ")]),
            false
        ));
        assert!(!needs_check(
            &Method::POST,
            &h(&[("cookie", "session_id=")]),
            false
        ));
    }

    #[test]
    fn origin_rules() {
        let uri: http::Uri = "/".parse().unwrap();
        let ok = |pairs: &[(&str, &str)]| same_origin(&h(pairs), &uri);
        assert!(ok(&[]), "no browser signal: a tool");
        assert!(ok(&[("origin", "http://salt:8000"), ("host", "salt:8000")]));
        assert!(ok(&[
            ("origin", "https://Salt.example"),
            ("host", "salt.example:443")
        ]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("host", "salt.example")
        ]));
        assert!(!ok(&[
            ("origin", "http://salt:8001"),
            ("host", "salt:8000")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "salt")]));
        assert!(!ok(&[("origin", "http://salt")]), "no host to compare");
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(
            ok(&[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://public.example"),
                ("host", "127.0.0.1:8000"),
            ]),
            "behind a proxy that rewrites Host"
        );
        let h2: http::Uri = "https://salt.example/".parse().unwrap();
        assert!(same_origin(&h(&[("origin", "https://salt.example")]), &h2));
    }
}

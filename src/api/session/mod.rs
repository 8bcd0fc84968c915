//! `/login`, `/logout`, `/token`: Salt eauth sessions.
//!
//! `POST /login` sends the credentials to the master (`mk_token` on the clear channel) and
//! answers rest_cherrypy's body `{"return": [{token, expire, start, user, eauth, perms}]}` with
//! `X-Auth-Token` and a `session_id` cookie.
//!
//! Differences from rest_cherrypy, on purpose:
//! - the session *is* the Salt token (as rest_tornado): no server-side session store to lose on
//!   restart or to fixate (rest_cherrypy keeps a client-chosen session id, API.md §14.3), and
//!   several saltgate processes can serve one client;
//! - the cookie is `HttpOnly; SameSite=Strict` (and `Secure` under TLS), lives as long as the
//!   token, and is sent only by `/login` and `/logout`; a request it authenticates, and every
//!   `POST /login`, must come from this server's own origin ([`crate::api::csrf`]; rest_cherrypy
//!   has no such check);
//! - missing or malformed credentials are 400 (rest_cherrypy: 500);
//! - `perms` are read from saltgate's copy of the master's `external_auth`: the user's entries,
//!   `*`'s, and `<group>%`'s for the groups the master put in the token (backends with groups,
//!   such as `pam`); the master enforces them either way;
//! - `POST /token` mints tokens with `mk_token` directly, so it needs no runner rights on
//!   `auth.mk_token` (rest_cherrypy runs that runner); the user gets nothing `/login` would not
//!   give them;
//! - failed logins are counted per client address and a client over its budget is refused
//!   with 429 and `Retry-After` before the master is asked (see
//!   [`crate::api::tokens::TokenCache`]); a successful login costs nothing there.
//!
//! `POST /logout` revokes the token the way rest_cherrypy does (`LoadAuth.rm_token`): by
//! removing it from the master's file token store, `<cachedir>/tokens/<token>` (3006, 3007) or
//! `<cachedir>/tokens/<token>.p` (3008's `salt.cache`), which
//! needs saltgate to run on the master's host with access to that directory. The clear channel
//! has no command for it. Other token stores (`eauth_tokens: redis`, ...) are not cleared: the
//! token then stays valid until it expires, and saltgate only forgets it in its cache. Either
//! way the cookie is expired.

mod perms;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::api::auth::Caller;
use crate::api::body::{parse_async, read_capped};
use crate::api::error::ApiError;
use crate::api::negotiate::{Format, Negotiated, render_body};
use crate::api::state::App;
use crate::api::tokens::{AuthError, remove_token, unix_now};
use crate::config::Config;
use crate::salt::SaltError;
use crate::salt::channel::Token;

pub use perms::perms;

const CREDS_NEEDED: &str = r#"Require "username", "password", and "eauth" params"#;

/// `GET /login`: explains how to log in.
pub async fn login_info(Negotiated(format): Negotiated) -> Response {
    let mut r = render_body(
        StatusCode::OK,
        format,
        &json!({"status": null, "return": "Please log in"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Session"),
    );
    r
}

/// How a dialect's `POST /login` reads its body.
#[derive(Debug, Clone, Copy)]
pub struct LoginRules {
    /// The body cap, in bytes.
    pub body_cap: u64,
    /// A credentials map missing a field is 400 (rest_tornado), not 401 (rest_cherrypy).
    pub incomplete_is_bad_request: bool,
}

/// `POST /login`.
pub async fn login(
    State(app): State<Arc<App>>,
    Negotiated(format): Negotiated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rules = LoginRules {
        body_cap: app.config.api.max_request_body_size,
        incomplete_is_bad_request: false,
    };
    login_answer(&app, format, &headers, body, rules).await
}

/// The answer to `POST /login` under `rules`: the token, its cookie and `X-Auth-Token`.
pub async fn login_answer(
    app: &App,
    format: Format,
    headers: &HeaderMap,
    body: Body,
    rules: LoginRules,
) -> Result<Response, ApiError> {
    let token = do_login(app, headers, body, rules).await?;
    let body = json!({"return": [{
        "token": token.token,
        "expire": token.expire,
        "start": token.start,
        "user": token.name,
        "eauth": token.eauth,
        "perms": perms(&app.config, &token.eauth, &token.name, &token.groups),
    }]});
    let mut r = render_body(StatusCode::OK, format, &body);
    if let Ok(v) = HeaderValue::from_str(&token.token) {
        r.headers_mut().insert("x-auth-token", v);
    }
    let max_age = (token.expire - unix_now()).max(0.0) as u64;
    let cookie = cookie(&app.config, &token.token, max_age);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(r)
}

async fn do_login(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    rules: LoginRules,
) -> Result<Token, ApiError> {
    let raw = read_capped(headers, body, rules.body_cap).await?;
    let creds = match parse_async(headers, &raw).await? {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let (eauth, username, password) = match credentials(&creds) {
        Ok(c) => c,
        // A credentials map that lacks a field is refused as rest_cherrypy refuses it (401, the
        // master's eauth finds nobody to authenticate); an empty or non-map body stays 400.
        Err(_) if !raw.is_empty() && creds.is_object() && !rules.incomplete_is_bad_request => {
            tracing::info!("Login refused: incomplete credentials");
            return Err(ApiError::Unauthorized(
                "Could not authenticate using provided credentials",
            ));
        }
        Err(e) => return Err(e),
    };
    let salt = app.master()?;
    match app.tokens.login(salt, &eauth, &username, &password).await {
        Ok(t) => {
            tracing::info!(user = %t.name, eauth = %t.eauth, "Login");
            Ok(t)
        }
        Err(e) => Err(refusal(e, &eauth, &username)),
    }
}

/// The answer to a failed `mk_token`: 401 for refused credentials (logged without the
/// password), 429 for a throttled client, the master's failure otherwise.
fn refusal(e: AuthError, eauth: &str, username: &str) -> ApiError {
    match e {
        AuthError::Salt(SaltError::AuthRefused(_) | SaltError::Master(_)) => {
            tracing::info!(user = %username, eauth = %eauth, "Login refused");
            ApiError::Unauthorized("Could not authenticate using provided credentials")
        }
        other => other.into(),
    }
}

fn credentials(creds: &Value) -> Result<(String, String, String), ApiError> {
    let field = |k: &str| -> Result<String, ApiError> {
        match creds.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(ApiError::BadLowstate(CREDS_NEEDED.into())),
        }
    };
    Ok((field("eauth")?, field("username")?, field("password")?))
}

/// The session cookie: the Salt token, never readable by scripts nor sent cross-site.
fn cookie(config: &Config, token: &str, max_age: u64) -> String {
    let secure = if tls(config) { "; Secure" } else { "" };
    format!("session_id={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

fn tls(config: &Config) -> bool {
    !config.api.disable_ssl && config.api.ssl_crt.is_some()
}

/// `POST /logout`.
pub async fn logout(
    State(app): State<Arc<App>>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.confirm(app.master()?).await?;
    let token = caller.token();
    app.tokens.forget(token);
    remove_token(&app.config, token);
    let mut r = render_body(
        StatusCode::OK,
        format,
        &json!({"return": "Your token has been cleared"}),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie(&app.config, "", 0)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(r)
}

/// `POST /token`: a bare list of new tokens, one per credentials map.
pub async fn token(
    State(app): State<Arc<App>>,
    Negotiated(format): Negotiated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = do_token(&app, &headers, body).await?;
    Ok(render_body(StatusCode::OK, format, &v))
}

async fn do_token(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let raw = read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let list = match parse_async(headers, &raw).await? {
        Value::Array(items) => items,
        one => vec![one],
    };
    let creds: Vec<(String, String, String)> =
        list.iter().map(credentials).collect::<Result<_, _>>()?;
    let salt = app.master()?;
    let mut out = Vec::with_capacity(creds.len());
    for (eauth, username, password) in creds {
        let t = app
            .tokens
            .login(salt, &eauth, &username, &password)
            .await
            .map_err(|e| refusal(e, &eauth, &username))?;
        out.push(json!({
            "start": t.start, "expire": t.expire, "name": t.name, "eauth": t.eauth, "token": t.token,
        }));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_locked_down() {
        let mut c = Config::builtin();
        let v = cookie(&c, "abc", 10);
        assert_eq!(
            v,
            "session_id=abc; Max-Age=10; Path=/; HttpOnly; SameSite=Strict"
        );
        c.api.ssl_crt = Some("/x".into());
        assert!(cookie(&c, "abc", 10).ends_with("; Secure"));
    }
}

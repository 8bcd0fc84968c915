//! The caller of a request, as one extractor every authenticated route takes: [`Caller`], the
//! Salt token the request presents, checked for shape; the master is asked about it when the
//! route's order of checks comes to it ([`Caller::confirm`], [`authorize_stream`]), so a
//! malformed request is still refused for what is wrong with it before the master is bothered.
//!
//! Where the token comes from, as salt-api: the `X-Auth-Token` header, else the `session_id`
//! cookie; on the stream routes whose path carries it (`/ws/<token>`, rest_tornado's
//! `/all_events/<token>` and `/formatted_events/<token>`), the path.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::request::Parts;

use super::error::ApiError;
use super::state::App;
use super::tokens::{NO_PERMISSION, checked_token};
use crate::salt::SaltClients;
use crate::salt::channel::Token;

/// The session token: the `X-Auth-Token` header, else the `session_id` cookie (as salt-api).
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "session_id")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The rejection of [`Caller`]: 401 `unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No token at all.
    Missing,
    /// A token that is not a Salt token (hex), refused without asking the master.
    Malformed,
}

impl From<Unauthenticated> for ApiError {
    fn from(e: Unauthenticated) -> Self {
        match e {
            Unauthenticated::Missing => ApiError::Unauthorized(NO_PERMISSION),
            Unauthenticated::Malformed => ApiError::Unauthorized("Invalid token"),
        }
    }
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The caller: the Salt token its request presents, well-formed, not yet confirmed by the
/// master. Routes that check credentials only at some step of their own take
/// `Result<Caller, Unauthenticated>` and use it there.
#[derive(Debug, Clone)]
pub struct Caller {
    token: String,
    app: Arc<App>,
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<App>: FromRef<S>,
{
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Unauthenticated> {
        let in_path = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params
                .iter()
                .find(|(name, _)| *name == "token")
                .map(|(_, value)| value.to_owned()),
            Err(_) => None,
        };
        let presented = in_path
            .or_else(|| session_token(&parts.headers))
            .filter(|t| !t.is_empty())
            .ok_or(Unauthenticated::Missing)?;
        let token = checked_token(&presented).map_err(|_| Unauthenticated::Malformed)?;
        Ok(Self {
            token,
            app: Arc::from_ref(state),
        })
    }
}

impl Caller {
    /// The token, as presented (hex).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The token as the master knows it: 401 when unknown or expired (counted as a failure of
    /// the client's), 429 for a client over its failure budget.
    pub async fn confirm(&self, salt: &SaltClients) -> Result<Token, ApiError> {
        self.app.tokens.confirm(salt, &self.token).await
    }
}

/// Who a stream (or an operator page) was opened for.
#[derive(Debug, Clone)]
pub enum Authorized {
    /// `saltgate.streams_disable_auth`: nobody in particular.
    Open,
    /// A Salt token the master confirmed; rechecked while the stream runs.
    Token(String),
}

/// The check of the event streams, `/metrics` and the events page: a Salt token confirmed by
/// the master (salt-api checks only that it exists and has not expired, not its rights; so do
/// we). On the built-in bus there is no master to ask, so they are refused unless
/// `saltgate.streams_disable_auth` is set. A missing or malformed token gets the same 401.
pub async fn authorize_stream(
    app: &App,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Authorized, ApiError> {
    if app.config.saltgate.streams_disable_auth {
        return Ok(Authorized::Open);
    }
    let Ok(caller) = caller else {
        return Err(ApiError::Unauthorized(NO_PERMISSION));
    };
    let Some(salt) = &app.salt else {
        return Err(ApiError::Unauthorized(
            "Event streams need a Salt master to check tokens; on the built-in bus set \
             saltgate.streams_disable_auth: true to serve them without auth",
        ));
    };
    caller.confirm(salt).await?;
    Ok(Authorized::Token(caller.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(session_token(&h), None);
        h.insert(http::header::COOKIE, "a=b; session_id=abc".parse().unwrap());
        assert_eq!(session_token(&h).as_deref(), Some("abc"));
        h.insert("x-auth-token", "tok".parse().unwrap());
        assert_eq!(session_token(&h).as_deref(), Some("tok"));
    }
}

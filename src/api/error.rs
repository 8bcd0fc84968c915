//! [`ApiError`]: every failure of the HTTP edge, mapped through one table to a status and a
//! stable code. The body is `{"status": N, "code": "...", "message": "..."}` in the negotiated
//! format. Internal detail (the Salt error text) is logged, not sent.
//!
//! Handlers return `Result<_, ApiError>`. `into_response` renders the error as JSON and carries
//! it on the response as an extension, with no side effect; [`respond`], the outermost layer,
//! takes it from there: it logs it, once, and writes the body again in the request's preferred
//! format when that is YAML. rest_cherrypy answers its own errors with CherryPy HTML pages; the
//! bodies here are saltgate's (API.md §1).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::negotiate::{Format, NotAcceptable, accept_format, render_body};
use crate::salt::SaltError;

/// A failure answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the body could not be parsed.
    BadBody(String),
    /// 400: the URL path holds characters no Salt tag may carry, or empty, `.` or `..`
    /// segments (which would make a different tag than the rule that covers the path).
    BadPath(&'static str),
    /// 401: no valid credentials.
    Unauthorized(&'static str),
    /// 401: a signature or shared secret did not verify.
    BadSignature(&'static str),
    /// 401: a timestamp outside the replay window.
    Stale,
    /// 403: the client address is not allowed.
    Forbidden,
    /// 403: authenticated, but not allowed to do this.
    NotAuthorized,
    /// 403: a cookie-authenticated (or login) request from another origin.
    CrossOrigin,
    /// 403: saltgate's own ACL check refused a compound command; the message names the function.
    AclRefused(String),
    /// 404: no such route or hook.
    NotFound,
    /// 409: a delivery with the same id is being fired right now.
    InProgress,
    /// 409: the minion already has an accepted key.
    KeyExists,
    /// 406: no acceptable response format.
    NotAcceptable,
    /// 413: the body is over the limit.
    TooLarge(u64),
    /// 415: an unsupported request content type.
    UnsupportedMedia,
    /// 429: over the rate limit; retry after this many seconds.
    RateLimited(u64),
    /// 503: the Salt master or its bus cannot take the request.
    Unavailable(&'static str),
    /// 504: the Salt master did not answer in time.
    Timeout,
    /// 408: the request body stalled or arrived under the minimum rate.
    BodyTimeout,
    /// 503: a budget of saltgate's own (streams, buffered bodies) is full; retry shortly.
    Busy(&'static str),
    /// 503: undelivered hooks fill the spool; retry after this many seconds.
    SpoolFull(u64),
    /// 503: the spool cannot store the hook (a disk error); nothing was accepted.
    SpoolFailed,
    /// 503: the store several saltgates share cannot answer and `saltgate.shared.fail` is
    /// `closed`; nothing was accepted (`Retry-After: 1`).
    SharedUnavailable,
    /// 500: a bug or an unexpected master answer.
    Internal,
    /// 400: the lowstate is well-formed data but not a valid lowstate (not a list, a chunk
    /// without `fun`, an unknown client).
    BadLowstate(String),
    /// 400: the client is not listed in `netapi_enable_clients` (or not served by saltgate).
    ClientDisabled(String),
    /// 400: a query parameter an event stream does not take.
    BadQuery(&'static str),
    /// 403: a browser's WebSocket handshake from another origin.
    OriginNotAllowed,
    /// A WebSocket handshake that is not one (405, 400 or 426): its status and reason.
    BadUpgrade(StatusCode, &'static str),
    /// The Salt master or its bus failed or refused: shown as [`salt_face`] shows it, the
    /// detail kept for the log.
    Salt(SaltError),
    /// One chunk of a lowstate failed: the chunk's own error, its index in the message.
    Chunk {
        /// The chunk's position, from 0.
        index: usize,
        /// What went wrong.
        error: Box<ApiError>,
    },
}

impl ApiError {
    /// Status and stable code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Self::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Self::Stale => (StatusCode::UNAUTHORIZED, "stale_request"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "address_not_allowed"),
            Self::NotAuthorized | Self::AclRefused(_) => (StatusCode::FORBIDDEN, "not_authorized"),
            Self::CrossOrigin => (StatusCode::FORBIDDEN, "cross_origin"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::InProgress => (StatusCode::CONFLICT, "delivery_in_progress"),
            Self::KeyExists => (StatusCode::CONFLICT, "key_exists"),
            Self::NotAcceptable => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedMedia => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "salt_unavailable"),
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "salt_timeout"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::SpoolFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "spool_full"),
            Self::SpoolFailed => (StatusCode::SERVICE_UNAVAILABLE, "spool_unavailable"),
            Self::SharedUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "shared_unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::BadLowstate(_) => (StatusCode::BAD_REQUEST, "bad_lowstate"),
            Self::ClientDisabled(_) => (StatusCode::BAD_REQUEST, "client_disabled"),
            Self::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
            Self::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Self::BadUpgrade(status, _) => (*status, "bad_upgrade"),
            Self::Salt(e) => salt_face(e).status_code(),
            Self::Chunk { error, .. } => error.status_code(),
        }
    }

    /// The message sent to the client: fixed text, never internal detail.
    pub fn message(&self) -> String {
        match self {
            Self::BadBody(why) => format!("Could not parse the request body: {why}"),
            Self::BadPath(why)
            | Self::Unauthorized(why)
            | Self::BadSignature(why)
            | Self::Unavailable(why)
            | Self::BadQuery(why)
            | Self::BadUpgrade(_, why) => (*why).to_owned(),
            Self::Stale => "The request's timestamp is outside the accepted window".into(),
            Self::Forbidden => "Requests from this address are not allowed".into(),
            Self::NotAuthorized => "Not allowed to run this".into(),
            Self::CrossOrigin => "Cross-origin request refused: a request authenticated by the \
                                  session cookie (and every login) must come from this server's \
                                  own origin; other clients send the token in X-Auth-Token"
                .into(),
            Self::NotFound => "Nothing matches the given URI".into(),
            Self::InProgress => "A delivery with this id is being processed; retry later".into(),
            Self::KeyExists => "This minion already has an accepted key".into(),
            Self::NotAcceptable => {
                "This resource only emits application/json and application/x-yaml".into()
            }
            Self::TooLarge(limit) => format!("The request body exceeds the {limit}-byte limit"),
            Self::UnsupportedMedia => "Unsupported request Content-Type".into(),
            Self::RateLimited(secs) => format!("Too many requests; retry after {secs} s"),
            Self::Timeout => "The Salt master did not answer in time".into(),
            Self::BodyTimeout => "The request body stalled or arrived too slowly".into(),
            Self::Busy(why) => (*why).to_owned(),
            Self::SpoolFull(secs) => {
                format!("Too many hooks wait for delivery; retry after {secs} s")
            }
            Self::SpoolFailed => "The hook cannot be stored right now; retry later".into(),
            Self::SharedUnavailable => {
                "The store shared by the saltgate instances cannot answer; retry shortly".into()
            }
            Self::Internal => "An unexpected error occurred".into(),
            Self::BadLowstate(why) | Self::ClientDisabled(why) | Self::AclRefused(why) => {
                why.clone()
            }
            Self::OriginNotAllowed => "Cross-origin WebSocket connections are not allowed".into(),
            Self::Salt(e) => salt_face(e).message(),
            Self::Chunk { index, error } => format!("chunk {index}: {}", error.message()),
        }
    }

    /// Renders the error in `format`.
    pub fn render(&self, format: Format) -> Response {
        let (status, code) = self.status_code();
        let body = serde_json::json!({
            "status": status.as_u16(),
            "code": code,
            "message": self.message(),
        });
        let mut response = render_body(status, format, &body);
        if let Self::RateLimited(secs) | Self::SpoolFull(secs) = self {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self, Self::Busy(_) | Self::SharedUnavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::TooLarge(_) | Self::BodyTimeout) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl ApiError {
    /// The Salt error behind this one, if any.
    pub fn cause(&self) -> Option<&SaltError> {
        match self {
            Self::Salt(e) => Some(e),
            Self::Chunk { error, .. } => error.cause(),
            _ => None,
        }
    }
}

/// How a Salt error is shown to the client: a fixed status and message, never the detail.
fn salt_face(e: &SaltError) -> ApiError {
    match e {
        SaltError::AuthRefused(_) => ApiError::Unauthorized("Authentication failed"),
        SaltError::NotAuthorized(_) => ApiError::NotAuthorized,
        SaltError::Timeout(_) => ApiError::Timeout,
        SaltError::Unavailable(_) | SaltError::BusBusy(_) => {
            ApiError::Unavailable("The Salt master is unavailable")
        }
        SaltError::Master(_) | SaltError::Protocol(_) => ApiError::Internal,
    }
}

/// JSON, with the error itself as an extension for [`respond`] to log and re-render.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.render(Format::Json);
        response.extensions_mut().insert(self);
        response
    }
}

/// The Salt error, kept for the log; the client sees [`salt_face`].
impl From<SaltError> for ApiError {
    fn from(e: SaltError) -> Self {
        Self::Salt(e)
    }
}

impl From<NotAcceptable> for ApiError {
    fn from(_: NotAcceptable) -> Self {
        Self::NotAcceptable
    }
}

impl IntoResponse for NotAcceptable {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The outermost layer: every error answered (an [`ApiError`] carried on the response) is logged
/// here, once, and its body is written in the format the request's `Accept` prefers (JSON when
/// it names none saltgate writes). Client mistakes are logged at debug, the master's refusals
/// at info, failures at warn and 500s at error, with the Salt detail the client never sees.
pub async fn respond(request: Request, next: Next) -> Response {
    let accept: Vec<HeaderValue> = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .cloned()
        .collect();
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let Some(error) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    log(&error, method.as_str(), route);
    let format = accept_format(&accept).unwrap_or(Format::Json);
    if format == Format::Json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (fresh, body) = error.render(format).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = fresh.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// Logs an error answered to a client (see [`respond`]): at debug for client mistakes, up to
/// error for 500s, with the Salt detail the client never sees.
pub fn log(error: &ApiError, method: &str, route: &str) {
    let (status, code) = error.status_code();
    let status = status.as_u16();
    let message = error.message();
    match error.cause() {
        Some(cause) if status == 500 => tracing::error!(
            method, route, status, code, %message, error = %cause,
            "Request failed: unexpected answer from the Salt master"
        ),
        Some(cause) if status > 500 => tracing::warn!(
            method, route, status, code, %message, error = %cause,
            "Request failed: the Salt master could not answer"
        ),
        Some(cause) => tracing::info!(
            method, route, status, code, %message, kind = cause.kind(),
            "Request refused by the Salt master"
        ),
        None if status == 500 => {
            tracing::error!(method, route, status, code, %message, "Request failed");
        }
        None if status > 500 => {
            tracing::warn!(method, route, status, code, %message, "Request failed");
        }
        None => tracing::debug!(method, route, status, code, %message, "Request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a small response built by the test"
    )]
    async fn rate_limit_carries_retry_after_and_yaml_renders() {
        let r = ApiError::RateLimited(3).render(Format::Yaml);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/x-yaml");
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_yaml::Value = serde_yaml::from_slice(&body).unwrap();
        assert_eq!(v["code"], serde_yaml::Value::from("rate_limited"));
    }

    #[test]
    fn salt_errors_map_without_detail() {
        let e: ApiError = SaltError::Master("secret detail".into()).into();
        assert_eq!(e.status_code(), ApiError::Internal.status_code());
        assert_eq!(e.message(), ApiError::Internal.message());
        assert!(!e.message().contains("secret"));
        let e: ApiError = SaltError::Unavailable("x".into()).into();
        assert_eq!(e.status_code().0, StatusCode::SERVICE_UNAVAILABLE);
    }
}

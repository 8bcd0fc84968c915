//! The rest_wsgi dialect: salt-api's `rest_wsgi` module as it answers, on its own listener.
//!
//! rest_wsgi has one resource and ignores the path: `POST` (any path) runs a JSON lowstate
//! whose every chunk carries its own credentials (`token`, or `eauth` + `username` +
//! `password`); `GET` answers a fixed sentence; any other method is 405. Every answer is JSON,
//! `{"return": ...}`: the results in chunk order, or on failure the message as a string. Its
//! statuses: 406 when the request's `Content-Type` is not JSON (rest_wsgi reads no `Accept`),
//! 400 when the body is not JSON, 401 when a chunk's credentials are missing or refused, 405,
//! and 500 for what Salt raised.
//!
//! The chunks run through the same checks and clients as rest_cherrypy's `POST /run`
//! ([`crate::api::netapi::run_lowstate`]), with its throttle on failed credentials. What
//! differs from rest_wsgi, on purpose (README, "Switching from salt-api: rest_wsgi"):
//!
//! - rest_wsgi under salt-api answers every request 500 `A server error occurred.` on Python 3:
//!   its application returns `str` where the WSGI server salt-api starts it in (wsgiref)
//!   requires bytes. saltgate answers what the module was written to answer.
//! - The chunks are checked before any runs, as in rest_cherrypy's dialect: an unknown or
//!   disabled client, a chunk without `fun` or `tgt`, a reserved key are 400 and nothing has run
//!   (rest_wsgi: 500 once earlier chunks ran); `ssh` is not served.
//! - A single map is a one-chunk lowstate (rest_wsgi iterates its keys and fails with 500).
//! - `Content-Type: application/json` may carry parameters (`; charset=utf-8`); rest_wsgi
//!   requires the bare string.
//! - saltgate's own limits answer with their statuses (413 body cap, 408 slow body, 429 failed
//!   credentials, 503 no master or busy, 504 master timeout), in rest_wsgi's `{"return": msg}`
//!   shape; refused credentials are 401 and an authorization refusal 403, where Salt's
//!   `LocalClient` raises errors rest_wsgi answers with 500.
//! - Messages of saltgate's own checks (a malformed body, a chunk without `tgt`) are saltgate's
//!   words; a refusal by the master is Salt's fixed words (`Authentication error occurred.`),
//!   never the master's detail.
//! - TLS when `ssl_crt`/`ssl_key` are set in the block (rest_wsgi never served TLS), and `host`
//!   (rest_wsgi binds `localhost`, saltgate's default too).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::any;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::api::body::{media_type, parse_async, read_capped};
use crate::api::error::{self, ApiError};
use crate::api::negotiate::{Format, render_body};
use crate::api::netapi::{Background, Shapes, run_lowstate};
use crate::api::state::App;
use crate::api::{AppState, Frame, frame, metrics};
use crate::salt::SaltError;

/// rest_wsgi's answer to `GET`: its sentence, which it returns through `list(...)`, so the
/// `return` is the sentence's characters, one string each.
pub const GET_ANSWER: &str =
    "They found me. I don't know how, but they found me. Run for it, Marty!";

/// The rest_wsgi routes: every path, every method, one handler.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", any(answer))
        .route("/{*path}", any(answer))
        .route_layer(axum::middleware::from_fn(metrics::label_route));
    routes
        .layer(axum::middleware::from_fn_with_state(
            Frame::plain(&state),
            frame,
        ))
        .with_state(state)
}

/// Why a request is not answered 200.
#[derive(Debug)]
enum Refusal {
    /// 405: not `GET` nor `POST` (rest_wsgi's `HTTPError`, written `"405: <message>"`).
    Method,
    /// 406: the body is not declared JSON (likewise).
    NotJson,
    /// Anything saltgate or Salt refused: [`failure`].
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

async fn answer(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answered = match method {
        Method::GET => {
            let chars: Vec<Value> = GET_ANSWER
                .chars()
                .map(|c| Value::String(c.to_string()))
                .collect();
            Ok(chars)
        }
        Method::POST => post(&app, &background, &headers, body).await,
        _ => Err(Refusal::Method),
    };
    match answered {
        Ok(ret) => reply(StatusCode::OK, &Value::Array(ret)),
        Err(refusal) => refuse(&refusal, method.as_str()),
    }
}

async fn post(
    app: &App,
    background: &Background,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<Value>, Refusal> {
    if media_type(headers).as_deref() != Some("application/json") {
        return Err(Refusal::NotJson);
    }
    let limit = app
        .config
        .wsgi
        .as_ref()
        .map_or(app.config.api.max_request_body_size, |w| {
            w.max_request_body_size
        });
    let raw = read_capped(headers, body, limit).await?;
    if raw.is_empty() {
        return Err(ApiError::BadBody("an empty body is not JSON".into()).into());
    }
    let lowstate = parse_async(headers, &raw).await?;
    Ok(run_lowstate(app, background, None, lowstate, None, Shapes::default()).await?)
}

/// The refusal's answer, logged (without secrets: the message is what the client sees).
fn refuse(refusal: &Refusal, method: &str) -> Response {
    let (status, message) = match refusal {
        Refusal::Api(e) => {
            error::log(e, method, "rest_wsgi");
            return failure(e);
        }
        Refusal::Method => (StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed"),
        Refusal::NotJson => (StatusCode::NOT_ACCEPTABLE, "406: JSON required"),
    };
    tracing::debug!(
        method,
        route = "rest_wsgi",
        status = status.as_u16(),
        message,
        "Request refused"
    );
    reply(status, &Value::String(message.to_owned()))
}

/// A failure as rest_wsgi shapes one: its status, `{"return": "<message>"}`. A chunk's error
/// is its own message (rest_wsgi does not say which chunk failed); a body that does not parse
/// is `400: <why>`, as rest_wsgi writes its `HTTPError`s.
fn failure(e: &ApiError) -> Response {
    let inner = match e {
        ApiError::Chunk { error, .. } => error.as_ref(),
        other => other,
    };
    let (status, _) = inner.status_code();
    let message = match inner {
        ApiError::BadBody(_) => format!("400: {}", inner.message()),
        // The fixed words Salt's clients raise for a refusal (never the master's detail).
        ApiError::Salt(SaltError::AuthRefused(_)) => "Authentication error occurred.".into(),
        ApiError::Salt(SaltError::NotAuthorized(_)) | ApiError::NotAuthorized => {
            "Authorization error occurred.".into()
        }
        other => other.message(),
    };
    let mut response = reply(status, &Value::String(message));
    if let ApiError::RateLimited(secs) = inner {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if matches!(inner, ApiError::TooLarge(_) | ApiError::BodyTimeout) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `{"return": ret}` as rest_wsgi writes it (Python's `json.dumps` separators).
fn reply(status: StatusCode, ret: &Value) -> Response {
    render_body(status, Format::Json, &json!({ "return": ret }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::disallowed_methods,
        reason = "a small response built by the test"
    )]
    async fn text(r: Response) -> String {
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn failures_are_shaped_as_rest_wsgi_shapes_them() {
        // A chunk's error is its own message: rest_wsgi does not say which chunk failed.
        let e = ApiError::Chunk {
            index: 2,
            error: Box::new(ApiError::Unauthorized(
                "No authentication credentials given",
            )),
        };
        let r = failure(&e);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            text(r).await,
            r#"{"return": "No authentication credentials given"}"#
        );
        // The master's refusals in Salt's fixed words, never its detail.
        let r = failure(&ApiError::Salt(SaltError::AuthRefused("detail".into())));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            text(r).await,
            r#"{"return": "Authentication error occurred."}"#
        );
        let r = failure(&ApiError::Salt(SaltError::NotAuthorized("detail".into())));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            text(r).await,
            r#"{"return": "Authorization error occurred."}"#
        );
        let r = failure(&ApiError::BadBody("x".into()));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(text(r).await.starts_with(r#"{"return": "400: "#));
        let r = failure(&ApiError::RateLimited(7));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = failure(&ApiError::TooLarge(10));
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let r = refuse(&Refusal::Method, "PUT");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(text(r).await, r#"{"return": "405: Method Not Allowed"}"#);
        let r = refuse(&Refusal::NotJson, "POST");
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(text(r).await, r#"{"return": "406: JSON required"}"#);
    }
}

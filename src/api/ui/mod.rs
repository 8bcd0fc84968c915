//! The events page (`saltgate.ui_path`, default `/ui`): the live `/events` stream, the recent
//! hook answers with their outcome and a chart of them per minute, and the spool's delivery log
//! (every accepted hook, its state, attempts and confirmation, the event exactly as it went onto
//! the bus, and a Redeliver action). HTML, JS and CSS are compiled into the binary.
//!
//! JSON behind the page: `<ui_path>/deliveries` (recent answers), `<ui_path>/log` (the delivery
//! log, `?path=`, `?state=pending|delivered`, `?before=<seq>` to page back, `?limit=`),
//! `<ui_path>/log/<seq>` (one entry and its event) and `POST <ui_path>/log/<seq>/redeliver`.
//! Redeliver fires the stored event again with its delivery id; it is logged and counted
//! (`saltgate_spool_redelivered_total`), and as a cookie-authenticated `POST` it must come from
//! this server's own origin ([`crate::api::csrf`]).
//!
//! The page and its data are behind the same check as `/events`; an
//! unauthenticated visit gets 401 with a small form that stores a Salt token in the
//! `session_id` cookie (read by `/events` as salt-api does). The JS and CSS files hold no data
//! and are served to anyone. Event data is only ever written with `textContent`, and a strict
//! Content-Security-Policy allows scripts from this server only.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::api::auth::{Caller, Unauthenticated, authorize_stream};
use crate::api::error::ApiError;
use crate::api::negotiate::{Preferred, render_body};
use crate::api::state::App;

const INDEX: &str = include_str!("index.html");
const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const LOGIN_JS: &str = include_str!("login.js");
const STYLE: &str = include_str!("style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's base URL and the `/events` URL, both under `root_prefix`.
fn urls(app: &App) -> (String, String) {
    let prefix = app.config.api.root_prefix.trim_end_matches('/');
    let ui = app.config.saltgate.ui_path.trim_end_matches('/');
    (format!("{prefix}{ui}"), format!("{prefix}/events"))
}

/// `GET <ui_path>`.
pub async fn page(
    State(app): State<Arc<App>>,
    caller: Result<Caller, Unauthenticated>,
) -> Response {
    let (base, events) = urls(&app);
    let authorized = authorize_stream(&app, caller).await.is_ok();
    let (status, template) = if authorized {
        (StatusCode::OK, INDEX)
    } else {
        (StatusCode::UNAUTHORIZED, LOGIN)
    };
    let html = template
        .replace("{{BASE}}", &attr_escape(&base))
        .replace("{{EVENTS}}", &attr_escape(&events))
        .replace("{{INSTANCE}}", &attr_escape(&app.config.instance_name()));
    asset(status, "text/html; charset=utf-8", html)
}

/// `GET <ui_path>/deliveries`: the recent deliveries, newest first.
pub async fn deliveries(
    State(app): State<Arc<App>>,
    Preferred(format): Preferred,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    authorize_stream(&app, caller).await?;
    let mut response = render_body(
        StatusCode::OK,
        format,
        &serde_json::json!({
            "instance": app.config.instance_name(),
            "deliveries": app.metrics.deliveries(),
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Most entries one `<ui_path>/log` page holds.
pub const LOG_PAGE_MAX: usize = 200;

/// `<ui_path>/log`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this hook path and below.
    path: Option<String>,
    /// `pending` or `delivered`.
    state: Option<String>,
    /// Entries before this sequence number.
    before: Option<u64>,
    /// At most this many (capped at [`LOG_PAGE_MAX`]).
    limit: Option<usize>,
}

fn spool(app: &App) -> Result<&crate::spool::Spool, ApiError> {
    app.spool.as_ref().ok_or(ApiError::Unavailable(
        "This saltgate has no spool (saltgate.spool), so it keeps no delivery log",
    ))
}

fn store_error(e: crate::spool::SpoolError) -> ApiError {
    tracing::warn!(error = %e, "Delivery log read failed");
    ApiError::SpoolFailed
}

/// A log entry's sequence number in a URL; anything else names no entry (404).
fn parse_seq(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET <ui_path>/log`: the delivery log, newest first, and `next` (the `before` of the next
/// page) when there may be more.
pub async fn log(
    State(app): State<Arc<App>>,
    Preferred(format): Preferred,
    caller: Result<Caller, Unauthenticated>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize_stream(&app, caller).await?;
    let q: LogQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::BadQuery("the log takes path, state, before and limit"))?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(crate::spool::store::State::Pending),
        Some("delivered") => Some(crate::spool::store::State::Delivered),
        Some(_) => {
            return Err(ApiError::BadQuery("state is pending or delivered"));
        }
    };
    let query = crate::spool::store::Query {
        before: q.before,
        path: q
            .path
            .map(|p| p.trim_matches('/').to_owned())
            .filter(|p| !p.is_empty()),
        state,
        limit: q.limit.unwrap_or(50).clamp(1, LOG_PAGE_MAX),
    };
    let (entries, next) = spool(&app)?.list(query).await.map_err(store_error)?;
    Ok(no_store(render_body(
        StatusCode::OK,
        format,
        &serde_json::json!({"deliveries": entries, "next": next}),
    )))
}

/// `GET <ui_path>/log/<seq>`: one entry and its event as it went onto the bus.
pub async fn log_entry(
    State(app): State<Arc<App>>,
    Preferred(format): Preferred,
    caller: Result<Caller, Unauthenticated>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    authorize_stream(&app, caller).await?;
    let seq = parse_seq(&seq)?;
    let (info, event) = spool(&app)?
        .get(seq)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::NotFound)?;
    Ok(no_store(render_body(
        StatusCode::OK,
        format,
        &serde_json::json!({
            "delivery": info,
            "event": {"tag": event.tag, "data": crate::salt::to_json(&event.data)},
        }),
    )))
}

/// `POST <ui_path>/log/<seq>/redeliver`: fires a delivered entry again. 404 for an entry that
/// is unknown, pruned or still pending (it is being delivered already).
pub async fn redeliver(
    State(app): State<Arc<App>>,
    Preferred(format): Preferred,
    caller: Result<Caller, Unauthenticated>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize_stream(&app, caller).await?;
    let seq = parse_seq(&seq)?;
    let found = spool(&app)?.redeliver(seq).await.map_err(store_error)?;
    if !found {
        return Err(ApiError::NotFound);
    }
    let by = match &who {
        crate::api::auth::Authorized::Open => "open page",
        crate::api::auth::Authorized::Token(_) => "token holder",
    };
    tracing::info!(seq, by, "Redelivery requested from the delivery log");
    Ok(no_store(render_body(
        StatusCode::ACCEPTED,
        format,
        &serde_json::json!({"success": true, "redelivered": seq}),
    )))
}

/// `GET <ui_path>/app.js`.
pub async fn app_js() -> Response {
    asset(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        APP_JS.to_owned(),
    )
}

/// `GET <ui_path>/login.js`.
pub async fn login_js() -> Response {
    asset(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        LOGIN_JS.to_owned(),
    )
}

/// `GET <ui_path>/style.css`.
pub async fn style() -> Response {
    asset(StatusCode::OK, "text/css; charset=utf-8", STYLE.to_owned())
}

fn asset(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_have_their_placeholders_and_no_inline_script() {
        for t in [INDEX, LOGIN] {
            assert!(t.contains("{{BASE}}"));
            assert!(
                !t.contains("<script>"),
                "inline scripts would need a CSP exception"
            );
        }
        assert!(INDEX.contains("{{EVENTS}}"));
        assert!(!APP_JS.contains("innerHTML"));
        assert_eq!(attr_escape("/a\"<b>&"), "/a&quot;&lt;b&gt;&amp;");
    }
}

//! The events page (`saltgate.ui_path`, default `/ui`): the live `/events` stream and the
//! recent hook deliveries with their outcome. HTML, JS and CSS are compiled into the binary.
//!
//! The page and its data (`<ui_path>/deliveries`) are behind the same check as `/events`; an
//! unauthenticated visit gets 401 with a small form that stores a Salt token in the
//! `session_id` cookie (read by `/events` as salt-api does). The JS and CSS files hold no data
//! and are served to anyone. Event data is only ever written with `textContent`, and a strict
//! Content-Security-Policy allows scripts from this server only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

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
        .replace("{{EVENTS}}", &attr_escape(&events));
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
        &serde_json::json!({"deliveries": app.metrics.deliveries()}),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
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

//! Webhooks: `POST <webhook_url>/<path>` becomes the Salt event `salt/netapi/hook/<path>`
//! ([`pipeline`], the checks of DESIGN.md in their order), with the answers senders expect from
//! the endpoint itself ([`answers`], SNS subscription confirmations in [`sns`]) and the event in
//! salt-api's shape ([`event`]).

pub mod answers;
pub mod event;
pub mod pipeline;
pub mod sns;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use crate::api::auth::{Caller, Unauthenticated};
use crate::api::error::ApiError;
use crate::api::live::Live;
use crate::api::negotiate::{Negotiated, NotAcceptable, render_body};
use crate::api::state::App;
use crate::security::client_ip;

pub use pipeline::{HookRules, Hooks, Outcome, check_path, run};

/// `POST <webhook_url>` and `POST <webhook_url>/<path>` (no path: the default rule's tag).
#[expect(
    clippy::too_many_arguments,
    reason = "an axum handler: each argument is one extractor"
)]
pub async fn hook(
    State(app): State<Arc<App>>,
    State(hooks): State<Arc<Hooks>>,
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Option<Path<String>>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let delivery = Delivery {
        peer,
        path: path.map(|Path(p)| p).unwrap_or_default(),
        format,
        caller,
        query: None,
    };
    // The rule set in force when the request arrived, for all of it (a reload swaps it whole).
    let set = live.load();
    handle(
        &app,
        &hooks,
        &set.hooks,
        delivery,
        headers,
        body,
        &event::CHERRYPY,
    )
    .await
}

/// What the routes extracted for one delivery.
#[derive(Debug)]
pub struct Delivery {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The hook path after the hook prefix.
    pub path: String,
    /// The response format `Accept` asks for.
    pub format: Result<Negotiated, NotAcceptable>,
    /// The token the request presents.
    pub caller: Result<Caller, Unauthenticated>,
    /// The query string (rest_tornado puts its arguments in the event).
    pub query: Option<String>,
}

/// Runs the pipeline (with `dialect`'s event shape) and records the delivery's outcome (the counter, the events page's ring
/// and one log line per delivery, whatever the outcome).
pub async fn handle(
    app: &App,
    hooks: &Hooks,
    set: &HookRules,
    delivery: Delivery,
    headers: HeaderMap,
    body: Body,
    dialect: &event::HookDialect,
) -> Result<Response, ApiError> {
    let path = delivery.path.trim_matches('/').to_owned();
    let client =
        client_ip::resolve_from_headers(delivery.peer.ip(), &headers, &hooks.trusted_proxies);
    let Ok(Negotiated(format)) = delivery.format else {
        tracing::info!(client_ip = %client, hook = %path, status = 406, "Hook refused: no acceptable format");
        app.metrics
            .record_hook(&path, client, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        return Err(ApiError::NotAcceptable);
    };
    let outcome = run(
        app,
        hooks,
        set,
        delivery.caller,
        client,
        &path,
        &headers,
        delivery.query.as_deref(),
        body,
        dialect,
    )
    .await;
    match outcome {
        Ok(Outcome::Fired { queued: false }) => {
            app.metrics
                .record_hook(&path, client, StatusCode::OK, "accepted");
            Ok(render_body(
                StatusCode::OK,
                format,
                &serde_json::json!({"success": true}),
            ))
        }
        Ok(Outcome::Fired { queued: true }) => {
            app.metrics
                .record_hook(&path, client, StatusCode::ACCEPTED, "queued");
            Ok(render_body(
                StatusCode::ACCEPTED,
                format,
                &serde_json::json!({"success": true, "queued": true}),
            ))
        }
        Ok(Outcome::Duplicate) => {
            app.metrics
                .record_hook(&path, client, StatusCode::OK, "duplicate");
            tracing::info!(client_ip = %client, hook = %path, "Duplicate delivery answered, nothing fired");
            Ok(render_body(
                StatusCode::OK,
                format,
                &serde_json::json!({"success": true, "duplicate": true}),
            ))
        }
        Ok(Outcome::Answered(body)) => {
            app.metrics
                .record_hook(&path, client, StatusCode::OK, "answered");
            Ok(render_body(StatusCode::OK, format, &body))
        }
        Err(e) => {
            let (status, code) = e.status_code();
            app.metrics.record_hook(&path, client, status, code);
            tracing::info!(client_ip = %client, hook = %path, status = status.as_u16(), code, "Hook refused");
            Err(e)
        }
    }
}

//! The HTTP edge: routes, content negotiation, errors. Thin: parse, call `security`, call
//! `salt`, render. No sockets or wire formats here.

pub mod body;
pub mod cors;
pub mod csrf;
pub mod digest;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod hook;
pub mod limits;
pub mod lowstate;
pub mod metrics;
pub mod negotiate;
pub mod resources;
pub mod session;
pub mod sns;
pub mod state;
pub mod ui;
pub mod ws;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};

pub use error::ApiError;
pub use state::{App, AppState};

use negotiate::{Format, response_format};

/// The whole route table.
pub fn router(state: AppState) -> Router {
    let hook_base = state
        .config
        .api
        .webhook_url
        .trim_end_matches('/')
        .to_owned();
    let hook_base = if hook_base.is_empty() {
        "/hook".to_owned()
    } else {
        hook_base
    };
    let ui_base = state
        .config
        .saltgate
        .ui_path
        .trim_end_matches('/')
        .to_owned();
    let stats = std::sync::Arc::new(resources::Stats::new(state.config.api.collect_stats));
    let streams = axum::middleware::from_fn(limits::stream_budget);
    let routes = Router::new()
        .route("/", get(index).post(lowstate::root))
        .route("/index", get(index).post(lowstate::root))
        .route("/run", get(index).post(lowstate::run))
        .route("/login", get(session::login_info).post(session::login))
        .route("/logout", post(session::logout))
        .route("/token", get(index).post(session::token))
        .route(
            "/minions",
            get(resources::minions).post(resources::minions_post),
        )
        .route("/minions/", get(resources::minions))
        .route("/minions/{mid}", get(resources::minion))
        .route("/jobs", get(resources::jobs).post(lowstate::root))
        .route("/jobs/", get(resources::jobs))
        .route("/jobs/{jid}", get(resources::job))
        .route("/keys", get(resources::keys).post(resources::keys_post))
        .route("/keys/", get(resources::keys))
        .route("/keys/{mid}", get(resources::key))
        .route("/stats", get(resources::stats))
        .route(&hook_base, post(hook::hook_root))
        .route(&format!("{hook_base}/"), post(hook::hook_root))
        .route(&format!("{hook_base}/{{*path}}"), post(hook::hook_path))
        // streams: their own budget (limits::stream_budget), apart from the general one
        .route("/events", get(events::events).route_layer(streams.clone()))
        .route("/ws", get(ws::ws_root).route_layer(streams.clone()))
        .route(
            "/ws/{token}",
            get(ws::ws_token).route_layer(streams.clone()),
        )
        .route(
            "/all_events/{token}",
            get(ws::all_events).route_layer(streams.clone()),
        )
        .route(
            "/formatted_events/{token}",
            get(ws::formatted_events).route_layer(streams.clone()),
        )
        .route(&ui_base, get(ui::page))
        .route(&format!("{ui_base}/deliveries"), get(ui::deliveries))
        .route(&format!("{ui_base}/app.js"), get(ui::app_js))
        .route(&format!("{ui_base}/login.js"), get(ui::login_js))
        .route(&format!("{ui_base}/style.css"), get(ui::style))
        // stats
        .route("/metrics", get(metrics::metrics))
        .route_layer(axum::middleware::from_fn(metrics::label_route))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            state::client_scope,
        ))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(resources::count))
        .layer(axum::Extension(stats))
        .layer(axum::Extension(lowstate::Background::new()));
    let routes = files::with_files(routes, &state.config.api);
    let routes = match cors::layer(state.config.api.cors_origin.as_ref()) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    let prefix = state
        .config
        .api
        .root_prefix
        .trim_end_matches('/')
        .to_owned();
    if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&prefix, routes).fallback(not_found)
    }
}

/// `GET /`: salt-api's welcome, listing the enabled clients.
async fn index(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(format) = response_format(&headers) else {
        return ApiError::NotAcceptable.render(Format::Json);
    };
    let body = serde_json::json!({
        "return": "Welcome",
        "clients": app.config.master.netapi_enable_clients,
    });
    error::render_body(StatusCode::OK, format, &body)
}

async fn not_found(headers: HeaderMap) -> Response {
    ApiError::NotFound.render(response_format(&headers).unwrap_or(Format::Json))
}

//! The HTTP edge: routes, content negotiation, errors. Thin: parse, call `security`, call
//! `salt`, render. No sockets or wire formats here.
//!
//! - One folder per capability, holding its route handlers: [`hook`], [`lowstate`],
//!   [`session`], [`stream`], [`resources`], [`ui`]. Handlers never use each other.
//! - Shared services, which use no handler: [`state`] (the services every capability may use),
//!   [`auth`] (the caller extractor), [`tokens`] (token validation and its cache),
//!   [`negotiate`] (the format extractors), [`error`] (`ApiError` and the layer that logs and
//!   renders it), [`netapi`] (running lowstate chunks), [`body`] (capped body reading and
//!   parsing), [`metrics`], [`limits`], [`csrf`], [`cors`], [`files`].
//! - This module: the route table and [`AppState`], the services plus each capability's state,
//!   from which handlers take their parts (`FromRef`).
//!
//! ARCHITECTURE.md draws the layers and follows a hook and a lowstate call through them.

pub mod auth;
pub mod body;
pub mod cors;
pub mod csrf;
pub mod dialect;
pub mod error;
pub mod files;
pub mod hook;
pub mod limits;
pub mod live;
pub mod lowstate;
pub mod metrics;
pub mod negotiate;
pub mod netapi;
pub mod resources;
pub mod session;
pub mod state;
pub mod stream;
pub mod tokens;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};

pub use error::ApiError;
pub use state::App;

use hook::Hooks;
use live::Live;
use netapi::Background;

/// The reloadable part of the configuration, held by [`live::Live`] (here, beside the route
/// table, because it gathers the parts of two capabilities).
#[derive(Debug)]
pub struct Snapshot {
    /// The hook rules, their rate limiter and the SNS certificate cache.
    pub hooks: hook::pipeline::HookRules,
    /// `rest_cherrypy: cors_origin`.
    pub cors: cors::Cors,
    /// The `rest_tornado:` keys a reload applies.
    pub tornado: dialect::tornado::Reloadable,
}

/// The router's state: the shared services and each capability's own state. Handlers take the
/// parts they use (`State<Arc<App>>`, `State<Arc<Hooks>>`, ...), never the whole.
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    /// The shared services.
    pub app: Arc<App>,
    /// The hook pipeline's state that outlives a reload (the replay guard).
    pub hooks: Arc<Hooks>,
    /// What a reload swaps: the hook rule set and the CORS origins.
    pub live: Arc<Live>,
    /// The bound on `wheel_async` calls running in the background.
    pub background: Background,
}

impl AppState {
    /// The state of a router serving `app`, the hook pipeline `hooks` and the reloadable
    /// `live` snapshot.
    pub fn new(app: App, hooks: Hooks, live: Live) -> Self {
        Self {
            app: Arc::new(app),
            hooks: Arc::new(hooks),
            live: Arc::new(live),
            background: Background::new(),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

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
    let streams = axum::middleware::from_fn(limits::stream_budget);
    let index = lowstate::index;
    let routes = Router::new()
        .route("/", get(index).post(lowstate::root))
        .route("/index", get(index).post(lowstate::root))
        .route("/run", get(index).post(lowstate::run))
        .route("/login", get(session::login_info).post(session::login))
        .route("/logout", post(session::logout))
        .route("/token", get(index).post(session::token))
        .route(
            "/minions",
            get(resources::minions).post(lowstate::minions_post),
        )
        .route("/minions/", get(resources::minions))
        .route("/minions/{mid}", get(resources::minion))
        .route("/jobs", get(resources::jobs).post(lowstate::root))
        .route("/jobs/", get(resources::jobs))
        .route("/jobs/{jid}", get(resources::job))
        .route("/keys", get(resources::keys).post(resources::keys_post))
        .route("/keys/", get(resources::keys))
        .route("/keys/{mid}", get(resources::key))
        .route("/stats", get(resources::stats::stats))
        .route(&hook_base, post(hook::hook))
        .route(&format!("{hook_base}/"), post(hook::hook))
        .route(&format!("{hook_base}/{{*path}}"), post(hook::hook))
        // streams: their own budget (limits::stream_budget), apart from the general one
        .route(
            "/events",
            get(stream::sse::events).route_layer(streams.clone()),
        )
        .route("/ws", get(stream::ws::ws_root).route_layer(streams.clone()))
        .route(
            "/ws/{token}",
            get(stream::ws::ws_token).route_layer(streams.clone()),
        )
        .route(
            "/all_events/{token}",
            get(stream::ws::all_events).route_layer(streams.clone()),
        )
        .route(
            "/formatted_events/{token}",
            get(stream::ws::formatted_events).route_layer(streams.clone()),
        )
        .route(&ui_base, get(ui::page))
        .route(&format!("{ui_base}/deliveries"), get(ui::deliveries))
        .route(&format!("{ui_base}/log"), get(ui::log))
        .route(&format!("{ui_base}/log/{{seq}}"), get(ui::log_entry))
        .route(
            &format!("{ui_base}/log/{{seq}}/redeliver"),
            post(ui::redeliver),
        )
        .route(&format!("{ui_base}/app.js"), get(ui::app_js))
        .route(&format!("{ui_base}/login.js"), get(ui::login_js))
        .route(&format!("{ui_base}/style.css"), get(ui::style))
        // stats
        .route("/metrics", get(resources::metrics::metrics))
        .route_layer(axum::middleware::from_fn(metrics::label_route))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Frame::cherrypy(&state),
            frame,
        ))
        .with_state(state.clone());
    let routes = files::with_files(routes, &state.config.api);
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state.live),
        cors::respond,
    ));
    let prefix = state
        .config
        .api
        .root_prefix
        .trim_end_matches('/')
        .to_owned();
    let routes = if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&prefix, routes).fallback(not_found)
    };
    // Outermost: every error answered inside is logged here once and written in the request's
    // preferred format.
    routes.layer(axum::middleware::from_fn(error::respond))
}

/// What [`frame`] needs: the parts every dialect shares (metrics, the client scope) and
/// rest_cherrypy's own (the CSRF guard for its cookie sessions).
#[derive(Debug)]
pub struct Frame {
    metrics: Arc<metrics::Metrics>,
    csrf: bool,
    trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Frame {
    /// rest_cherrypy's frame: everything.
    fn cherrypy(state: &AppState) -> Arc<Self> {
        Arc::new(Self {
            csrf: true,
            ..Self::base(state)
        })
    }

    /// The frame of a dialect with cookie sessions but without rest_cherrypy's routes: the
    /// CSRF guard too.
    pub fn with_csrf(state: &AppState) -> Arc<Self> {
        Self::cherrypy(state)
    }

    /// The frame of a dialect without cookie sessions: request metrics and the client scope
    /// only.
    pub fn plain(state: &AppState) -> Arc<Self> {
        Arc::new(Self::base(state))
    }

    fn base(state: &AppState) -> Self {
        Self {
            metrics: Arc::clone(&state.metrics),
            csrf: false,
            trusted_proxies: state.config.saltgate.trusted_proxies.clone().into(),
        }
    }
}

/// The frame every request runs in, one middleware rather than a layer each (every layer is a
/// boxed service and a future per request): the CSRF guard ([`csrf::refusal`]), the client's
/// scope for credential checks ([`tokens::in_client_scope`]) and the request metrics
/// ([`metrics::Metrics::observe_response`], which `/stats` reads too). A CSRF refusal is
/// counted like any answer. A [`Frame::plain`] skips the CSRF guard.
pub async fn frame(
    axum::extract::State(f): axum::extract::State<Arc<Frame>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    f.metrics.request_started();
    let method = metrics::method_label(request.method());
    let started = std::time::Instant::now();
    let refused = if f.csrf {
        csrf::refusal(&request)
    } else {
        None
    };
    let response = match refused {
        Some(refused) => refused,
        None => tokens::in_client_scope(&f.trusted_proxies, request, next).await,
    };
    f.metrics.observe_response(&response, method, started);
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

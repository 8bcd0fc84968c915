//! The rest_tornado dialect: salt-api's `rest_tornado` module as it answers, on its own
//! listener (`rest_tornado:` block), over the same core as the other dialects.
//!
//! Its routes, as rest_tornado's handlers serve them (each handler class inherits `GET` and
//! `POST` from its base, so some routes answer methods one would not expect):
//!
//! | Route | `GET` | `POST` |
//! | --- | --- | --- |
//! | `/` | `{"clients": [...], "return": "Welcome"}` | lowstate, session token required |
//! | `/login` | 401 `Please log in` | login |
//! | `/minions`, `/minions/<mid>` | `grains.items` on `<mid>` or `*` | lowstate, `local_async` only (400 otherwise) |
//! | `/jobs`, `/jobs/<jid>` | `jobs.list_jobs` / `jobs.list_job` | lowstate, as `/` |
//! | `/run` | the welcome | lowstate, credentials in each chunk or `X-Auth-Token` |
//! | `/events` | SSE stream | lowstate, as `/` |
//! | `/hook[/<path>]` | 405 (rest_tornado: 500) | a hook: `salt/netapi/hook/<path>` |
//! | `/all_events/<token>`, `/formatted_events/<token>` | WebSocket (with `websockets: true`) | — |
//!
//! A request that needs a session and has none (no `X-Auth-Token` header nor `session_id`
//! cookie naming a live token) is redirected to `/login` (302), as rest_tornado does. The
//! lowstate runs chunk by chunk: each is authenticated on its own (its `token`, its eauth
//! credentials, or the session's token when it names none), a chunk that fails to
//! authenticate ends the run with `"Failed to authenticate"` in its place, and a chunk that
//! fails otherwise answers `"Unexpected exception while handling request: <why>"` in its place
//! while the others run. `local` answers the minions that returned, or rest_tornado's sentence
//! when no minion matched. The hook event is rest_tornado's: `{_stamp, post, get, headers}`.
//!
//! What differs from rest_tornado, on purpose (README, "Switching from salt-api:
//! rest_tornado"): the chunks' clients are checked before any runs (rest_tornado answers 400
//! after earlier chunks ran); `netapi_enable_clients` is honoured (rest_tornado ignores it);
//! an empty or non-lowstate body is 400 (rest_tornado never answers it); the body cap is
//! `max_request_body_size` (1 MiB; rest_tornado 100 MB); error bodies are JSON or YAML (rest_tornado
//! writes Tornado's HTML error page); credential and signature headers never reach the bus;
//! a preflight without `Access-Control-Request-Headers` is 204 (rest_tornado: 500); the
//! session cookie is `HttpOnly; SameSite=Strict` and a cookie-authenticated request from another
//! origin is refused ([`crate::api::csrf`]); hook rules, signatures, rate limits and the spool
//! apply as on every listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::api::auth::{Caller, Unauthenticated};
use crate::api::body::{media_type, parse_async, read_capped};
use crate::api::cors::Cors;
use crate::api::error::{self, ApiError};
use crate::api::hook::event::{EventParts, HookDialect};
use crate::api::hook::{self, Delivery, Hooks};
use crate::api::live::Live;
use crate::api::negotiate::{Format, Negotiated, NotAcceptable, render_body};
use crate::api::netapi::{Background, Client, Shapes, run_lowstate};
use crate::api::session::{LoginRules, login_answer};
use crate::api::state::App;
use crate::api::stream;
use crate::api::{AppState, Frame, frame, limits, metrics};
use crate::config::{Config, CorsOrigin};
use crate::salt::SaltError;

/// The clients rest_tornado serves, as its `GET /` lists them.
pub const CLIENTS: [&str; 4] = ["local", "local_async", "runner", "runner_async"];

/// rest_tornado's answer for a `local` chunk whose target matched no minion.
pub const NO_MINIONS: &str =
    "No minions matched the target. No command was sent, no jid was assigned.";

/// rest_tornado's refusal of a chunk whose client it does not serve.
const INVALID_CLIENT: &str = "400 Invalid Client: Client not found in salt clients";

/// What a chunk that failed to authenticate answers (and the run ends).
pub const FAILED_AUTH: &str = "Failed to authenticate";

/// rest_tornado's shapes of the clients' results.
const SHAPES: Shapes = Shapes {
    local_unmatched: Some(NO_MINIONS),
    local_omits_missing: true,
};

/// rest_tornado's hooks: its token rule and its event data.
fn hook_dialect(disable_auth: bool) -> HookDialect {
    HookDialect {
        disable_auth: Some(disable_auth),
        parse: parse_post,
        data: event_data,
    }
}

/// The `rest_tornado:` keys a reload swaps ([`crate::api::Snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct Reloadable {
    /// `cors_origin`.
    pub cors_origin: Option<CorsOrigin>,
    /// `cors_origin` for the WebSocket handshake.
    pub cors: Cors,
    /// `webhook_disable_auth`.
    pub webhook_disable_auth: bool,
}

impl Reloadable {
    /// The keys of `config`'s `rest_tornado:` block (defaults without one).
    pub fn new(config: &Config) -> Self {
        let Some(t) = &config.tornado else {
            return Self::default();
        };
        Self {
            cors_origin: t.cors_origin.clone(),
            cors: Cors::new(t.cors_origin.as_ref()),
            webhook_disable_auth: t.webhook_disable_auth,
        }
    }
}

/// The rest_tornado routes.
pub fn router(state: AppState) -> Router {
    let websockets = state.config.tornado.as_ref().is_some_and(|t| t.websockets);
    let streams = axum::middleware::from_fn(limits::stream_budget);
    let mut routes = Router::new()
        .route("/", get(welcome).post(root).options(preflight))
        .route("/login", get(login_info).post(login).options(preflight))
        .route(
            "/minions",
            get(minions).post(minions_post).options(preflight),
        )
        .route("/minions/", get(minions).post(minions_post))
        .route("/minions/{*mid}", get(minions))
        .route("/jobs", get(jobs).post(root).options(preflight))
        .route("/jobs/", get(jobs).post(root))
        .route("/jobs/{*jid}", get(jobs))
        .route("/run", get(welcome).post(run).options(preflight))
        .route(
            "/events",
            get(events)
                .route_layer(streams.clone())
                .post(root)
                .options(preflight),
        )
        // rest_tornado's hook handler fails (500) on GET: saltgate answers 405.
        .route("/hook", post(hook).options(preflight))
        .route("/hook/", post(hook))
        .route("/hook/{*path}", post(hook));
    if websockets {
        routes = routes
            .route(
                "/all_events/{token}",
                get(socket::<false>).route_layer(streams.clone()),
            )
            .route(
                "/formatted_events/{token}",
                get(socket::<true>).route_layer(streams),
            );
    }
    routes
        .route_layer(axum::middleware::from_fn(metrics::label_route))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Frame::with_csrf(&state),
            frame,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.live),
            cors,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(error::respond))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// rest_tornado's CORS (`set_default_headers`): `Access-Control-Allow-Origin` on every answer
/// whose `Origin` `cors_origin` allows, never credentials.
async fn cors(State(live): State<Arc<Live>>, request: Request, next: Next) -> Response {
    let allowed = {
        let snapshot = live.load();
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        match (origin, &snapshot.tornado.cors_origin) {
            (Some(origin), Some(allowed)) => allowed_origin(origin, allowed),
            _ => None,
        }
    };
    let mut response = next.run(request).await;
    if let Some(v) = allowed.and_then(|o| HeaderValue::from_str(&o).ok()) {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    response
}

/// rest_tornado's `_check_cors_origin`: a list allows its members, `"*"` allows anyone (and is
/// what is sent back), one origin allows itself.
pub fn allowed_origin(origin: &str, allowed: &CorsOrigin) -> Option<String> {
    match allowed {
        CorsOrigin::Many(list) => list.iter().any(|o| o == origin).then(|| origin.to_owned()),
        CorsOrigin::One(one) if one == "*" || one == origin => Some(one.clone()),
        CorsOrigin::One(_) => None,
    }
}

/// `OPTIONS` on any route (rest_tornado's `options`): 204, the requested headers allowed.
async fn preflight(headers: HeaderMap) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Auth-Token"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, GET, POST"),
    );
    r
}

/// `GET /` (and the routes whose handler inherits it): the clients and `Welcome`.
async fn welcome(Negotiated(format): Negotiated) -> Response {
    render_body(
        StatusCode::OK,
        format,
        &json!({"clients": CLIENTS, "return": "Welcome"}),
    )
}

/// `GET /login`: 401, as rest_tornado answers it.
async fn login_info(Negotiated(format): Negotiated) -> Response {
    let mut r = render_body(
        StatusCode::UNAUTHORIZED,
        format,
        &json!({"status": "401 Unauthorized", "return": "Please log in"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Session"),
    );
    r
}

/// `POST /login`: a credentials map missing a field is 400, as rest_tornado refuses it.
async fn login(
    State(app): State<Arc<App>>,
    Negotiated(format): Negotiated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rules = LoginRules {
        body_cap: body_cap(&app),
        incomplete_is_bad_request: true,
    };
    login_answer(&app, format, &headers, body, rules).await
}

/// The redirect of a request that needs a session and has none.
fn to_login() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    r
}

/// Whether `e` says the request's session token is missing or not (any longer) valid: what
/// rest_tornado answers with a redirect to `/login`.
fn unauthenticated(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Unauthorized(_) | ApiError::Salt(SaltError::AuthRefused(_))
    )
}

/// The session's caller, confirmed by the master; `Err(redirect)` when there is none.
async fn session(
    app: &App,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Result<Caller, Response>, ApiError> {
    let Ok(caller) = caller else {
        return Ok(Err(to_login()));
    };
    match caller.confirm(app.master()?).await {
        Ok(_) => Ok(Ok(caller)),
        Err(e) if unauthenticated(&e) => Ok(Err(to_login())),
        Err(e) => Err(e),
    }
}

fn body_cap(app: &App) -> u64 {
    app.config
        .tornado
        .as_ref()
        .map_or(app.config.api.max_request_body_size, |t| {
            t.max_request_body_size
        })
}

/// The request's lowstate, as rest_tornado reads it: JSON, YAML, form or JSON sent as
/// `text/plain` (406 for any other type); a single map is one chunk, and a chunk's `arg` that is
/// not a list is made one.
async fn lowstate(app: &App, headers: &HeaderMap, body: Body) -> Result<Vec<Value>, ApiError> {
    let raw = read_capped(headers, body, body_cap(app)).await?;
    if raw.is_empty() {
        return Err(ApiError::BadLowstate(
            "an empty body is not a lowstate".into(),
        ));
    }
    let media = media_type(headers).unwrap_or_default();
    if !matches!(
        media.as_str(),
        "application/json"
            | "application/x-yaml"
            | "text/yaml"
            | "text/plain"
            | "application/x-www-form-urlencoded"
    ) {
        return Err(ApiError::UnsupportedMedia);
    }
    if media == "text/plain" {
        // rest_tornado reads text/plain as JSON and nothing else.
        crate::api::body::parse_json(&raw)?;
    }
    let chunks = match parse_async(headers, &raw).await? {
        Value::Array(chunks) => chunks,
        one => vec![one],
    };
    Ok(chunks
        .into_iter()
        .map(|chunk| match chunk {
            Value::Object(mut low) => {
                if let Some(arg) = low.get_mut("arg") {
                    if !arg.is_array() {
                        *arg = Value::Array(vec![arg.take()]);
                    }
                }
                Value::Object(low)
            }
            other => other,
        })
        .collect())
}

/// Runs `chunks` as rest_tornado's `disbatch`: every chunk's client is checked first (400), then
/// each runs with its own credentials (the session `token` fills in for a chunk without one);
/// see the module doc for what a failing chunk answers.
async fn disbatch(
    app: &App,
    background: &Background,
    token: Option<&str>,
    chunks: Vec<Value>,
    format: Format,
) -> Result<Response, ApiError> {
    let enabled = &app.config.master.netapi_enable_clients;
    for chunk in &chunks {
        let Some(name) = chunk.get("client").and_then(Value::as_str) else {
            return Err(ApiError::BadLowstate(INVALID_CLIENT.into()));
        };
        if !CLIENTS.contains(&name) {
            return Err(ApiError::BadLowstate(INVALID_CLIENT.into()));
        }
        let served = Client::ALL.iter().find(|(n, _)| *n == name);
        if !served.is_some_and(|(_, c)| c.enabled_in(enabled)) {
            return Err(ApiError::ClientDisabled(format!(
                "Client disabled: '{name}'. Add to 'netapi_enable_clients' master config option to enable."
            )));
        }
    }
    let mut ret = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let Value::Object(mut low) = chunk else {
            return Err(ApiError::BadLowstate("a chunk must be a map".into()));
        };
        if let Some(token) = token {
            low.entry("token")
                .or_insert_with(|| Value::String(token.to_owned()));
        }
        let has = |k: &str| low.contains_key(k);
        if !(has("token") || (has("username") && has("password") && has("eauth"))) {
            ret.push(Value::String(FAILED_AUTH.to_owned()));
            break;
        }
        let one = Value::Array(vec![Value::Object(low)]);
        match run_lowstate(app, background, None, one, None, SHAPES).await {
            Ok(mut results) => ret.push(results.pop().unwrap_or(Value::Null)),
            Err(e) => match chunk_failure(e) {
                Failure::Auth => {
                    ret.push(Value::String(FAILED_AUTH.to_owned()));
                    break;
                }
                Failure::Other(message) => ret.push(Value::String(format!(
                    "Unexpected exception while handling request: {message}"
                ))),
                Failure::Refused(e) => return Err(e),
            },
        }
    }
    Ok(render_body(
        StatusCode::OK,
        format,
        &json!({ "return": ret }),
    ))
}

/// How one chunk's failure is answered.
enum Failure {
    /// It failed to authenticate (or was not authorized): the run ends.
    Auth,
    /// It failed otherwise: its message in its place.
    Other(String),
    /// saltgate's own bounds and checks (throttle, a disabled client, a malformed chunk, no
    /// master): the whole request is refused with its status.
    Refused(ApiError),
}

fn chunk_failure(e: ApiError) -> Failure {
    let inner = match e {
        ApiError::Chunk { error, .. } => *error,
        other => other,
    };
    match inner {
        ApiError::Unauthorized(_)
        | ApiError::NotAuthorized
        | ApiError::AclRefused(_)
        | ApiError::Salt(SaltError::AuthRefused(_) | SaltError::NotAuthorized(_)) => Failure::Auth,
        ApiError::Salt(SaltError::Master(_) | SaltError::Timeout(_)) | ApiError::Timeout => {
            Failure::Other(inner.message())
        }
        other => Failure::Refused(other),
    }
}

/// `POST /` (and `/jobs`, `/events`): a lowstate for the session.
async fn root(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = (format, caller, headers, body);
    for_session(&app, &background, request, |_| Ok(())).await
}

/// `POST /minions`: a lowstate of `local_async` chunks (a chunk without `client` is one; any
/// other client is refused with rest_tornado's words).
async fn minions_post(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = (format, caller, headers, body);
    for_session(&app, &background, request, only_local_async).await
}

/// What a lowstate route extracted: the format, the caller, the headers and the body.
type LowstateRequest = (
    Result<Negotiated, NotAcceptable>,
    Result<Caller, Unauthenticated>,
    HeaderMap,
    Body,
);

/// A lowstate for the session (redirected to `/login` without one), its chunks checked by
/// `check` first.
async fn for_session(
    app: &App,
    background: &Background,
    (format, caller, headers, body): LowstateRequest,
    check: fn(&mut [Value]) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let Negotiated(format) = format?;
    let caller = match session(app, caller).await? {
        Ok(caller) => caller,
        Err(redirect) => return Ok(redirect),
    };
    let mut chunks = lowstate(app, &headers, body).await?;
    check(&mut chunks)?;
    disbatch(app, background, Some(caller.token()), chunks, format).await
}

/// `POST /minions`'s rule: no client is `local_async`, and no other is served.
fn only_local_async(chunks: &mut [Value]) -> Result<(), ApiError> {
    for chunk in chunks {
        let Value::Object(low) = chunk else { continue };
        match low.get("client").and_then(Value::as_str) {
            None => {
                low.insert("client".into(), Value::String("local_async".into()));
            }
            Some("local_async") => {}
            Some(_) => {
                return Err(ApiError::BadLowstate(
                    "We don't serve your kind here".into(),
                ));
            }
        }
    }
    Ok(())
}

/// `POST /run`: a lowstate whose chunks carry their credentials (or the `X-Auth-Token`
/// header's token); no session needed.
async fn run(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    Negotiated(format): Negotiated,
    caller: Result<Caller, Unauthenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let chunks = lowstate(&app, &headers, body).await?;
    let token = caller.ok();
    disbatch(
        &app,
        &background,
        token.as_ref().map(Caller::token),
        chunks,
        format,
    )
    .await
}

/// One session-authenticated chunk of rest_tornado's resource views.
async fn view(
    app: &App,
    background: &Background,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    chunk: Map<String, Value>,
) -> Result<Response, ApiError> {
    let Negotiated(format) = format?;
    let caller = match session(app, caller).await? {
        Ok(caller) => caller,
        Err(redirect) => return Ok(redirect),
    };
    let chunks = vec![Value::Object(chunk)];
    disbatch(app, background, Some(caller.token()), chunks, format).await
}

fn chunk(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

/// `GET /minions` and `GET /minions/<mid>`: `grains.items` on `<mid>` (every minion without
/// one).
async fn minions(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    mid: Option<Path<String>>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    let mid = mid.map(|Path(m)| m).unwrap_or_default();
    let tgt = if mid.is_empty() { "*" } else { mid.as_str() };
    let low = chunk(&[("client", "local"), ("tgt", tgt), ("fun", "grains.items")]);
    view(&app, &background, format, caller, low).await
}

/// `GET /jobs`: the job cache's list; `GET /jobs/<jid>`: the job itself, in `return[0]`.
async fn jobs(
    State(app): State<Arc<App>>,
    State(background): State<Background>,
    jid: Option<Path<String>>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    let jid = jid.map(|Path(j)| j).unwrap_or_default();
    let low = if jid.is_empty() {
        chunk(&[("client", "runner"), ("fun", "jobs.list_jobs")])
    } else {
        chunk(&[
            ("client", "runner"),
            ("fun", "jobs.list_job"),
            ("jid", &jid),
        ])
    };
    view(&app, &background, format, caller, low).await
}

/// `GET /events`: the SSE stream, for a session.
async fn events(
    State(app): State<Arc<App>>,
    query: RawQuery,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(to_login());
    };
    match stream::sse::events(State(app), query, Ok(caller)).await {
        Err(e) if unauthenticated(&e) => Ok(to_login()),
        other => other,
    }
}

/// `GET /all_events/<token>` (`FORMATTED` false) and `GET /formatted_events/<token>`.
async fn socket<const FORMATTED: bool>(
    State(app): State<Arc<App>>,
    State(live): State<Arc<Live>>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
    request: Request,
) -> Result<Response, ApiError> {
    let snapshot = live.load();
    let cors = &snapshot.tornado.cors;
    stream::ws::tornado_socket(app, cors, caller, query, request, FORMATTED).await
}

/// The parts of a hook request the tornado routes extract.
struct HookRequest {
    peer: SocketAddr,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
}

/// `POST /hook` and `POST /hook/<path>`.
#[expect(
    clippy::too_many_arguments,
    reason = "an axum handler: each argument is one extractor"
)]
async fn hook(
    State(app): State<Arc<App>>,
    State(hooks): State<Arc<Hooks>>,
    State(live): State<Arc<Live>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Option<Path<String>>,
    format: Result<Negotiated, NotAcceptable>,
    caller: Result<Caller, Unauthenticated>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = HookRequest {
        peer,
        format,
        caller,
        query,
        headers,
        body,
    };
    let path = path.map(|Path(p)| p).unwrap_or_default();
    fire(&app, &hooks, &live, path, request).await
}

async fn fire(
    app: &App,
    hooks: &Hooks,
    live: &Live,
    path: String,
    request: HookRequest,
) -> Result<Response, ApiError> {
    let set = live.load();
    let delivery = Delivery {
        peer: request.peer,
        path,
        format: request.format,
        caller: request.caller,
        query: request.query,
    };
    let dialect = hook_dialect(set.tornado.webhook_disable_auth);
    let answered = hook::handle(
        app,
        hooks,
        &set.hooks,
        delivery,
        request.headers,
        request.body,
        &dialect,
    )
    .await;
    match answered {
        Err(e) if unauthenticated(&e) => Ok(to_login()),
        other => other,
    }
}

/// rest_tornado's hook `post`: the body by its type. A form is its fields (a repeated field a
/// list, values stripped of surrounding blanks as Tornado's `get_arguments` strips them),
/// together with the query's, as Tornado merges them; JSON and JSON sent as `text/plain` are
/// parsed; anything else is the text, as on rest_cherrypy.
fn parse_post(media: &str, raw: &[u8], query: Option<&str>) -> Result<rmpv::Value, ApiError> {
    if media == "application/x-www-form-urlencoded" {
        let mut fields = arguments(query.unwrap_or_default().as_bytes());
        for (k, v) in arguments(raw) {
            merge(&mut fields, k, v);
        }
        return Ok(crate::salt::from_json(&Value::Object(fields)));
    }
    crate::api::hook::event::parse_media(media, raw)
}

/// Tornado's arguments of a query or form: each name once, a repeated one a list.
fn arguments(raw: &[u8]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(raw) {
        merge(&mut out, k.into_owned(), Value::String(v.trim().to_owned()));
    }
    out
}

fn merge(into: &mut Map<String, Value>, key: String, value: Value) {
    match into.get_mut(&key) {
        None => {
            into.insert(key, value);
        }
        Some(Value::Array(items)) => match value {
            Value::Array(more) => items.extend(more),
            one => items.push(one),
        },
        Some(existing) => {
            let first = existing.take();
            let mut items = vec![first];
            match value {
                Value::Array(more) => items.extend(more),
                one => items.push(one),
            }
            *existing = Value::Array(items);
        }
    }
}

/// rest_tornado's hook event data: `{_stamp, post, get, headers}`. `get` is the query's
/// arguments; `headers` are named as Tornado names them (`X-Github-Event`), a repeated header
/// is its values joined with `,`, and credential and signature headers are left out.
fn event_data(p: EventParts<'_>) -> rmpv::Value {
    use rmpv::Value as Mp;
    let mut headers: Vec<(Mp, Mp)> = Vec::with_capacity(p.headers.keys_len());
    for name in p.headers.keys() {
        if p.hidden.contains(name) {
            continue;
        }
        let joined: Vec<String> = p
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.push((
            Mp::from(tornado_name(name.as_str())),
            Mp::from(joined.join(",")),
        ));
    }
    let get = arguments(p.query.unwrap_or_default().as_bytes());
    Mp::Map(vec![
        (
            Mp::from("_stamp"),
            Mp::from(crate::salt::event::stamp_now()),
        ),
        (Mp::from("post"), p.post),
        (Mp::from("get"), crate::salt::from_json(&Value::Object(get))),
        (Mp::from("headers"), Mp::Map(headers)),
    ])
}

/// Tornado's header names: each `-`-separated word capitalized (`x-2fa` → `X-2fa`, where
/// CherryPy writes `X-2Fa`).
pub fn tornado_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::hook::event::title_case;
    use crate::salt::to_json;

    #[test]
    fn header_names_are_tornados() {
        assert_eq!(tornado_name("x-hub-signature-256"), "X-Hub-Signature-256");
        assert_eq!(tornado_name("x-2fa--code"), "X-2fa--Code");
        assert_eq!(tornado_name("content-md5"), "Content-Md5");
        // Where CherryPy's title case differs.
        assert_ne!(tornado_name("x-2fa"), title_case("x-2fa"));
    }

    #[test]
    fn cors_origins_are_checked_as_rest_tornado_checks_them() {
        let list = CorsOrigin::Many(vec!["https://a.example".into()]);
        assert_eq!(
            allowed_origin("https://a.example", &list).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(allowed_origin("https://b.example", &list), None);
        let any = CorsOrigin::One("*".into());
        assert_eq!(
            allowed_origin("https://b.example", &any).as_deref(),
            Some("*")
        );
        let one = CorsOrigin::One("https://a.example".into());
        assert_eq!(allowed_origin("https://b.example", &one), None);
    }

    #[test]
    fn hook_event_data_is_rest_tornados() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        h.append("x-tag", "one".parse().unwrap());
        h.append("x-tag", "two".parse().unwrap());
        h.insert("x-auth-token", "secret".parse().unwrap());
        let hidden = crate::security::redact::ALWAYS_REDACTED.to_vec();
        let raw = bytes::Bytes::from_static(b"a=1&a=2&b=+x+");
        let post = parse_post(
            "application/x-www-form-urlencoded",
            &raw,
            Some("q=1&q=2&one=y"),
        )
        .unwrap();
        let data = to_json(&event_data(EventParts {
            client: "10.0.0.1".parse().unwrap(),
            headers: &h,
            hidden: &hidden,
            post,
            raw: &raw,
            query: Some("q=1&q=2&one=y"),
        }));
        assert_eq!(data["get"], json!({"q": ["1", "2"], "one": "y"}));
        assert_eq!(
            data["post"],
            json!({"q": ["1", "2"], "one": "y", "a": ["1", "2"], "b": "x"})
        );
        assert_eq!(data["headers"]["X-Tag"], "one,two");
        assert!(data["headers"].get("X-Auth-Token").is_none());
        assert!(data.get("body").is_none());
        assert_eq!(data["_stamp"].as_str().unwrap().len(), 26);
        // JSON bodies as on every dialect.
        let post = parse_post("application/json", br#"{"k": [1]}"#, None).unwrap();
        assert_eq!(to_json(&post), json!({"k": [1]}));
    }

    #[test]
    fn chunk_failures_are_sorted_as_rest_tornado_sorts_them() {
        let auth = ApiError::Chunk {
            index: 0,
            error: Box::new(ApiError::Salt(SaltError::AuthRefused("x".into()))),
        };
        assert!(matches!(chunk_failure(auth), Failure::Auth));
        assert!(matches!(
            chunk_failure(ApiError::Salt(SaltError::Master("boom".into()))),
            Failure::Other(_)
        ));
        assert!(matches!(
            chunk_failure(ApiError::RateLimited(3)),
            Failure::Refused(ApiError::RateLimited(3))
        ));
        assert!(matches!(
            chunk_failure(ApiError::ClientDisabled("x".into())),
            Failure::Refused(_)
        ));
    }
}

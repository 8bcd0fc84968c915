//! WebSocket event streams: rest_cherrypy's `/ws` and `/ws/<token>` (raw, or formatted with
//! `?format_events`), rest_tornado's `/all_events/<token>` and `/formatted_events/<token>`.
//!
//! As salt-api: nothing is sent until the client sends `websocket client ready`. `/ws` sends each
//! event as the text frame `data: {"data": …, "tag": …}\n\n` and answers every client message
//! with `server received message`; `/all_events` sends the bare JSON and answers nothing, as
//! rest_tornado. Lag and bus state notices, the token recheck and the `?tag=` filter are those of
//! `/events` (see [`crate::api::stream`]); keep-alives are pings.
//!
//! The formatted views (`/ws?format_events`, `/formatted_events`) fold the bus into a jobs view and
//! a minions view ([`crate::api::stream::digest`], which lists the differences from Salt's `SaltInfo`) and send
//! the whole view after each change. Notices keep their `{"data": …, "tag": "saltgate/stream/…"}`
//! shape there (with the view's framing: bare JSON, or JSON and `"\n\n"` for rest_tornado), so
//! a client that looks for the `jobs` and `minions` keys skips them. `grains.items` runs as Salt
//! runs it: on `*` when a `/formatted_events` client is ready, and on minions that arrive in
//! `salt/presence` events, always with the caller's own token (the master applies the caller's
//! ACL) and only when `local` or `local_async` is in `netapi_enable_clients`. Unlike Salt, it is
//! published without waiting for returns (rest_tornado blocks its whole server while the job
//! runs, and its lossy listener may drop the returns that came meanwhile); the returns reach the
//! view through the bus like any job's, and runs are coalesced, one at a time per socket. A run that cannot be made (no
//! token under `streams_disable_auth`, no master, client disabled, refused by the master) is
//! reported as the notice `saltgate/stream/grains_failed` with `{"tgt", "reason"}` and the view
//! goes on without those grains. Events already waiting when one arrives are folded in with it
//! and sent as one snapshot per view, so a burst (the returns of `grains.items` on a large fleet)
//! does not serialise the whole view once per event.
//!
//! Differences from salt-api, on purpose: a browser `Origin` that is not this server's own host
//! is refused with 403, since the session cookie would otherwise let any web page read the bus
//! (rest_tornado checks origins too; rest_cherrypy does not), unless `cors_origin` lists it
//! (or is `*`) and the token is in the path (`/ws/<token>`, `/all_events/<token>`, ...): a
//! listed origin never rides on the cookie. A refused handshake gets an
//! `ApiError`-shaped body (`bad_upgrade`). The socket loop is generic over `Sink`/`Stream`.
//!
//! Memory per subscriber: an event's frames are parts of its one shared rendering (see
//! [`crate::api::stream`]), sent as fragments of at most [`FRAGMENT`] bytes, each written out before
//! the next is handed over, so a reader that stops reading holds one fragment's copy, not the
//! event's. The handshake is answered here and the upgraded connection driven directly (axum's
//! socket type cannot send fragments). A subscriber that has not taken one item (an event, a
//! snapshot) within `saltgate.stream_write_timeout_secs` is dropped: it was told of nothing it
//! could not read, and the shared event it pinned is released.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use rmpv::Value;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::digest::{Dialect, Digest, Limits, MAX_MINIONS};
use super::pyjson::salt_json;
use super::record::{data_part, json_part, sse_record};
use super::{Feed, FeedItem, TagFilter, notice};
use crate::api::auth::{Authorized, Caller, Unauthenticated, authorize_stream};
use crate::api::cors::Cors;
use crate::api::error::ApiError;
use crate::api::live::Live;
use crate::api::metrics::StreamKind;
use crate::api::netapi::Client;
use crate::api::state::App;
use crate::salt::Event;
use crate::salt::bus::Published;
use crate::salt::channel::{Auth, PublishRequest};

/// What the client must send before events flow.
pub const READY: &str = "websocket client ready";
/// The answer to every client message on rest_cherrypy's `/ws`.
pub const ACK: &str = "server received message";
/// Tag of the notice sent when a `grains.items` run for the minions view could not be made.
pub const GRAINS_FAILED_TAG: &str = "saltgate/stream/grains_failed";

/// Events folded into one snapshot at most, so a steady flood still gets snapshots out.
const BURST: usize = 512;

/// The largest frame sent: longer messages go out as fragments (RFC 6455 §5.4), each written
/// before the next is handed to the socket, so a reader that stops reading holds at most one
/// fragment's copy in the socket's write buffer, whatever the event size.
pub const FRAGMENT: usize = crate::salt::bus::ring::CHUNK;

/// The largest message a client may send (they send `websocket client ready` and little else).
const MAX_CLIENT_MESSAGE: usize = 64 << 10;

/// A text message as frames of at most [`FRAGMENT`] bytes, sharing `text`'s buffer. `text` must
/// be UTF-8 as a whole (fragments may split a character, as the RFC allows).
pub fn text_frames(text: Bytes) -> Vec<Message> {
    let parts = (0..text.len().div_ceil(FRAGMENT).max(1))
        .map(|i| text.slice((i * FRAGMENT).min(text.len())..((i + 1) * FRAGMENT).min(text.len())))
        .collect();
    message_frames(parts)
}

/// One text message made of `parts` (each at most [`FRAGMENT`] bytes), a frame per part.
pub fn message_frames(parts: Vec<Bytes>) -> Vec<Message> {
    let count = parts.len().max(1);
    if parts.is_empty() {
        return vec![Message::Frame(Frame::message(
            Bytes::new(),
            OpCode::Data(Data::Text),
            true,
        ))];
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            Message::Frame(Frame::message(part, OpCode::Data(opcode), i + 1 == count))
        })
        .collect()
}

/// How events are written into text frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// rest_cherrypy `/ws`: `data: <json>\n\n`.
    Cherrypy,
    /// rest_tornado `/all_events`: the bare JSON.
    Tornado,
    /// The formatted views: `/ws?format_events` and `/formatted_events`.
    Digest(Dialect),
}

impl Framing {
    /// A bus event's frames, parts of its shared rendering (the raw framings only).
    fn shared_frames(self, published: &Published) -> Vec<Message> {
        let record = published.rendered(sse_record);
        message_frames(match self {
            Self::Cherrypy => data_part(record),
            Self::Tornado | Self::Digest(_) => json_part(record),
        })
    }

    /// An event or notice as a text frame.
    fn event_text(self, event: &Event) -> String {
        let json = salt_json(event);
        match self {
            Self::Cherrypy => format!("data: {json}\n\n"),
            Self::Tornado => json,
            Self::Digest(dialect) => dialect.frame(json),
        }
    }

    /// rest_cherrypy answers every client message; rest_tornado answers none.
    fn acks(self) -> bool {
        matches!(self, Self::Cherrypy | Self::Digest(Dialect::Cherrypy))
    }
}

/// `GET /ws`: token from `X-Auth-Token` or the `session_id` cookie.
pub async fn ws_root(
    State(app): State<Arc<App>>,
    State(live): State<Arc<Live>>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
    request: Request,
) -> Result<Response, ApiError> {
    let (framing, query) = cherrypy_framing(query.as_deref());
    let cors = live.load();
    open(app, &cors.cors, caller, query, request, framing, false).await
}

/// `GET /ws/<token>`: the token in the path is the caller's ([`Caller`] reads it there).
pub async fn ws_token(
    State(app): State<Arc<App>>,
    State(live): State<Arc<Live>>,
    Path(_token): Path<String>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
    request: Request,
) -> Result<Response, ApiError> {
    let (framing, query) = cherrypy_framing(query.as_deref());
    let cors = live.load();
    open(app, &cors.cors, caller, query, request, framing, true).await
}

/// `GET /all_events/<token>` (rest_tornado).
pub async fn all_events(
    State(app): State<Arc<App>>,
    State(live): State<Arc<Live>>,
    Path(_token): Path<String>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
    request: Request,
) -> Result<Response, ApiError> {
    let cors = live.load();
    open(
        app,
        &cors.cors,
        caller,
        query,
        request,
        Framing::Tornado,
        true,
    )
    .await
}

/// `GET /formatted_events/<token>` (rest_tornado).
pub async fn formatted_events(
    State(app): State<Arc<App>>,
    State(live): State<Arc<Live>>,
    Path(_token): Path<String>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
    request: Request,
) -> Result<Response, ApiError> {
    let framing = Framing::Digest(Dialect::Tornado);
    let cors = live.load();
    open(app, &cors.cors, caller, query, request, framing, true).await
}

/// rest_tornado's `/all_events/<token>` (`formatted: false`) or `/formatted_events/<token>` on
/// its own listener, whose `cors_origin` is `cors` (rest_tornado's block).
pub async fn tornado_socket(
    app: Arc<App>,
    cors: &Cors,
    caller: Result<Caller, Unauthenticated>,
    query: Option<String>,
    request: Request,
    formatted: bool,
) -> Result<Response, ApiError> {
    let framing = if formatted {
        Framing::Digest(Dialect::Tornado)
    } else {
        Framing::Tornado
    };
    open(app, cors, caller, query, request, framing, true).await
}

/// rest_cherrypy formats events when `format_events` is in the query, whatever its value. The
/// flag is taken out; the rest of the query is left for [`TagFilter`].
fn cherrypy_framing(query: Option<&str>) -> (Framing, Option<String>) {
    let Some(query) = query else {
        return (Framing::Cherrypy, None);
    };
    let mut formatted = false;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let flag = pair.split('=').next() == Some("format_events");
            formatted |= flag;
            !flag
        })
        .collect();
    let framing = if formatted {
        Framing::Digest(Dialect::Cherrypy)
    } else {
        Framing::Cherrypy
    };
    (framing, Some(rest.join("&")))
}

async fn open(
    app: Arc<App>,
    cors: &Cors,
    caller: Result<Caller, Unauthenticated>,
    query: Option<String>,
    mut request: Request,
    framing: Framing,
    token_in_path: bool,
) -> Result<Response, ApiError> {
    let filter = TagFilter::from_query(query.as_deref())?;
    if !origin_allowed(&app, cors, request.headers(), token_in_path) {
        return Err(ApiError::OriginNotAllowed);
    }
    let auth = authorize_stream(&app, caller).await?;
    let accept = handshake(&mut request)
        .map_err(|(status, message)| ApiError::BadUpgrade(status, message))?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_write_buffer_size(4 * FRAGMENT)
            .max_message_size(Some(MAX_CLIENT_MESSAGE))
            .max_frame_size(Some(MAX_CLIENT_MESSAGE));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run_socket(socket, app, filter, auth, framing).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Checks an HTTP/1.1 WebSocket handshake (RFC 6455 §4.2.1); the `Sec-WebSocket-Accept` value,
/// or the status and reason of the refusal.
fn handshake(request: &mut Request) -> Result<HeaderValue, (StatusCode, &'static str)> {
    if request.method() != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "A WebSocket handshake is a GET",
        ));
    }
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        ));
    }
    if !has_token(header::UPGRADE, "websocket") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Upgrade header did not include 'websocket'",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version header did not include '13'",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing"));
    };
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key header is invalid",
        )
    })?;
    if request
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "This connection cannot be upgraded to a WebSocket",
        ));
    }
    Ok(accept)
}

/// A browser's `Origin` may open a stream when it names this server (see [`same_origin`]), or
/// when `rest_cherrypy: cors_origin` lists it (or is `*`) and the stream does not rest on the
/// session cookie: the token is in the path, or streams need none. CORS here never grants
/// credentials, so a listed origin is never authenticated by the cookie.
fn origin_allowed(app: &App, cors: &Cors, headers: &HeaderMap, token_in_path: bool) -> bool {
    if same_origin(headers) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    cors.lists(origin) && (token_in_path || app.config.saltgate.streams_disable_auth)
}

/// A browser's `Origin` must name the host it connected to; clients without one pass. The same
/// check as for cookie-authenticated POSTs ([`crate::api::csrf::same_origin`]); a WebSocket
/// handshake is an HTTP/1.1 GET, so `Host` names the server.
fn same_origin(headers: &HeaderMap) -> bool {
    crate::api::csrf::same_origin(headers, &http::Uri::default())
}

/// The socket loop: answers client messages, and once the client is ready, sends the stream.
/// Ends on close, on a send error, when the feed ends (shutdown, expired token), on shutdown, or
/// when one item (an event's frames, a snapshot) is not written within
/// `saltgate.stream_write_timeout_secs`: a reader that stopped reading is dropped rather than
/// kept with the event it pins.
pub async fn run_socket<S, E>(
    socket: S,
    app: Arc<App>,
    filter: TagFilter,
    auth: Authorized,
    framing: Framing,
) where
    S: Sink<Message, Error = E> + Stream<Item = Result<Message, E>> + Send,
    E: std::fmt::Display,
{
    let (mut tx, mut rx) = socket.split();
    let shutdown = app.shutdown.clone();
    let write_timeout = Duration::from_secs(app.config.saltgate.stream_write_timeout_secs.max(1));
    let mut parts = Some((app, filter, auth));
    let mut stream: Option<Streaming> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tx.send(Message::Close(None)).await;
                break;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if stream.is_none() && text.as_str().contains(READY) {
                        if let Some((app, filter, auth)) = parts.take() {
                            stream = Some(Streaming::start(app, filter, auth, framing));
                        }
                    }
                    if framing.acks() && tx.send(Message::Text(ACK.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket read failed");
                    break;
                }
            },
            frames = next_frames(&mut stream), if stream.is_some() => {
                let Some(frames) = frames else {
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                };
                match tokio::time::timeout(write_timeout, send_all(&mut tx, frames)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(
                            timeout_secs = write_timeout.as_secs(),
                            "WebSocket subscriber dropped: it did not take an event in time"
                        );
                        break;
                    }
                }
            }
        }
    }
}

async fn send_all<T, E>(tx: &mut T, frames: Vec<Message>) -> Result<(), E>
where
    T: Sink<Message, Error = E> + Unpin,
{
    for frame in frames {
        tx.send(frame).await?;
    }
    Ok(())
}

async fn next_frames(stream: &mut Option<Streaming>) -> Option<Vec<Message>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// A ready client's stream: the feed, and for the formatted views their state.
struct Streaming {
    feed: Feed,
    framing: Framing,
    views: Option<Views>,
    /// An item read while folding a burst, to handle next; `Some(None)`: the feed ended.
    held: Option<Option<FeedItem>>,
}

struct Views {
    digest: Digest,
    grains: GrainsRuns,
}

impl Streaming {
    /// Subscribes now; a rest_tornado formatted view also asks every minion for its grains.
    fn start(app: Arc<App>, filter: TagFilter, auth: Authorized, framing: Framing) -> Self {
        let feed = Feed::new(Arc::clone(&app), filter, auth.clone(), StreamKind::Ws);
        let views = match framing {
            Framing::Digest(dialect) => {
                let mut grains = GrainsRuns::new(app, auth);
                if dialect == Dialect::Tornado {
                    grains.request(Target::All);
                }
                Some(Views {
                    digest: Digest::new(dialect, Limits::default()),
                    grains,
                })
            }
            Framing::Cherrypy | Framing::Tornado => None,
        };
        Self {
            feed,
            framing,
            views,
            held: None,
        }
    }

    /// The next frames to send; `None` ends the socket.
    async fn next(&mut self) -> Option<Vec<Message>> {
        loop {
            let item = match self.held.take() {
                Some(held) => held?,
                None => match &mut self.views {
                    Some(views) if views.grains.busy() => {
                        tokio::select! {
                            item = self.feed.next() => item?,
                            failed = views.grains.finished() => match failed {
                                Some(notice) => {
                                    return Some(self.text(&notice));
                                }
                                None => continue,
                            },
                        }
                    }
                    _ => self.feed.next().await?,
                },
            };
            let published = match item {
                FeedItem::KeepAlive => return Some(vec![Message::Ping(Bytes::new())]),
                FeedItem::Notice(ev) => return Some(self.text(&ev)),
                FeedItem::Event(ev) => ev,
            };
            let Some(views) = &mut self.views else {
                self.feed.sent();
                return Some(self.framing.shared_frames(&published));
            };
            let mut changes = views.digest.apply(&published.event);
            for _ in 0..BURST {
                match self.feed.next().now_or_never() {
                    Some(Some(FeedItem::Event(ev))) => {
                        changes.merge(views.digest.apply(&ev.event));
                    }
                    Some(other) => {
                        self.held = Some(other);
                        break;
                    }
                    None => break,
                }
            }
            if let Some(target) = Target::list(std::mem::take(&mut changes.grains_for)) {
                views.grains.request(target);
            }
            let views = views.digest.frames(&changes);
            if !views.is_empty() {
                let mut frames = Vec::new();
                for view in views {
                    self.feed.sent();
                    frames.extend(text_frames(Bytes::from(view)));
                }
                return Some(frames);
            }
        }
    }

    fn text(&self, event: &Event) -> Vec<Message> {
        text_frames(Bytes::from(self.framing.event_text(event)))
    }
}

/// Which minions a `grains.items` run targets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    All,
    List(Vec<String>),
}

impl Target {
    fn list(minions: Vec<String>) -> Option<Self> {
        (!minions.is_empty()).then_some(Self::List(minions))
    }

    /// One target covering both, within [`MAX_MINIONS`] ids.
    fn merge(self, other: Self) -> Self {
        match (self, other) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::List(mut a), Self::List(b)) => {
                for mid in b {
                    if a.len() >= MAX_MINIONS {
                        tracing::debug!("Formatted events: too many minions waiting for grains");
                        break;
                    }
                    if !a.contains(&mid) {
                        a.push(mid);
                    }
                }
                Self::List(a)
            }
        }
    }

    fn tgt(&self) -> Value {
        match self {
            Self::All => Value::from("*"),
            Self::List(l) => Value::Array(l.iter().map(|m| Value::from(m.as_str())).collect()),
        }
    }
}

/// The `grains.items` runs of one socket: one at a time, later requests merged into one.
/// Dropped with the socket, which aborts a run in flight.
struct GrainsRuns {
    app: Arc<App>,
    auth: Authorized,
    pending: Option<Target>,
    running: JoinSet<Option<Event>>,
}

impl GrainsRuns {
    fn new(app: Arc<App>, auth: Authorized) -> Self {
        Self {
            app,
            auth,
            pending: None,
            running: JoinSet::new(),
        }
    }

    fn request(&mut self, target: Target) {
        self.pending = Some(match self.pending.take() {
            Some(pending) => pending.merge(target),
            None => target,
        });
        self.start();
    }

    fn start(&mut self) {
        if self.running.is_empty() {
            if let Some(target) = self.pending.take() {
                let run = run_grains(Arc::clone(&self.app), self.auth.clone(), target);
                self.running.spawn(run);
            }
        }
    }

    fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Waits for the run in flight; its failure notice, if any. Starts the next run.
    async fn finished(&mut self) -> Option<Event> {
        let done = self.running.join_next().await;
        self.start();
        done?.ok().flatten()
    }
}

/// Publishes `grains.items` with the caller's token without waiting for returns; a notice when
/// that cannot be done.
async fn run_grains(app: Arc<App>, auth: Authorized, target: Target) -> Option<Event> {
    let failed = |reason: &str| {
        tracing::info!(reason, "Formatted events: grains.items was not run");
        Some(notice(
            GRAINS_FAILED_TAG,
            vec![("tgt", target.tgt()), ("reason", Value::from(reason))],
        ))
    };
    let Authorized::Token(token) = &auth else {
        return failed("no_token");
    };
    let Some(salt) = &app.salt else {
        return failed("no_master");
    };
    let enabled = &app.config.master.netapi_enable_clients;
    if !Client::Local.enabled_in(enabled) && !Client::LocalAsync.enabled_in(enabled) {
        return failed("client_disabled");
    }
    let mut req = PublishRequest::new(target.tgt(), "grains.items");
    if matches!(target, Target::List(_)) {
        req.tgt_type = "list".into();
    }
    match salt.local_async(req, &Auth::Token(token.clone())).await {
        Ok(published) if published.error.is_none() => None,
        Ok(_) => failed("master_error"),
        Err(e) => failed(e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, "salt.example:8000".parse().unwrap());
        h.insert(header::ORIGIN, "https://salt.example:8000".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn frames_follow_each_api() {
        let ev = Event::new("a", Value::Map(vec![]));
        let json = r#"{"data": {}, "tag": "a"}"#;
        assert_eq!(
            Framing::Cherrypy.event_text(&ev),
            format!("data: {json}\n\n")
        );
        assert_eq!(Framing::Tornado.event_text(&ev), json);
        assert_eq!(Framing::Digest(Dialect::Cherrypy).event_text(&ev), json);
        assert_eq!(
            Framing::Digest(Dialect::Tornado).event_text(&ev),
            format!("{json}\n\n")
        );
    }

    #[test]
    fn long_messages_go_out_as_fragments() {
        let text = Bytes::from("é".repeat(FRAGMENT));
        let frames = text_frames(text.clone());
        assert_eq!(frames.len(), 2);
        let mut joined = Vec::new();
        for (i, frame) in frames.into_iter().enumerate() {
            let Message::Frame(f) = frame else {
                panic!("not a frame");
            };
            let header = f.header();
            assert_eq!(header.is_final, i == 1);
            let want = if i == 0 { Data::Text } else { Data::Continue };
            assert_eq!(header.opcode, OpCode::Data(want));
            assert!(f.payload().len() <= FRAGMENT);
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, text);
        assert_eq!(text_frames(Bytes::from_static(b"short")).len(), 1);
        assert_eq!(text_frames(Bytes::new()).len(), 1);
    }

    #[test]
    fn format_events_is_a_flag_taken_out_of_the_query() {
        assert_eq!(cherrypy_framing(None), (Framing::Cherrypy, None));
        assert_eq!(
            cherrypy_framing(Some("tag=salt/")),
            (Framing::Cherrypy, Some("tag=salt/".into()))
        );
        let digest = Framing::Digest(Dialect::Cherrypy);
        assert_eq!(
            cherrypy_framing(Some("format_events")),
            (digest, Some(String::new()))
        );
        assert_eq!(
            cherrypy_framing(Some("format_events=0&tag=salt/job/")),
            (digest, Some("tag=salt/job/".into()))
        );
        assert_eq!(
            cherrypy_framing(Some("format_eventsx")),
            (Framing::Cherrypy, Some("format_eventsx".into()))
        );
    }

    #[test]
    fn grains_targets_merge_within_bounds() {
        let list = |m: &[&str]| Target::List(m.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(list(&["a"]).merge(list(&["b", "a"])), list(&["a", "b"]));
        assert_eq!(list(&["a"]).merge(Target::All), Target::All);
        assert_eq!(Target::list(Vec::new()), None);
        assert_eq!(
            list(&["a", "b"]).tgt(),
            Value::Array(vec!["a".into(), "b".into()])
        );
        assert_eq!(Target::All.tgt(), Value::from("*"));
    }
}

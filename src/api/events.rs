//! `GET /events`: the event bus as Server-Sent Events, in salt-api's framing.
//!
//! The first chunk is `retry: 400\n` (no blank line, as salt-api), then per event
//! `tag: <tag>\ndata: {"data": <data>, "tag": <tag>}\n\n` with the JSON written as Python's
//! `json.dumps` writes it (`", "` and `": "` separators, non-ASCII unescaped, keys in bus order).
//!
//! Differences from salt-api, on purpose:
//! - a subscriber that falls behind gets the event `saltgate/stream/lagged` with
//!   `{"missed": N}` and the stream goes on; a lost or restored master bus is announced as
//!   `saltgate/stream/bus_disconnected` / `saltgate/stream/bus_connected`. These use the same
//!   `tag:`/`data:` framing, so salt-api clients parse them like any event, and they are sent
//!   whatever the tag filter.
//! - `: keep-alive` comments every `saltgate.stream_keepalive_secs` (SSE parsers ignore them), so
//!   proxies do not cut an idle stream. The token is rechecked on the same tick, not per event;
//!   when it has expired or was revoked (`POST /logout`) the stream sends the notice
//!   `saltgate/stream/token_invalid` and ends (salt-api sends one more event after a logout and
//!   then ends with no word).
//! - `?tag=<prefix>` (repeatable) keeps only events whose tag starts with one of the prefixes.
//!   Any other query parameter is refused with 400, and `?token=`/`?salt_token=` are refused
//!   with a message saying why (salt-api 3007.x refuses them too: URLs end up in access logs).
//! - a CR or LF inside a tag is written as `\r`/`\n` on the `tag:` line, so a tag cannot
//!   forge SSE fields.
//! - refusals are `ApiError` bodies (JSON/YAML) rather than CherryPy HTML pages.
//!
//! Memory per subscriber: the bus queue is bounded in events and bytes (`saltgate.event_queue`,
//! `saltgate.event_queue_bytes`) and shared by all subscribers; each event is rendered once
//! ([`sse_event`], kept with the event on the bus) and every stream sends that same buffer, or a
//! part of it (the WebSocket framings), without copying. The body is a pull stream: hyper asks
//! for the next chunk only when its write buffer has room, so a reader that stops reading makes
//! this subscriber lag, not grow; it holds the few shared renderings hyper had queued for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rmpv::Value;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, render_body};
use super::extract::session_token;
use super::metrics::{StreamKind, SubscriberGuard};
use super::negotiate::{Format, response_format};
use super::state::{App, AppState};
use crate::salt::bus::{Chunked, Published, Received};
use crate::salt::event::stamp_now;
use crate::salt::wire::payload::MAX_KEY_NESTING;
use crate::salt::{BusItem, Event, Subscription};

/// Tag of the notice sent when a subscriber missed events.
pub const LAGGED_TAG: &str = "saltgate/stream/lagged";
/// Tag of the notice sent when the master's bus went away.
pub const DISCONNECTED_TAG: &str = "saltgate/stream/bus_disconnected";
/// Tag of the notice sent when the master's bus is back.
pub const CONNECTED_TAG: &str = "saltgate/stream/bus_connected";
/// Tag of the last notice of a stream whose token expired or was revoked.
pub const TOKEN_INVALID_TAG: &str = "saltgate/stream/token_invalid";

/// The most `tag` prefixes one stream may ask for.
const MAX_FILTERS: usize = 32;

/// Who a stream was opened for.
#[derive(Debug, Clone)]
pub enum Authorized {
    /// `saltgate.streams_disable_auth`: nobody in particular.
    Open,
    /// A Salt token the master confirmed; rechecked while the stream runs.
    Token(String),
}

/// Checks a stream's credential: a Salt token confirmed by the master (salt-api checks only that
/// it exists and has not expired, not its rights; so do we). On the built-in bus there is no
/// master to ask, so streams are refused unless `saltgate.streams_disable_auth` is set.
pub async fn authorize(app: &App, token: Option<&str>) -> Result<Authorized, ApiError> {
    if app.config.saltgate.streams_disable_auth {
        return Ok(Authorized::Open);
    }
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        ));
    };
    // As salt-api: a token is hex; anything else is refused without asking the master.
    let Ok(token) = super::lowstate::checked_token(token) else {
        return Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        ));
    };
    let Some(salt) = &app.salt else {
        return Err(ApiError::Unauthorized(
            "Event streams need a Salt master to check tokens; on the built-in bus set \
             saltgate.streams_disable_auth: true to serve them without auth",
        ));
    };
    match app.tokens.validate(salt, &token).await? {
        Some(_) => Ok(Authorized::Token(token)),
        None => Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        )),
    }
}

/// 400: a query parameter `/events` does not take. Same body shape as [`ApiError`], code
/// `bad_query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub &'static str);

impl BadQuery {
    /// Renders the refusal in `format`.
    pub fn render(&self, format: Format) -> Response {
        render_body(
            StatusCode::BAD_REQUEST,
            format,
            &serde_json::json!({"status": 400, "code": "bad_query", "message": self.0}),
        )
    }
}

/// Tag prefixes a stream keeps; empty keeps everything.
#[derive(Debug, Clone, Default)]
pub struct TagFilter(Vec<String>);

impl TagFilter {
    /// Whether `tag` passes.
    pub fn keeps(&self, tag: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| tag.starts_with(p.as_str()))
    }

    /// Reads `?tag=...` (repeatable); refuses anything else.
    pub fn from_query(query: Option<&str>) -> Result<Self, BadQuery> {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(Self::default());
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| BadQuery("the query string could not be parsed"))?;
        let mut prefixes = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "tag" if prefixes.len() < MAX_FILTERS => prefixes.push(value),
                "tag" => return Err(BadQuery("too many tag filters")),
                "token" | "salt_token" => {
                    return Err(BadQuery(
                        "Tokens must not be passed in the query string: they end up in access \
                         logs and the Referer header. Use the X-Auth-Token header or the \
                         session_id cookie",
                    ));
                }
                _ => {
                    return Err(BadQuery(
                        "Unknown query parameter; only tag=<prefix> is accepted",
                    ));
                }
            }
        }
        Ok(Self(prefixes))
    }
}

/// One thing for a stream to send.
#[derive(Debug)]
pub enum FeedItem {
    /// An event from the bus, with its shared rendering.
    Event(Arc<Published>),
    /// A notice saltgate itself makes (lag, bus state), already an event.
    Notice(Event),
    /// Nothing happened for a keep-alive period.
    KeepAlive,
}

/// A subscriber's view of the bus: filtered, with lag and bus state turned into notices,
/// keep-alive ticks, token rechecks, and an end on shutdown.
#[derive(Debug)]
pub struct Feed {
    app: AppState,
    sub: Subscription,
    filter: TagFilter,
    auth: Authorized,
    keepalive: tokio::time::Interval,
    /// Not reset by traffic, so a busy stream's token is rechecked too.
    recheck: tokio::time::Interval,
    shutdown: CancellationToken,
    /// The token was found invalid and the notice saying so was handed out.
    ended: bool,
    _guard: SubscriberGuard,
}

impl Feed {
    /// Subscribes now.
    pub fn new(app: AppState, filter: TagFilter, auth: Authorized, kind: StreamKind) -> Self {
        let period = Duration::from_secs(app.config.saltgate.stream_keepalive_secs.max(1));
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            recheck,
            sub: app.bus.subscribe(),
            shutdown: app.shutdown.clone(),
            _guard: app.stream_opened(kind),
            app,
            filter,
            auth,
            keepalive,
            ended: false,
        }
    }

    /// The next item; `None` ends the stream (shutdown, bus gone, token no longer valid). A
    /// token found invalid gives the notice `saltgate/stream/token_invalid` first, so a client
    /// knows to log in again rather than reconnect.
    pub async fn next(&mut self) -> Option<FeedItem> {
        if self.ended {
            return None;
        }
        loop {
            let item = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                _ = self.recheck.tick() => {
                    if !self.still_authorized().await {
                        tracing::debug!("Event stream ended: the token is no longer valid");
                        self.ended = true;
                        return Some(FeedItem::Notice(notice(TOKEN_INVALID_TAG, Vec::new())));
                    }
                    continue;
                }
                _ = self.keepalive.tick() => return Some(FeedItem::KeepAlive),
                item = self.sub.recv_published() => item,
            };
            let item = match item? {
                Received::Event(ev) => {
                    if self.filter.keeps(&ev.event.tag) {
                        self.keepalive.reset();
                        return Some(FeedItem::Event(ev));
                    }
                    continue;
                }
                Received::Other(item) => item,
            };
            match item {
                // Events come as `Received::Event`.
                BusItem::Event(_) => {}
                BusItem::Lagged(n) => {
                    tracing::info!(missed = n, "Event stream subscriber fell behind");
                    self.app.metrics.lagged(n);
                    return Some(FeedItem::Notice(notice(
                        LAGGED_TAG,
                        vec![("missed", Value::from(n))],
                    )));
                }
                BusItem::Disconnected => {
                    return Some(FeedItem::Notice(notice(DISCONNECTED_TAG, Vec::new())));
                }
                BusItem::Connected => {
                    return Some(FeedItem::Notice(notice(CONNECTED_TAG, Vec::new())));
                }
            }
        }
    }

    /// Counts an event written to the client.
    pub fn sent(&self) {
        self.app.metrics.event_sent();
    }

    /// Rechecks the token. A master that cannot be asked does not end the stream: outages are
    /// announced as notices and the stream resumes afterwards.
    async fn still_authorized(&self) -> bool {
        let Authorized::Token(token) = &self.auth else {
            return true;
        };
        let Some(salt) = &self.app.salt else {
            return false;
        };
        !matches!(self.app.tokens.recheck(salt, token).await, Ok(None))
    }
}

/// A notice event: `fields` and a `_stamp`.
pub fn notice(tag: &str, fields: Vec<(&str, Value)>) -> Event {
    let mut map: Vec<(Value, Value)> = fields
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    map.push((Value::from("_stamp"), Value::from(stamp_now())));
    Event::new(tag, Value::Map(map))
}

/// `GET /events`.
pub async fn events(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let format = response_format(&headers).unwrap_or(Format::Json);
    let filter = match TagFilter::from_query(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.render(format),
    };
    let auth = match authorize(&app, session_token(&headers).as_deref()).await {
        Ok(a) => a,
        Err(e) => return e.render(format),
    };
    let write_timeout = Duration::from_secs(app.config.saltgate.stream_write_timeout_secs.max(1));
    let feed = Feed::new(app, filter, auth, StreamKind::Sse);
    let body = SseBody::start(feed, write_timeout);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream;charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A stream's state between two chunks: its feed and the rest of the record being sent.
struct SseState {
    feed: Feed,
    queue: VecDeque<Bytes>,
}

/// Between two polls of the body: the state, and since when hyper holds the last chunk.
#[derive(Default)]
struct SseSlot {
    state: Option<SseState>,
    handed_at: Option<Instant>,
    /// The watchdog dropped the subscriber; the next poll aborts the connection.
    dropped: bool,
}

/// The `/events` body: records sent as their shared chunks, one per poll, so that hyper holds
/// only the few chunks its write buffer has room for; the rest stays with the stream.
///
/// A write deadline: when hyper has held a chunk for `stream_write_timeout_secs` without asking
/// for the next (its buffer is full: the reader stopped reading), a watchdog drops the
/// subscription and the rest of the record, so the reader pins at most what hyper had queued, and
/// the next poll, if the reader ever drains that, ends the connection with an error rather than
/// a truncated record. (A lag notice cannot be sent to a reader that does not read.)
struct SseBody;

impl SseBody {
    fn start(
        feed: Feed,
        write_timeout: Duration,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let slot = Arc::new(Mutex::new(SseSlot {
            state: Some(SseState {
                feed,
                queue: VecDeque::from([Bytes::from_static(b"retry: 400\n")]),
            }),
            ..SseSlot::default()
        }));
        tokio::spawn(watch(Arc::downgrade(&slot), write_timeout));
        futures::stream::unfold(slot, |slot| async move {
            let taken = {
                let mut guard = lock(&slot);
                guard.handed_at = None;
                match guard.state.take() {
                    Some(state) => Ok(state),
                    None if guard.dropped => {
                        guard.dropped = false;
                        Err(true)
                    }
                    None => Err(false),
                }
            };
            let mut state = match taken {
                Ok(state) => state,
                Err(true) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the reader did not drain its event stream in time",
                    );
                    return Some((Err(e), slot));
                }
                Err(false) => return None,
            };
            let chunk = match state.queue.pop_front() {
                Some(chunk) => chunk,
                None => {
                    let item = state.feed.next().await?;
                    let record = match &item {
                        FeedItem::Event(ev) => {
                            state.feed.sent();
                            let record = ev.rendered(sse_record);
                            record.slices(0..record.len())
                        }
                        FeedItem::Notice(ev) => vec![sse_event(ev)],
                        FeedItem::KeepAlive => vec![Bytes::from_static(b": keep-alive\n\n")],
                    };
                    state.queue.extend(record);
                    state.queue.pop_front().unwrap_or_default()
                }
            };
            {
                let mut guard = lock(&slot);
                guard.state = Some(state);
                guard.handed_at = Some(Instant::now());
            }
            Some((Ok(chunk), slot))
        })
    }
}

fn lock(slot: &Mutex<SseSlot>) -> std::sync::MutexGuard<'_, SseSlot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the stream's subscriber once hyper has held its last chunk for `timeout`; ends with
/// the body.
async fn watch(slot: std::sync::Weak<Mutex<SseSlot>>, timeout: Duration) {
    let mut tick = tokio::time::interval(timeout / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(slot) = slot.upgrade() else {
            return;
        };
        let stale = {
            let mut guard = lock(&slot);
            let stalled = guard.handed_at.is_some_and(|t| t.elapsed() >= timeout);
            if stalled && guard.state.is_some() {
                guard.dropped = true;
                guard.state.take()
            } else {
                None
            }
        };
        if let Some(state) = stale {
            tracing::info!(
                timeout_secs = timeout.as_secs(),
                "Event stream subscriber dropped: it did not take an event in time"
            );
            drop(state);
            return;
        }
    }
}

/// [`sse_event`] in shared chunks: the rendering kept with each bus event.
pub fn sse_record(event: &Event) -> Chunked {
    Chunked::new(&sse_event(event))
}

/// One event in salt-api's SSE framing.
pub fn sse_event(event: &Event) -> Bytes {
    let json = salt_json(event);
    let mut out = String::with_capacity(json.len() + event.tag.len() + 16);
    out.push_str("tag: ");
    for c in event.tag.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push_str("\ndata: ");
    out.push_str(&json);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// Where the `data:` line of an [`sse_record`] starts.
fn data_start(record: &Chunked) -> usize {
    // The tag line is the first line: a tag's own CR and LF are escaped on it.
    record.position(b'\n').map_or(record.len(), |i| i + 1)
}

/// The part of an [`sse_record`] from its `data:` line on, `data: <json>\n\n`: the frame of
/// rest_cherrypy's `/ws`, as slices of the record's chunks.
pub fn data_part(record: &Chunked) -> Vec<Bytes> {
    record.slices(data_start(record)..record.len())
}

/// The JSON of an [`sse_record`], `{"data": …, "tag": …}`: the frame of rest_tornado's
/// `/all_events`, as slices of the record's chunks.
pub fn json_part(record: &Chunked) -> Vec<Bytes> {
    let start = data_start(record) + "data: ".len();
    record.slices(start..record.len().saturating_sub(2).max(start))
}

/// `{"data": <data>, "tag": <tag>}` as salt-api writes it.
pub fn salt_json(event: &Event) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"data\": ");
    write_py_json(&mut out, &event.data);
    out.push_str(", \"tag\": ");
    push_str_json(&mut out, &event.tag);
    out.push('}');
    out
}

/// Writes `value` as Python's `json.dumps(value, ensure_ascii=False)` does.
pub fn write_py_json(out: &mut String, value: &Value) {
    write_py_json_at(out, value, 0);
}

fn write_py_json_at(out: &mut String, value: &Value, key_nesting: usize) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(true) => out.push_str("true"),
        Value::Boolean(false) => out.push_str("false"),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(f) => push_float(out, f64::from(*f)),
        Value::F64(f) => push_float(out, *f),
        Value::String(s) => push_str_json(out, &String::from_utf8_lossy(s.as_bytes())),
        Value::Binary(b) => push_str_json(out, &String::from_utf8_lossy(b)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json_at(out, item, key_nesting);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_str_json(out, &key_text(k, key_nesting));
                out.push_str(": ");
                write_py_json_at(out, v, key_nesting);
            }
            out.push('}');
        }
        Value::Ext(..) => out.push_str("null"),
    }
}

/// A map key as text, as Python turns int, float, bool and None keys into strings. A list or map key becomes its JSON text, which is escaped again as a
/// string, doubling its length per level: past [`MAX_KEY_NESTING`] levels of keys within keys
/// it is written as `<nested key>` (the same bound as the clear-channel replies), so an 81-byte
/// frame cannot cost seconds and megabytes.
fn key_text(key: &Value, key_nesting: usize) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Nil => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Array(_) | Value::Map(_) if key_nesting >= MAX_KEY_NESTING => {
            "<nested key>".to_owned()
        }
        other => {
            let mut s = String::new();
            write_py_json_at(&mut s, other, key_nesting + 1);
            s
        }
    }
}

fn push_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // serde_json writes the shortest round-trip form with a `.0` on whole numbers, as
        // Python's repr does (exponents differ in form: 1e+20 vs 1e20).
        out.push_str(
            &serde_json::Number::from_f64(f).map_or_else(|| "null".into(), |n| n.to_string()),
        );
    }
}

/// Writes `s` as a JSON string, as Python's `json.dumps(s, ensure_ascii=False)` does.
pub fn push_str_json(out: &mut String, s: &str) {
    // serde_json escapes exactly what Python's ensure_ascii=False does.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_python_writes_it() {
        let data = Value::Map(vec![
            (Value::from("jid"), Value::from("2026")),
            (
                Value::from("minions"),
                Value::Array(vec![Value::from("m1"), Value::from("é\n\"")]),
            ),
            (Value::from(1), Value::from(1.5)),
            (Value::from("ok"), Value::Boolean(true)),
            (Value::from("none"), Value::Nil),
            (Value::from("empty"), Value::Map(vec![])),
        ]);
        let ev = Event::new("salt/job/2026/new", data);
        assert_eq!(
            salt_json(&ev),
            r#"{"data": {"jid": "2026", "minions": ["m1", "é\n\""], "1": 1.5, "ok": true, "none": null, "empty": {}}, "tag": "salt/job/2026/new"}"#
        );
        let mut s = String::new();
        write_py_json(&mut s, &Value::from(2.0));
        assert_eq!(s, "2.0");
    }

    #[test]
    fn keys_nested_in_keys_stay_small() {
        // Found by the `frame` fuzz target: a map key holding a map key holding ..., each
        // escaped once more per level, doubled the text per level (81 bytes took seconds).
        let mut key = Value::from("\"");
        for _ in 0..24 {
            key = Value::Map(vec![(key, Value::Nil)]);
        }
        let ev = Event::new("t", Value::Map(vec![(key, Value::Nil)]));
        let text = salt_json(&ev);
        assert!(text.len() < 4096, "{} bytes", text.len());
        assert!(text.contains("<nested key>"), "{text}");
        // Shallow list keys are still written as their JSON text.
        let ev = Event::new(
            "t",
            Value::Map(vec![(Value::Array(vec![1.into()]), 2.into())]),
        );
        assert_eq!(salt_json(&ev), r#"{"data": {"[1]": 2}, "tag": "t"}"#);
    }

    #[test]
    fn sse_framing_matches_salt_api_and_tags_cannot_forge_fields() {
        let ev = Event::new("a/b", Value::Map(vec![]));
        assert_eq!(
            &sse_event(&ev)[..],
            b"tag: a/b\ndata: {\"data\": {}, \"tag\": \"a/b\"}\n\n"
        );
        let ev = Event::new("x\ndata: forged", Value::Map(vec![]));
        let text = String::from_utf8(sse_event(&ev).to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("data: {\"data\""), "{text}");
        assert!(text.starts_with("tag: x\\ndata: forged\n"));
    }

    #[test]
    fn websocket_framings_are_parts_of_the_sse_record() {
        for tag in ["a/b", "x\ndata: forged", "é/\r"] {
            let ev = Event::new(tag, Value::Map(vec![("k".into(), "v\n\n".into())]));
            let record = sse_record(&ev);
            let json = salt_json(&ev);
            assert_eq!(
                data_part(&record).concat(),
                format!("data: {json}\n\n").as_bytes()
            );
            assert_eq!(json_part(&record).concat(), json.as_bytes());
        }
        // A long event: parts of the shared chunks, never more than one chunk each.
        let ev = Event::new("big", Value::from("x".repeat(100_000)));
        let record = sse_record(&ev);
        let parts = json_part(&record);
        assert_eq!(parts.concat(), salt_json(&ev).as_bytes());
        assert!(
            parts.len() > 1
                && parts
                    .iter()
                    .all(|p| p.len() <= crate::salt::bus::ring::CHUNK)
        );
        assert_eq!(
            parts[1].as_ptr(),
            record.slices(0..record.len())[1].as_ptr()
        );
    }

    #[test]
    fn query_takes_tag_prefixes_only() {
        let f = TagFilter::from_query(Some("tag=salt/job/&tag=salt/netapi/")).unwrap();
        assert!(f.keeps("salt/job/1/new"));
        assert!(f.keeps("salt/netapi/hook/x"));
        assert!(!f.keeps("salt/auth"));
        assert!(TagFilter::from_query(None).unwrap().keeps("anything"));
        assert!(matches!(
            TagFilter::from_query(Some("token=abc")),
            Err(BadQuery(m)) if m.contains("query string")
        ));
        assert!(matches!(
            TagFilter::from_query(Some("salt_token=abc")),
            Err(BadQuery(_))
        ));
        assert!(matches!(
            TagFilter::from_query(Some("colour=red")),
            Err(BadQuery(_))
        ));
    }
}

//! Event streams: the event bus as Server-Sent Events (`GET /events`, [`sse`]) and over
//! WebSockets ([`ws`], with the formatted views of [`digest`]), every event rendered once in
//! salt-api's framing ([`record`], with the Python-style JSON of [`pyjson`]) and shared by every
//! subscriber; this module is the subscriber's view of the bus ([`Feed`]) they all read.
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
//! ([`record::sse_event`], kept with the event on the bus) and every stream sends that same buffer, or a
//! part of it (the WebSocket framings), without copying. The body is a pull stream: hyper asks
//! for the next chunk only when its write buffer has room, so a reader that stops reading makes
//! this subscriber lag, not grow; it holds the few shared renderings hyper had queued for it.

pub mod digest;
pub mod pyjson;
pub mod record;
pub mod sse;
pub mod ws;

use std::time::Duration;

use rmpv::Value;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Authorized;
use crate::api::error::ApiError;
use crate::api::metrics::{StreamKind, SubscriberGuard};
use crate::api::state::App;
use crate::salt::bus::{Published, Received};
use crate::salt::event::stamp_now;
use crate::salt::{BusItem, Event, Subscription};
use std::sync::Arc;

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

/// 400: a query parameter an event stream does not take (`ApiError::BadQuery`, code
/// `bad_query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub &'static str);

impl From<BadQuery> for ApiError {
    fn from(e: BadQuery) -> Self {
        ApiError::BadQuery(e.0)
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
    app: Arc<App>,
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
    pub fn new(app: Arc<App>, filter: TagFilter, auth: Authorized, kind: StreamKind) -> Self {
        let period = Duration::from_secs(app.config.saltgate.stream_keepalive_secs.max(1));
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            recheck,
            sub: app.bus.subscribe(),
            shutdown: app.shutdown.clone(),
            _guard: app.metrics.stream_opened(kind),
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

#[cfg(test)]
mod tests {
    use super::*;

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

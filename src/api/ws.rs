//! WebSocket event streams: rest_cherrypy's `/ws` and `/ws/<token>`, rest_tornado's
//! `/all_events/<token>`.
//!
//! As salt-api: nothing is sent until the client sends `websocket client ready`, and every
//! client text message is answered with `server received message`. `/ws` sends each event as the
//! text frame `data: {"data": …, "tag": …}\n\n`; `/all_events` sends the bare JSON. Lag and bus
//! state notices and the `?tag=` filter are those of `/events` (see [`super::events`]);
//! keep-alives are pings.
//!
//! Differences from salt-api, on purpose: `?format_events` (the `SaltInfo` job/minion digest,
//! which runs `grains.items` on every minion with the caller's token) is not offered and is
//! refused with 400; a browser `Origin` that is not this server's own host is refused with 403,
//! since the session cookie would otherwise let any web page read the bus (rest_tornado checks
//! origins too; rest_cherrypy does not). The socket loop is generic over `Sink`/`Stream` so it
//! does not depend on axum's socket type.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};

use super::error::render_body;
use super::events::{Authorized, BadQuery, Feed, FeedItem, TagFilter, authorize, salt_json};
use super::extract::session_token;
use super::metrics::StreamKind;
use super::negotiate::{Format, response_format};
use super::state::AppState;

/// What the client must send before events flow.
pub const READY: &str = "websocket client ready";
/// The answer to every client message.
pub const ACK: &str = "server received message";

/// How events are written into text frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// rest_cherrypy `/ws`: `data: <json>\n\n`.
    Cherrypy,
    /// rest_tornado `/all_events`: the bare JSON.
    Tornado,
}

/// `GET /ws`: token from `X-Auth-Token` or the `session_id` cookie.
pub async fn ws_root(
    state: State<AppState>,
    query: RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = session_token(&headers);
    open(state, token, query, headers, upgrade, Framing::Cherrypy).await
}

/// `GET /ws/<token>`.
pub async fn ws_token(
    state: State<AppState>,
    Path(token): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    open(
        state,
        Some(token),
        query,
        headers,
        upgrade,
        Framing::Cherrypy,
    )
    .await
}

/// `GET /all_events/<token>` (rest_tornado).
pub async fn all_events(
    state: State<AppState>,
    Path(token): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    open(
        state,
        Some(token),
        query,
        headers,
        upgrade,
        Framing::Tornado,
    )
    .await
}

async fn open(
    State(app): State<AppState>,
    token: Option<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    framing: Framing,
) -> Response {
    let format = response_format(&headers).unwrap_or(Format::Json);
    if query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("format_events"))
    }) {
        return BadQuery("format_events is not supported; use the raw event stream").render(format);
    }
    let filter = match TagFilter::from_query(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.render(format),
    };
    if !same_origin(&headers) {
        return render_body(
            StatusCode::FORBIDDEN,
            format,
            &serde_json::json!({"status": 403, "code": "origin_not_allowed",
                "message": "Cross-origin WebSocket connections are not allowed"}),
        );
    }
    let auth = match authorize(&app, token.as_deref()).await {
        Ok(a) => a,
        Err(e) => return e.render(format),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return axum::response::IntoResponse::into_response(rejection),
    };
    upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket: WebSocket| run_socket(socket, app, filter, auth, framing))
}

/// A browser's `Origin` must name the host it connected to; clients without one pass.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
}

/// The socket loop: answers client messages, and once the client is ready, forwards the feed.
/// Ends on close, on a send error, when the feed ends (shutdown, expired token) or on shutdown.
pub async fn run_socket<S, E>(
    socket: S,
    app: AppState,
    filter: TagFilter,
    auth: Authorized,
    framing: Framing,
) where
    S: Sink<Message, Error = E> + Stream<Item = Result<Message, E>> + Send,
    E: std::fmt::Display,
{
    let (mut tx, mut rx) = socket.split();
    let shutdown = app.shutdown.clone();
    let mut parts = Some((app, filter, auth));
    let mut feed: Option<Feed> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tx.send(Message::Close(None)).await;
                break;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if feed.is_none() && text.as_str().contains(READY) {
                        if let Some((app, filter, auth)) = parts.take() {
                            feed = Some(Feed::new(app, filter, auth, StreamKind::Ws));
                        }
                    }
                    if tx.send(Message::Text(ACK.into())).await.is_err() {
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
            item = next_item(&mut feed), if feed.is_some() => {
                let frame = match item {
                    None => {
                        let _ = tx.send(Message::Close(None)).await;
                        break;
                    }
                    Some(FeedItem::KeepAlive) => Message::Ping(bytes::Bytes::new()),
                    Some(FeedItem::Event(ev)) => {
                        if let Some(f) = &feed {
                            f.sent();
                        }
                        Message::Text(frame_text(&salt_json(&ev), framing).into())
                    }
                    Some(FeedItem::Notice(ev)) => Message::Text(frame_text(&salt_json(&ev), framing).into()),
                };
                if let Err(e) = tx.send(frame).await {
                    tracing::debug!(error = %e, "WebSocket write failed");
                    break;
                }
            }
        }
    }
}

async fn next_item(feed: &mut Option<Feed>) -> Option<FeedItem> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

fn frame_text(json: &str, framing: Framing) -> String {
    match framing {
        Framing::Cherrypy => format!("data: {json}\n\n"),
        Framing::Tornado => json.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(frame_text("{}", Framing::Cherrypy), "data: {}\n\n");
        assert_eq!(frame_text("{}", Framing::Tornado), "{}");
    }
}

//! `GET /events`: the feed as a pull stream of shared SSE records (see the module doc of
//! [`super`] for the framing and the differences from salt-api).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use super::record::{sse_event, sse_record};
use super::{Feed, FeedItem, TagFilter};
use crate::api::auth::{Caller, Unauthenticated, authorize_stream};
use crate::api::error::ApiError;
use crate::api::metrics::StreamKind;
use crate::api::state::App;

/// `GET /events`.
pub async fn events(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    let filter = TagFilter::from_query(query.as_deref())?;
    let auth = authorize_stream(&app, caller).await?;
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
    Ok(response)
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

//! The budgets a request draws on, shared between the listener (`crate::server`) and the routes:
//! the connection's slot in the general or the stream budget, and the global budget of buffered
//! request-body bytes. Nothing here touches sockets: the listener creates these values and hands
//! them to each request (a [`ConnSlot`] extension; the [`Budgets`] in a task-local while the
//! request runs).
//!
//! - A connection holds a general slot from accept on. A request on a stream route (`/events`,
//!   `/ws`, `/all_events`, `/formatted_events`) takes a stream slot or is refused with 503 and
//!   `Retry-After`; once its stream is open the connection gives its general slot back, so idle or
//!   slow hook clients cannot keep streams out, nor streams crowd out hooks.
//! - Request bodies are buffered against one byte budget for the whole process; a body that does
//!   not fit is refused with 503 at once (never queued), and its bytes return to the budget when
//!   the buffer is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::Metrics;

/// A limit that refused or cut off a client, for logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `max_connections_per_client` reached: the connection was closed at accept.
    PerClient,
    /// `max_streams` reached: a stream request got 503.
    Streams,
    /// `max_buffered_body_bytes` reached: a body got 503.
    BodyBytes,
    /// No first byte within `first_byte_timeout_secs`.
    FirstByte,
    /// Headers (or an HTTP/2 preface and first request) not complete in `header_timeout_secs`.
    Headers,
    /// Idle between requests past `keep_alive_timeout_secs`.
    KeepAlive,
    /// A request body stalled or under the minimum rate.
    Body,
    /// The client stopped reading what saltgate writes (`write_timeout_secs`).
    Write,
}

impl Limit {
    /// The label used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerClient => "per_client",
            Self::Streams => "streams",
            Self::BodyBytes => "body_bytes",
            Self::FirstByte => "first_byte",
            Self::Headers => "headers",
            Self::KeepAlive => "keep_alive",
            Self::Body => "body",
            Self::Write => "write",
        }
    }

    const ALL: [Limit; 8] = [
        Self::PerClient,
        Self::Streams,
        Self::BodyBytes,
        Self::FirstByte,
        Self::Headers,
        Self::KeepAlive,
        Self::Body,
        Self::Write,
    ];
}

/// Logs at most one line per limit per interval, with how many hits it stood for.
#[derive(Debug)]
struct LogThrottle {
    start: Instant,
    /// Per limit: milliseconds since `start` of the last line (`u64::MAX`: never).
    last: [AtomicU64; 8],
    /// Per limit: hits since the last line.
    suppressed: [AtomicU64; 8],
}

const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl LogThrottle {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Whether to log this hit now, and how many hits the line stands for.
    fn admit(&self, limit: Limit) -> Option<u64> {
        let i = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.last[i].load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_INTERVAL.as_millis() as u64;
        if due
            && self.last[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed[i].swap(0, Ordering::Relaxed) + 1)
        } else {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The process-wide budgets, shared by every listener.
#[derive(Debug)]
pub struct Budgets {
    /// Connections that are not (yet) streams.
    pub general: Arc<Semaphore>,
    /// Open event streams.
    pub streams: Arc<Semaphore>,
    /// Buffered request-body bytes.
    body_bytes: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    log: LogThrottle,
}

impl Budgets {
    /// Budgets of `connections` general slots, `streams` stream slots and `body_bytes` buffered
    /// body bytes; hits are counted in `metrics`.
    pub fn new(
        connections: usize,
        streams: usize,
        body_bytes: u64,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let body_bytes = usize::try_from(body_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            general: Arc::new(Semaphore::new(connections.clamp(1, Semaphore::MAX_PERMITS))),
            streams: Arc::new(Semaphore::new(streams.min(Semaphore::MAX_PERMITS))),
            body_bytes: Arc::new(Semaphore::new(body_bytes)),
            metrics,
            log: LogThrottle::new(),
        }
    }

    /// Counts a hit of `limit` and logs it, at most one line per limit every 10 s.
    pub fn hit(&self, limit: Limit, client: std::net::IpAddr) {
        if let Some(metrics) = &self.metrics {
            metrics.limit_hit(limit.name());
        }
        if let Some(hits) = self.log.admit(limit) {
            match limit {
                Limit::PerClient | Limit::Streams | Limit::BodyBytes => tracing::warn!(
                    limit = limit.name(),
                    client_ip = %client,
                    hits,
                    "Connection budget full: refusing"
                ),
                _ => tracing::info!(
                    limit = limit.name(),
                    client_ip = %client,
                    hits,
                    "Connection deadline passed: closing"
                ),
            }
        }
    }
}

tokio::task_local! {
    static REQUEST_BUDGETS: (Arc<Budgets>, std::net::IpAddr);
}

/// Runs `fut` (one request) with `budgets` as the budgets its body buffering draws on.
pub async fn with_budgets<F: std::future::Future>(
    budgets: Arc<Budgets>,
    client: std::net::IpAddr,
    fut: F,
) -> F::Output {
    REQUEST_BUDGETS.scope((budgets, client), fut).await
}

/// Body bytes a request holds, counted against the body budget of the request's listener (none
/// outside one, e.g. a router driven directly).
#[derive(Debug)]
pub struct BodyReservation {
    budgets: Option<(Arc<Budgets>, std::net::IpAddr)>,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl BodyReservation {
    /// A reservation of nothing yet, on the current request's budget.
    pub fn current() -> Self {
        Self {
            budgets: REQUEST_BUDGETS.try_with(Clone::clone).ok(),
            permit: None,
            bytes: 0,
        }
    }

    /// Grows the reservation to `total` bytes, or refuses (503) when the budget cannot give them
    /// now: a full budget is never waited on.
    pub fn grow_to(&mut self, total: usize) -> Result<(), ApiError> {
        let Some((budgets, client)) = &self.budgets else {
            return Ok(());
        };
        if total <= self.bytes {
            return Ok(());
        }
        let more = u32::try_from(total - self.bytes).map_err(|_| busy_body())?;
        match Arc::clone(&budgets.body_bytes).try_acquire_many_owned(more) {
            Ok(p) => {
                match &mut self.permit {
                    Some(held) => held.merge(p),
                    None => self.permit = Some(p),
                }
                self.bytes = total;
                Ok(())
            }
            Err(_) => {
                budgets.hit(Limit::BodyBytes, *client);
                Err(busy_body())
            }
        }
    }

    /// Counts and logs a hit of `limit` by this request (nothing outside a listener).
    pub fn hit(&self, limit: Limit) {
        if let Some((budgets, client)) = &self.budgets {
            budgets.hit(limit, *client);
        }
    }

    /// The buffer as `Bytes` that give the reservation back when the last copy is dropped.
    pub fn attach(self, buf: BytesMut) -> Bytes {
        match self.permit {
            None => buf.freeze(),
            Some(permit) => Bytes::from_owner(Held {
                buf,
                _permit: permit,
            }),
        }
    }
}

fn busy_body() -> ApiError {
    ApiError::Busy("Too many request bodies are being received; retry shortly")
}

struct Held {
    buf: BytesMut,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// The error a request body yields when its client stalls or trickles it (the listener's
/// deadline); reading code answers 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stalled or arrived too slowly")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Whether `e` (or anything in its source chain) is a [`BodyTimedOut`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The connection a request came on: which budget its slot is in. Inserted by the listener as a
/// request extension; kept alive by the socket, so whatever it holds is released when the
/// connection closes (also after a WebSocket upgrade).
#[derive(Debug)]
pub struct ConnSlot {
    budgets: Arc<Budgets>,
    client: std::net::IpAddr,
    held: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    general: Option<OwnedSemaphorePermit>,
    streams: Vec<OwnedSemaphorePermit>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(metrics) = &self.budgets.metrics {
            metrics.connection_closed();
        }
    }
}

impl ConnSlot {
    /// A connection from `client` holding `general`, a slot of `budgets.general`.
    pub fn new(
        budgets: Arc<Budgets>,
        client: std::net::IpAddr,
        general: OwnedSemaphorePermit,
    ) -> Self {
        if let Some(metrics) = &budgets.metrics {
            metrics.connection_opened();
        }
        Self {
            budgets,
            client,
            held: Mutex::new(Slots {
                general: Some(general),
                streams: Vec::new(),
            }),
        }
    }

    /// The budgets this connection draws on.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives the general slot back: the connection now carries a stream.
    fn leave_general(&self) {
        drop(self.slots().general.take());
    }

    /// Keeps a stream slot for as long as the connection lives (an upgraded WebSocket).
    fn keep_stream(&self, permit: OwnedSemaphorePermit) {
        self.slots().streams.push(permit);
    }

    /// Whether the connection still holds a general slot.
    pub fn in_general(&self) -> bool {
        self.slots().general.is_some()
    }
}

/// Route middleware for stream routes: takes a stream slot (503 with `Retry-After` when none is
/// left), and once the stream is open moves the connection out of the general budget. The stream
/// slot is released when the stream's body ends, or for a WebSocket when its connection closes.
pub async fn stream_budget(req: Request, next: Next) -> Response {
    let Some(slot) = req.extensions().get::<Arc<ConnSlot>>().cloned() else {
        return next.run(req).await;
    };
    let Ok(permit) = Arc::clone(&slot.budgets.streams).try_acquire_owned() else {
        slot.budgets.hit(Limit::Streams, slot.client);
        return ApiError::Busy("Too many event streams are open; retry later").into_response();
    };
    let response = next.run(req).await;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        slot.leave_general();
        slot.keep_stream(permit);
        response
    } else if status.is_success() {
        slot.leave_general();
        response.map(|body| Body::new(Holding::new(body, permit)))
    } else {
        response
    }
}

/// A body that keeps `T` alive until the body is dropped.
#[derive(Debug)]
pub struct Holding<B, T> {
    inner: B,
    _held: T,
}

impl<B, T> Holding<B, T> {
    /// `inner`, holding `held` while it lives.
    pub fn new(inner: B, held: T) -> Self {
        Self { inner, _held: held }
    }
}

impl<B, T> hyper::body::Body for Holding<B, T>
where
    B: hyper::body::Body + Unpin,
    T: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_budget_refuses_instead_of_waiting_and_returns_bytes_on_drop() {
        let budgets = Arc::new(Budgets::new(1, 1, 100, None));
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        with_budgets(Arc::clone(&budgets), ip, async {
            let mut a = BodyReservation::current();
            a.grow_to(60).unwrap();
            let mut b = BodyReservation::current();
            assert!(matches!(b.grow_to(60), Err(ApiError::Busy(_))));
            let bytes = a.attach(BytesMut::from(&b"x"[..]));
            let copy = bytes.slice(..);
            drop(bytes);
            assert!(b.grow_to(60).is_err(), "a copy still holds the bytes");
            drop(copy);
            b.grow_to(60).unwrap();
        })
        .await;
        // Outside a listener there is no budget.
        let mut c = BodyReservation::current();
        c.grow_to(1 << 30).unwrap();
    }

    #[test]
    fn log_lines_are_throttled() {
        let t = LogThrottle::new();
        assert_eq!(t.admit(Limit::PerClient), Some(1));
        for _ in 0..100 {
            assert_eq!(t.admit(Limit::PerClient), None);
        }
        assert_eq!(t.admit(Limit::Streams), Some(1));
    }
}

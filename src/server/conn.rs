//! One connection's deadlines and per-client accounting.
//!
//! Every state a connection can be in has a deadline, enforced by a watchdog that runs beside the
//! HTTP connection in the connection's own task:
//!
//! | state | deadline |
//! | --- | --- |
//! | accepted (or TLS handshake done), nothing received | `first_byte_timeout` |
//! | bytes received, no complete request yet (HTTP/1 headers, HTTP/2 preface + first request) | `header_timeout` from the first byte |
//! | between requests, nothing received | `keep_alive_timeout` from the end of the last response |
//! | request body | `body_idle_timeout` between chunks, and `body_min_rate` bytes/s on average after `body_rate_grace` ([`DeadlineBody`]) |
//! | response | `write_timeout` while the client reads nothing saltgate writes (on an event stream: `stream_write_timeout_secs`) |
//!
//! The TLS handshake has its own timeout (see `super::run`). A connection that passes a deadline
//! is closed. Counts per client address (IPv6 per /64) cap how many of the open connections one
//! client may hold.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

use crate::api::limits::{BodyTimedOut, Budgets, ConnSlot, Holding, Limit, with_budgets};

/// The deadlines of one connection (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Accept (or handshake) to first byte.
    pub first_byte: Duration,
    /// First byte of a request to its complete headers.
    pub header: Duration,
    /// End of a response to the first byte of the next request.
    pub keep_alive: Duration,
    /// Longest pause inside a request body.
    pub body_idle: Duration,
    /// Minimum average body rate in bytes/s once `body_rate_grace` has passed (0: none).
    pub body_min_rate: u64,
    /// Time a body may take before `body_min_rate` applies.
    pub body_rate_grace: Duration,
    /// Longest time a write may stay blocked on a client that does not read.
    pub write: Duration,
    /// The same for a connection that carries an event stream (`stream_write_timeout_secs`,
    /// which the stream itself also enforces per event).
    pub stream_write: Duration,
}

/// Open connections per client address, capped.
#[derive(Debug)]
pub struct ClientTable {
    cap: usize,
    exempt: Vec<ipnet::IpNet>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounts on drop.
#[derive(Debug)]
pub struct ClientGuard {
    table: Arc<ClientTable>,
    key: Option<IpAddr>,
}

impl ClientTable {
    /// At most `cap` connections per client; addresses in `exempt` are not counted.
    pub fn new(cap: usize, exempt: Vec<ipnet::IpNet>) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            exempt,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The counting key: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64.
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(bits.into())
                }
            },
        }
    }

    /// Counts a connection from `ip`, or `None` when that client is at its cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientGuard> {
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(ClientGuard {
                table: Arc::clone(self),
                key: None,
            });
        }
        let key = Self::key(ip);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(ClientGuard {
            table: Arc::clone(self),
            key: Some(key),
        })
    }

    /// Connections `ip` holds now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&Self::key(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut counts = self
            .table
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

const NONE: u64 = u64::MAX;

/// What the watchdog knows of a connection: kept up to date by the socket wrapper ([`Tracked`])
/// and the service ([`ConnService`]). Times are milliseconds since `base`.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the connection last became idle (no request in flight).
    idle_since: AtomicU64,
    /// The first byte read since `idle_since`.
    first_read: AtomicU64,
    /// Since when a write has been blocked.
    write_blocked: AtomicU64,
    /// Until when (ms from `base`) the watchdog sleeps, and how often it rechecks while a
    /// request runs: a request start wakes it only when it sleeps longer than that.
    sleep_until: AtomicU64,
    recheck: AtomicU64,
    /// `header_timeout` in ms: a first read wakes the watchdog when it sleeps past that.
    header: AtomicU64,
    wake: tokio::sync::Notify,
    /// The connection's slot and its client count, released with the last reference.
    _client: ClientGuard,
    slot: Arc<ConnSlot>,
}

impl Activity {
    /// A connection accepted now.
    pub fn new(client: ClientGuard, slot: Arc<ConnSlot>) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            first_read: AtomicU64::new(NONE),
            write_blocked: AtomicU64::new(NONE),
            sleep_until: AtomicU64::new(0),
            recheck: AtomicU64::new(0),
            header: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            _client: client,
            slot,
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Restarts the idle clock (after a TLS handshake, whose bytes are not a request).
    pub fn restart_idle(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.first_read.store(NONE, Ordering::Relaxed);
    }

    fn on_read(&self) {
        if self.first_read.load(Ordering::Relaxed) == NONE {
            let now = self.now();
            self.first_read.store(now, Ordering::Relaxed);
            // The header deadline starts here: wake the watchdog when it sleeps past it (a
            // new connection's watchdog sleeps until the first-byte deadline, which may be
            // later). Not per request on a busy connection: it then sleeps a short recheck.
            if self.sleep_until.load(Ordering::Relaxed) > now + self.header.load(Ordering::Relaxed)
            {
                self.wake.notify_one();
            }
        }
    }

    fn on_write(&self, blocked: bool) {
        let cur = self.write_blocked.load(Ordering::Relaxed);
        if blocked && cur == NONE {
            self.write_blocked.store(self.now(), Ordering::Relaxed);
        } else if !blocked && cur != NONE {
            self.write_blocked.store(NONE, Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        // Wake the watchdog only from a long (idle) sleep: while requests follow each other it
        // rechecks on its own every `recheck`, and a wake-up per request cost a task switch
        // each (measured on /hook).
        if self.sleep_until.load(Ordering::Relaxed)
            > self.now() + self.recheck.load(Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
        InFlight(Arc::clone(self))
    }

    /// The next deadline and what passing it means.
    fn next_deadline(&self, d: &Deadlines) -> (Instant, Option<Limit>) {
        let write_blocked = self.write_blocked.load(Ordering::Relaxed);
        let d = &Deadlines {
            write: if self.slot.in_general() {
                d.write
            } else {
                d.stream_write
            },
            ..*d
        };
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A request runs: its body has its own deadlines; only a stalled write ends it here.
            // Recheck at least every half keep-alive: the request's end (not signalled, see
            // `request_started`) starts the keep-alive clock.
            return match write_blocked {
                NONE => (Instant::now() + recheck(d), None),
                since => (self.at(since) + d.write, Some(Limit::Write)),
            };
        }
        let first_read = self.first_read.load(Ordering::Relaxed);
        let (at, limit) = if first_read != NONE {
            (self.at(first_read) + d.header, Limit::Headers)
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            (
                self.at(self.idle_since.load(Ordering::Relaxed)) + d.first_byte,
                Limit::FirstByte,
            )
        } else {
            (
                self.at(self.idle_since.load(Ordering::Relaxed)) + d.keep_alive,
                Limit::KeepAlive,
            )
        };
        match write_blocked {
            NONE => (at, Some(limit)),
            since => {
                let w = self.at(since) + d.write;
                if w < at {
                    (w, Some(Limit::Write))
                } else {
                    (at, Some(limit))
                }
            }
        }
    }

    /// Resolves when the connection has passed one of its deadlines, with that deadline.
    pub async fn expired(&self, d: Deadlines) -> Limit {
        self.recheck
            .store(recheck(&d).as_millis() as u64, Ordering::Relaxed);
        self.header
            .store(d.header.as_millis() as u64, Ordering::Relaxed);
        loop {
            let (at, limit) = self.next_deadline(&d);
            let until = at.saturating_duration_since(self.base).as_millis() as u64;
            self.sleep_until.store(until, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = self.wake.notified() => continue,
            }
            // Activity may have moved the deadline while we slept: check again.
            let (again, limit_now) = self.next_deadline(&d);
            if let (Some(limit), Some(now_limit)) = (limit, limit_now) {
                if again <= Instant::now() && limit == now_limit {
                    return limit;
                }
            }
        }
    }
}

/// How often the watchdog rechecks a connection with a request in flight (the request's end is
/// not signalled: it starts the keep-alive clock, noticed within this).
fn recheck(d: &Deadlines) -> Duration {
    (d.write.min(d.stream_write).min(d.keep_alive) / 2).max(Duration::from_millis(10))
}

/// A request in flight; its end (the response body dropped) starts the keep-alive clock.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Relaxed);
        a.first_read.store(NONE, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, reporting reads and blocked writes to the connection's [`Activity`]. It owns the
/// activity (and so the connection's slot and client count) for as long as the socket is open,
/// also after a WebSocket upgrade hands it to the stream's task.
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    /// `inner`, reporting to `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.on_write(res.is_pending());
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity.on_write(res.is_pending());
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.on_write(res.is_pending());
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body with the body deadlines: it fails with [`BodyTimedOut`] when no chunk arrives
/// within `idle`, or when, after `grace`, fewer than `min_rate` bytes per second (on average since
/// the body was first read) have arrived.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    d: Deadlines,
    started: Option<Instant>,
    last: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl<B> DeadlineBody<B> {
    /// `inner` under the body deadlines of `d`.
    pub fn new(inner: B, d: Deadlines) -> Self {
        Self {
            inner,
            d,
            started: None,
            last: None,
            received: 0,
            timer: None,
            failed: false,
        }
    }

    fn deadline(&self, now: Instant) -> Instant {
        let started = self.started.unwrap_or(now);
        let idle = self.last.unwrap_or(started) + self.d.body_idle;
        if self.d.body_min_rate == 0 {
            return idle;
        }
        // The time by which `received` bytes stop being enough at `min_rate`.
        let allowed_ms = self.received.saturating_mul(1000) / self.d.body_min_rate;
        let rate = started + self.d.body_rate_grace + Duration::from_millis(allowed_ms);
        idle.min(rate)
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        this.started.get_or_insert(now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    this.last = Some(now);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let at = this.deadline(now);
                let at_tokio = tokio::time::Instant::from_std(at);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at_tokio)));
                if timer.deadline() != at_tokio {
                    timer.as_mut().reset(at_tokio);
                }
                if at <= now || timer.as_mut().poll(cx).is_ready() {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router as one connection's hyper service: each request gets the connection's slot and
/// address as extensions, the body deadlines, and the budgets; its response body marks the end
/// of the request for the keep-alive clock.
#[derive(Debug, Clone)]
pub struct ConnService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    budgets: Arc<Budgets>,
    deadlines: Deadlines,
}

impl ConnService {
    /// `router` serving the connection from `peer`.
    pub fn new(
        router: Router,
        peer: SocketAddr,
        activity: Arc<Activity>,
        budgets: Arc<Budgets>,
        deadlines: Deadlines,
    ) -> Self {
        Self {
            router,
            peer,
            activity,
            budgets,
            deadlines,
        }
    }
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        parts.extensions.insert(Arc::clone(&self.activity.slot));
        let body = Body::new(DeadlineBody::new(body, self.deadlines));
        let req = http::Request::from_parts(parts, body);
        let router = self.router.clone();
        let budgets = Arc::clone(&self.budgets);
        let ip = self.peer.ip();
        Box::pin(async move {
            let response = match with_budgets(budgets, ip, router.oneshot(req)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(response.map(|b| Body::new(Holding::new(b, in_flight))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_table_caps_per_address_and_ipv6_per_64() {
        let t = ClientTable::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let g1 = t.admit(a).unwrap();
        let _g2 = t.admit(a).unwrap();
        assert!(t.admit(a).is_none());
        assert!(t.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(g1);
        assert!(t.admit(a).is_some());
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _x = t.admit(v6a).unwrap();
        let _y = t.admit(v6b).unwrap();
        assert!(t.admit(v6a).is_none(), "the same /64 shares one count");
        assert!(t.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| t.admit(proxy).unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert_eq!(t.count(proxy), 0, "exempt peers are not counted");
    }
}

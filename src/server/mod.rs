//! Serving: build the state from config, accept connections on every listener (one per
//! served dialect, see [`crate::config::Listen`]), shut down gracefully.
//!
//! Not bare `axum::serve`: every connection state has a deadline (see [`conn`]: first byte,
//! headers, keep-alive, request body idle and rate, blocked writes; TLS handshakes run inside the
//! connection's task with their own timeout), the number of open connections is capped (excess
//! ones wait in the kernel backlog, but for one per listener that waits accepted) and so is each client address's share of them, event streams
//! have their own budget, and buffered request bodies share one byte budget
//! ([`crate::api::limits`]).

pub mod conn;
pub mod notify;
pub mod reload;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use tls::Tls;

use crate::api::limits::{Budgets, ConnSlot, Limit};
use crate::api::{self, App, AppState};
use crate::config::{Config, Dialect, Listen};
use crate::salt::bus::ipc::{IpcBus, IpcBusConfig};
use crate::salt::bus::memory::MemoryBus;
use crate::salt::channel::{MasterChannel, Timeouts};
use crate::salt::{SaltClients, SharedBus};

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The shared store's client cannot be made.
    #[error("saltgate.shared: {0}")]
    Shared(String),
}

/// Builds the application state: the master's bus and channel, or the built-in bus, and the
/// spool (opened and recovered). Must run inside a tokio runtime. Fails when the spool cannot
/// be opened (an unwritable directory, another saltgate using it).
pub fn build_state(config: Config) -> Result<AppState, StartError> {
    build_state_with(config, None)
}

/// [`build_state`] with the HTTPS client that fetches SNS signing certificates supplied by the
/// caller (tests serve a test certificate; `None` is the real HTTPS client).
pub fn build_state_with(
    config: Config,
    sns_http: Option<Arc<dyn crate::api::hook::sns::SnsHttp>>,
) -> Result<AppState, StartError> {
    let (bus, salt): (SharedBus, Option<SaltClients>) = if config.use_master {
        let (publisher, puller) = config.master.bus_endpoints();
        let mut bus_config = IpcBusConfig::new(publisher.clone(), puller);
        bus_config.pull_framing = config.pull_framing();
        bus_config.subscriber_capacity = config.saltgate.event_queue;
        bus_config.subscriber_bytes = config.saltgate.event_queue_bytes;
        let bus: SharedBus = Arc::new(IpcBus::start(bus_config));
        let channel = MasterChannel::new(
            config.master.ret_endpoint(),
            config.saltgate.request_pool,
            Timeouts::default(),
        );
        tracing::info!(
            event_bus = %publisher,
            request_server = channel.endpoint(),
            "Attached to the Salt master"
        );
        let clients = SaltClients {
            channel,
            bus: Arc::clone(&bus),
            timeout: config.master.timeout(),
            gather_job_timeout: config.master.gather_job_timeout(),
        };
        (bus, Some(clients))
    } else {
        tracing::warn!(
            "No Salt master configured or found: serving on the built-in event bus. \
             Hooks are accepted and visible on this saltgate's own bus only; no Reactor sees them"
        );
        (
            Arc::new(MemoryBus::with_bytes(
                config.saltgate.event_queue,
                config.saltgate.event_queue_bytes,
            )),
            None,
        )
    };
    let shared = match &config.shared {
        None => None,
        Some(shared_config) => {
            let store = crate::shared::SharedStore::new(shared_config)
                .map_err(|e| StartError::Shared(format!("{}: {e}", shared_config.display_url())))?;
            tracing::info!(
                shared = shared_config.display_url(),
                fail = shared_config.fail.as_str(),
                "Dedup keys, rate limits and login throttles are shared on Redis"
            );
            Some(store)
        }
    };
    let tokens = api::tokens::TokenCache::from_config(&config, shared.clone());
    let hooks = api::hook::Hooks::new(
        config.saltgate.trusted_proxies.clone(),
        config.client_keys(),
        sns_http,
        shared.clone(),
    );
    let live = api::live::Live::new(reload::snapshot(&config, &hooks, None));
    let spool = match config.spool.clone() {
        None => None,
        Some(mut spool_config) => {
            (spool_config.dedup_ttl, spool_config.dedup_capacity) = hooks.replay_limits();
            let spool = crate::spool::Spool::open(spool_config, Arc::clone(&bus))?;
            let (ttl, capacity) = hooks.replay_limits();
            hooks.restore_replay_keys(&spool.dedup_keys(ttl, capacity));
            Some(spool)
        }
    };
    let metrics = Arc::new(api::metrics::Metrics::new(
        Arc::clone(&bus),
        spool.clone(),
        shared.as_ref(),
    ));
    metrics.config_loaded(false);
    let app = App {
        config,
        bus,
        salt,
        tokens,
        metrics,
        shutdown: tokio_util::sync::CancellationToken::new(),
        spool,
    };
    let state = AppState::new(app, hooks, live);
    let weak = Arc::downgrade(&state.live);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(live) => live.load().hooks.housekeep(),
                None => break,
            }
        }
    });
    Ok(state)
}

/// Serving limits for the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once (connections carrying an event stream count in `max_streams`).
    pub max_connections: usize,
    /// Open connections one client address (IPv6: one /64) may hold; `exempt` peers are not
    /// counted.
    pub max_connections_per_client: usize,
    /// Peers not counted per client (the `trusted_proxies`: every client behind a proxy shares
    /// its address).
    pub exempt: Vec<ipnet::IpNet>,
    /// Open event streams (`/events`, `/ws`, `/all_events`, `/formatted_events`) at once.
    pub max_streams: usize,
    /// Request-body bytes buffered at once, over all requests.
    pub max_buffered_body_bytes: u64,
    /// HTTP/2 (TLS only) concurrent streams per connection.
    pub http2_max_streams: u32,
    /// Accept to first byte (after a TLS handshake: handshake to first byte).
    pub first_byte_timeout: Duration,
    /// Time to receive a request's headers, from its first byte.
    pub header_timeout: Duration,
    /// Idle time between requests on a kept-alive connection.
    pub keep_alive_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_idle_timeout: Duration,
    /// Minimum average request-body rate in bytes/s once `body_rate_grace` has passed (0: off).
    pub body_min_rate: u64,
    /// Time a request body may take before `body_min_rate` applies.
    pub body_rate_grace: Duration,
    /// Longest time a write may stay blocked on a client that reads nothing.
    pub write_timeout: Duration,
    /// The same on a connection that carries an event stream.
    pub stream_write_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Limits {
    /// Limits from config.
    pub fn from_config(config: &Config) -> Self {
        let s = &config.saltgate;
        let secs = |n: u64| Duration::from_secs(n.max(1));
        Self {
            max_connections: s.max_connections,
            max_connections_per_client: s.max_connections_per_client,
            exempt: s.trusted_proxies.clone(),
            max_streams: s.max_streams,
            max_buffered_body_bytes: s.max_buffered_body_bytes,
            http2_max_streams: s.http2_max_streams,
            first_byte_timeout: secs(s.first_byte_timeout_secs),
            header_timeout: config.header_timeout(),
            keep_alive_timeout: secs(s.keep_alive_timeout_secs),
            body_idle_timeout: secs(s.body_timeout_secs),
            body_min_rate: s.body_min_bytes_per_sec,
            body_rate_grace: Duration::from_secs(s.body_rate_grace_secs),
            write_timeout: secs(s.write_timeout_secs),
            stream_write_timeout: secs(s.stream_write_timeout_secs),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }

    fn deadlines(&self) -> conn::Deadlines {
        conn::Deadlines {
            first_byte: self.first_byte_timeout,
            header: self.header_timeout,
            keep_alive: self.keep_alive_timeout,
            body_idle: self.body_idle_timeout,
            body_min_rate: self.body_min_rate,
            body_rate_grace: self.body_rate_grace,
            write: self.write_timeout,
            stream_write: self.stream_write_timeout,
        }
    }
}

/// The TLS the config asks for on the rest_cherrypy listener, or `None` for plain HTTP;
/// refuses plain HTTP on a non-loopback address unless `disable_ssl` says so.
pub fn tls_from_config(config: &Config) -> anyhow::Result<Option<Tls>> {
    let listen = Listen {
        dialect: Dialect::RestCherrypy,
        host: config.api.host,
        port: config.api.port,
        ssl_crt: config.api.ssl_crt.clone(),
        ssl_key: config.api.ssl_key.clone(),
        disable_ssl: config.api.disable_ssl,
        backlog: crate::config::DEFAULT_BACKLOG,
    };
    tls_for(&listen)
}

/// The TLS of one listener, or `None` for plain HTTP; refuses plain HTTP on a non-loopback
/// address unless its block's `disable_ssl` says so.
pub fn tls_for(listen: &Listen) -> anyhow::Result<Option<Tls>> {
    let block = listen.dialect.block();
    match (&listen.ssl_crt, &listen.ssl_key, listen.disable_ssl) {
        (_, _, true) => Ok(None),
        (Some(crt), Some(key), false) => Ok(Some(tls::acceptor(block, crt, key)?)),
        _ if listen.plaintext_allowed() => Ok(None),
        _ => anyhow::bail!(
            "{block}: no ssl_crt/ssl_key for {}; set disable_ssl: true to serve plain HTTP",
            listen.host
        ),
    }
}

/// A bound listener and what it serves.
pub struct Listener {
    /// The dialect served on it.
    pub dialect: Dialect,
    /// The socket.
    pub tcp: TcpListener,
    /// Its TLS, or `None` for plain HTTP.
    pub tls: Option<Tls>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("dialect", &self.dialect)
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    /// A listener for `dialect`.
    pub fn new(dialect: Dialect, tcp: TcpListener, tls: Option<Tls>) -> Self {
        Self { dialect, tcp, tls }
    }
}

/// Binds every listener the config asks for (one per served dialect), after checking all
/// their TLS settings, so that a bad one refuses the start before anything listens.
pub async fn bind_all(config: &Config) -> anyhow::Result<Vec<Listener>> {
    let listens = config.listeners();
    let mut tls = Vec::with_capacity(listens.len());
    for listen in &listens {
        tls.push(tls_for(listen)?);
    }
    let mut out = Vec::with_capacity(listens.len());
    for (listen, tls) in listens.iter().zip(tls) {
        let addr = listen.addr();
        let tcp = bind(addr, listen.backlog)
            .with_context(|| format!("{}: binding {addr}", listen.dialect.block()))?;
        out.push(Listener::new(listen.dialect, tcp, tls));
    }
    Ok(out)
}

/// A listening socket on `addr` with `backlog` (address reuse on, as every server sets it).
fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `state` on `listener` (the rest_cherrypy dialect) until `shutdown` resolves; see
/// [`serve`].
pub async fn run(
    state: AppState,
    listener: TcpListener,
    tls: Option<Tls>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = Listener::new(Dialect::RestCherrypy, listener, tls);
    serve(state, vec![listener], limits, shutdown).await
}

/// Serves `state` on every listener, each with its dialect's routes, until `shutdown` resolves,
/// then stops accepting and lets in-flight requests finish (bounded by `limits.drain_timeout`).
///
/// The listeners share one core: the state (bus, master channel, token cache, metrics), the
/// connection and stream budgets, the per-client connection counts and the drain. Each has its
/// own accept loop; every connection gets the same deadlines whichever listener took it.
///
/// Plain-text connections speak HTTP/1.1 only: HTTP/2 without TLS (h2c) is not served, since
/// salt-api clients never use it and it lets one connection buffer many streams. Over TLS the
/// protocol is what ALPN chose: `h2` or HTTP/1.1.
pub async fn serve(
    state: AppState,
    listeners: Vec<Listener>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let streams_stop = state.shutdown.clone();
    let spool = state.spool.clone();
    let core = Arc::new(Core {
        budgets: Arc::new(Budgets::new(
            limits.max_connections,
            limits.max_streams,
            limits.max_buffered_body_bytes,
            Some(Arc::clone(&state.metrics)),
        )),
        clients: conn::ClientTable::new(limits.max_connections_per_client, limits.exempt.clone()),
        tracker: tokio_util::task::TaskTracker::new(),
        stop: tokio_util::sync::CancellationToken::new(),
        limits,
    });
    let accepting = tokio_util::sync::CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let router = api::dialect::router(listener.dialect, state.clone());
        loops.spawn(accept_loop(
            Arc::clone(&core),
            listener,
            router,
            accepting.clone(),
        ));
    }
    let failed = tokio::select! {
        () = shutdown => None,
        Some(ended) = loops.join_next() => Some(ended),
    };
    accepting.cancel();
    while loops.join_next().await.is_some() {}
    // Event streams never finish on their own; end them so the drain below can complete.
    streams_stop.cancel();
    tracing::info!("Shutting down: no new connections; waiting for in-flight requests");
    core.stop.cancel();
    core.tracker.close();
    match tokio::time::timeout(core.limits.drain_timeout, core.tracker.wait()).await {
        Ok(()) => tracing::info!("All connections closed"),
        Err(_) => tracing::warn!("Drain timeout passed; closing remaining connections"),
    }
    if let Some(shared) = state.hooks.shared() {
        // The "done" marks of the last accepted deliveries, queued for the shared store's
        // pipeline, go out before the process does.
        shared.flush(SHARED_FLUSH).await;
    }
    if let Some(spool) = spool {
        // Accepted hooks still waiting get a last chance to go out; the rest stay spooled.
        spool.drain(SPOOL_DRAIN).await;
    }
    match failed {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("an accept loop panicked: {e}")),
        Some(Ok(Ok(()))) | None => Ok(()),
    }
}

/// What every listener shares.
struct Core {
    budgets: Arc<Budgets>,
    clients: Arc<conn::ClientTable>,
    tracker: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    limits: Limits,
}

/// One listener's accept loop: until `accepting` is cancelled (or the connection limiter
/// closes, an error).
async fn accept_loop(
    core: Arc<Core>,
    listener: Listener,
    router: axum::Router,
    accepting: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let Listener { tcp, tls, dialect } = listener;
    let tls = tls.map(|t| t.acceptor);
    let budgets = &core.budgets;
    loop {
        // Accept, then wait for a connection slot: a loop that held a slot while it waited for
        // its own listener would starve the other listeners' clients. So each listener holds
        // at most one accepted connection beyond `max_connections`, unserved until a slot
        // frees (its deadlines start then); the others wait in the kernel's backlog.
        let (stream, peer) = tokio::select! {
            () = accepting.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(dialect = dialect.block(), error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(client) = core.clients.admit(peer.ip()) else {
            // Over its cap: closed at once, the slot goes back to everyone else.
            budgets.hit(Limit::PerClient, peer.ip());
            drop(stream);
            continue;
        };
        let permit = tokio::select! {
            () = accepting.cancelled() => break,
            permit = Arc::clone(&budgets.general).acquire_owned() => permit.context("connection limiter closed")?,
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(ConnSlot::new(Arc::clone(budgets), peer.ip(), permit));
        let activity = conn::Activity::new(client, slot);
        let service = conn::ConnService::new(
            router.clone(),
            peer,
            Arc::clone(&activity),
            Arc::clone(budgets),
            core.limits.deadlines(),
        );
        let stream = conn::Tracked::new(stream, Arc::clone(&activity));
        core.tracker.spawn(connection(
            Arc::clone(&core),
            stream,
            service,
            activity,
            tls.clone(),
            peer,
        ));
    }
    Ok(())
}

/// One connection, from the TLS handshake (if any) to its end.
async fn connection(
    core: Arc<Core>,
    stream: conn::Tracked<tokio::net::TcpStream>,
    service: conn::ConnService,
    activity: Arc<conn::Activity>,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
) {
    let limits = &core.limits;
    let stop = &core.stop;
    let deadlines = limits.deadlines();
    let result = match tls {
        None => {
            let conn = http1(limits)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            guarded(conn, &activity, deadlines, stop).await
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    activity.restart_idle();
                    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(tls_stream);
                    if h2 {
                        let conn = http2(limits).serve_connection(io, service);
                        guarded(conn, &activity, deadlines, stop).await
                    } else {
                        let conn = http1(limits).serve_connection(io, service).with_upgrades();
                        guarded(conn, &activity, deadlines, stop).await
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(client_ip = %peer.ip(), error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client_ip = %peer.ip(), "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(client_ip = %peer.ip(), error = %e, "Connection ended with an error");
        }
        Err(limit) => {
            core.budgets.hit(limit, peer.ip());
            tracing::debug!(client_ip = %peer.ip(), limit = limit.name(), "Connection deadline passed: closed");
        }
    }
}

/// How long a shutdown waits for the shared store's queued operations to be sent.
const SHARED_FLUSH: Duration = Duration::from_secs(2);

/// How long a shutdown waits for spooled hooks to be delivered.
const SPOOL_DRAIN: Duration = Duration::from_secs(10);

/// The HTTP/1.1 side. hyper's own header timeout stays as a backstop behind the watchdog's.
fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(
            limits.first_byte_timeout.max(limits.keep_alive_timeout) + limits.header_timeout,
        )
        .keep_alive(true);
    b
}

/// The HTTP/2 side (TLS only): few streams per connection and small windows, so one connection
/// buffers at most `HTTP2_CONN_WINDOW` bytes of request bodies that nobody has read yet.
fn http2(limits: &Limits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_concurrent_streams(limits.http2_max_streams.max(1))
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONN_WINDOW)
        .max_header_list_size(64 * 1024)
        .max_send_buf_size(256 * 1024);
    b
}

/// Per-stream HTTP/2 flow-control window.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
/// Per-connection HTTP/2 flow-control window.
const HTTP2_CONN_WINDOW: u32 = 256 * 1024;

/// A connection that can be asked to finish its in-flight requests and close.
trait Graceful {
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` until it ends or passes a deadline (`Err` with the deadline; `conn` is dropped,
/// which closes the socket). Once `stop` fires, the connection finishes what is in flight and
/// closes.
async fn guarded<C, E>(
    conn: C,
    activity: &conn::Activity,
    deadlines: conn::Deadlines,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Result<(), E>, Limit>
where
    C: Future<Output = Result<(), E>> + Graceful,
{
    let mut conn = std::pin::pin!(conn);
    let expired = activity.expired(deadlines);
    let mut expired = std::pin::pin!(expired);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return Ok(r),
            limit = &mut expired => return Err(limit),
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().begin_shutdown();
            }
        }
    }
}

/// The rest_cherrypy listener's address from config.
pub fn bind_addr(config: &Config) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(config.api.host.ip(), config.api.port))
}

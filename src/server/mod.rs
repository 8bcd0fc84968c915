//! Serving: build the state from config, accept connections, shut down gracefully.
//!
//! Not bare `axum::serve`: each connection gets a header-read timeout (a client that sends its
//! headers a byte at a time is cut off), the number of open connections is capped (excess ones
//! wait in the kernel backlog), and TLS handshakes run inside the connection's task.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{self, App, AppState};
use crate::config::Config;
use crate::salt::bus::ipc::{IpcBus, IpcBusConfig};
use crate::salt::bus::memory::MemoryBus;
use crate::salt::channel::{MasterChannel, Timeouts};
use crate::salt::{SaltClients, SharedBus};

/// Builds the application state: the master's bus and channel, or the built-in bus.
/// Must run inside a tokio runtime.
pub fn build_state(config: Config) -> AppState {
    build_state_with(config, None)
}

/// [`build_state`] with the HTTPS client that fetches SNS signing certificates supplied by the
/// caller (tests serve a test certificate; `None` is the real HTTPS client).
pub fn build_state_with(
    config: Config,
    sns_http: Option<Arc<dyn crate::api::sns::SnsHttp>>,
) -> AppState {
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
    let tokens = api::state::TokenCache::new(Duration::from_secs(10), 10_000);
    let hooks = api::hook::Hooks::new(
        config.hooks.clone(),
        config.saltgate.unmatched_hooks == crate::config::Unmatched::Refuse,
        config.saltgate.trusted_proxies.clone(),
        sns_http,
    );
    let state = AppState(Arc::new(App {
        config,
        bus,
        salt,
        tokens,
        metrics: api::metrics::Metrics::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        hooks,
    }));
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(app) => app.hooks.housekeep(),
                None => break,
            }
        }
    });
    state
}

/// Serving limits for the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Limits {
    /// Limits from config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_connections: config.saltgate.max_connections,
            header_timeout: config.header_timeout(),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The TLS acceptor the config asks for, or `None` for plain HTTP; refuses plain HTTP on a
/// non-loopback address unless `disable_ssl` says so.
pub fn tls_from_config(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    match (
        &config.api.ssl_crt,
        &config.api.ssl_key,
        config.api.disable_ssl,
    ) {
        (_, _, true) => Ok(None),
        (Some(crt), Some(key), false) => Ok(Some(tls::acceptor(crt, key)?)),
        _ if config.plaintext_allowed() => Ok(None),
        _ => anyhow::bail!(
            "rest_cherrypy: no ssl_crt/ssl_key for {}; set disable_ssl: true to serve plain HTTP",
            config.api.host
        ),
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (bounded by `limits.drain_timeout`).
pub async fn run(
    state: AppState,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let streams_stop = state.shutdown.clone();
    let router = api::router(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.context("connection limiter closed")?,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let tls = tls.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30));
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                            watcher.watch(conn.into_owned()).await
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
            if let Err(e) = result {
                tracing::debug!(client_ip = %peer.ip(), error = %e, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    // Event streams never finish on their own; end them so the drain below can complete.
    streams_stop.cancel();
    tracing::info!("Shutting down: no new connections; waiting for in-flight requests");
    match tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("All connections closed"),
        Err(_) => tracing::warn!("Drain timeout passed; closing remaining connections"),
    }
    Ok(())
}

/// The address to bind from config.
pub fn bind_addr(config: &Config) -> anyhow::Result<SocketAddr> {
    let host = if config.api.host == "localhost" {
        "127.0.0.1"
    } else {
        config.api.host.as_str()
    };
    let ip: std::net::IpAddr = host
        .parse()
        .with_context(|| format!("rest_cherrypy.host: {host}"))?;
    Ok(SocketAddr::new(ip, config.api.port))
}

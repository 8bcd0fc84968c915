//! Load generator and bus counter for `scripts/bench`.
//!
//! - `http`: fixed concurrency over keep-alive HTTP/1.1 connections (one per worker), for a
//!   fixed time, optionally paced to a total rate. Each request's body carries a unique `id`
//!   (`<prefix>-<worker>-<seq>`), padded to `--body-size` bytes; with `--github-secret-file` each
//!   request is signed (`X-Hub-Signature-256`) with a unique `X-GitHub-Delivery`. A fixed body
//!   (`--body`) is sent as is instead (lowstate). Prints one JSON line: count, ok, errors (non-2xx
//!   + connection errors), rps, p50/p99 latency.
//! - `count`: subscribes to the master's event bus and counts distinct hook events whose
//!   `post.id` starts with `--prefix`; stops once `--stop-file` exists and no matching event came
//!   for `--idle-ms`, or at `--max-secs`. Prints one JSON line.
//! - `push`: fires events straight into the master's pull socket as fast as the pusher takes
//!   them, and counts those that come back on the publisher: the master's own ceiling.
//! - `fanout`: opens `--subs` SSE streams on `GET /events` (token in `X-Auth-Token`), then fires
//!   events at `--rate` per second for `--duration` seconds straight into the master's pull socket
//!   (`IpcBus::fire`), each carrying its sequence number and send time (Unix µs). Every
//!   subscriber records receive time − send time per event; also counted: events received per
//!   subscriber, duplicates, and `saltgate/stream/lagged` notices (with the events they report
//!   missed). Before the timed part, warm-up events are fired until every stream has shown one,
//!   so a subscription that is still connecting to the master is not counted as lag. Bounded:
//!   firing stops at `--max-fire-secs` (twice `--duration`) even if the master took fewer events.
//!
//! - `bare`: serves HTTP on `--port` with an axum handler that answers every request 200
//!   `{"success": true}` after reading its body, and checks nothing: what HTTP alone costs on
//!   this machine, the ceiling the bench's hook cells are set against.
//!
//! Latency in `http` is measured from when a request is sent, so when pacing the figure does not
//! include time a request waited behind a slow predecessor (no coordinated-omission correction).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use saltgate::salt::bus::ipc::{Endpoint, IpcBus, IpcBusConfig};
use saltgate::salt::event::{map_get, text_like};
use saltgate::salt::{BusItem, Event, EventBus};
use saltgate::security::Secret;
use saltgate::security::signature::github;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "saltgate benchmark load generator and bus counter")]
struct Cli {
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Drive an HTTP endpoint.
    Http(HttpArgs),
    /// Count hook events on the master bus.
    Count(CountArgs),
    /// Push raw events into the master's pull socket.
    Push(PushArgs),
    /// SSE subscribers on /events while events are fired onto the master bus at a fixed rate.
    Fanout(FanoutArgs),
    /// Serve a bare HTTP endpoint answering 200 to everything (the bench's HTTP ceiling).
    Bare(BareArgs),
}

#[derive(Args, Debug)]
struct BareArgs {
    /// The loopback port to listen on.
    #[arg(long)]
    port: u16,
}

#[derive(Args, Debug)]
struct HttpArgs {
    /// Target, e.g. http://127.0.0.1:8000/hook/bench/github
    #[arg(long)]
    url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Total requests per second over all connections (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Size of the generated JSON body in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Prefix of every body's unique id.
    #[arg(long, default_value = "b")]
    id_prefix: String,
    /// Sign each request as GitHub does with the secret in this file.
    #[arg(long)]
    github_secret_file: Option<PathBuf>,
    /// Send this body as is (no id, no signature).
    #[arg(long)]
    body: Option<String>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Debug)]
struct CountArgs {
    /// The master's sock_dir (holds master_event_pub.ipc / master_event_pull.ipc).
    #[arg(long)]
    sock_dir: PathBuf,
    /// Count events whose post.id starts with this.
    #[arg(long)]
    prefix: String,
    /// Created once the bus connection is up.
    #[arg(long)]
    ready_file: PathBuf,
    /// The load is over once this file exists.
    #[arg(long)]
    stop_file: PathBuf,
    /// After the stop file, stop when no matching event came for this long.
    #[arg(long, default_value_t = 2000)]
    idle_ms: u64,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

#[derive(Args, Debug)]
struct PushArgs {
    /// The master's sock_dir.
    #[arg(long)]
    sock_dir: PathBuf,
    /// Seconds to push.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Fires in flight at once.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Size of each event's padding in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    /// The events stream, e.g. http://127.0.0.1:8000/events
    #[arg(long)]
    url: String,
    /// Sent as `X-Auth-Token`.
    #[arg(long)]
    token: String,
    /// The master's sock_dir.
    #[arg(long)]
    sock_dir: PathBuf,
    /// SSE subscribers.
    #[arg(long, default_value_t = 100)]
    subs: usize,
    /// Events fired per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of firing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Size of each event's padding in bytes.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Seconds to wait for every stream to connect and show a warm-up event.
    #[arg(long, default_value_t = 20.0)]
    warmup_secs: f64,
    /// After the firing, seconds the subscribers may still take to catch up.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Stop firing after this many seconds even if fewer than rate × duration events went out
    /// (a master that takes them slowly); default twice --duration.
    #[arg(long)]
    max_fire_secs: Option<f64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let line = rt.block_on(async move {
        match cli.mode {
            Mode::Http(a) => http(a).await,
            Mode::Count(a) => count(a).await,
            Mode::Push(a) => push(a).await,
            Mode::Fanout(a) => fanout(a).await,
            Mode::Bare(a) => bare(a).await,
        }
    })?;
    println!("{line}");
    Ok(())
}

// ---- bare ------------------------------------------------------------------------------------

/// Answers every request 200 `{"success": true}` once its body is read; runs until killed.
async fn bare(a: BareArgs) -> Result<String> {
    async fn answer(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
        let _ = body.len();
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"success": true}"#,
        )
    }
    let app = axum::Router::new().fallback(answer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("bind 127.0.0.1:{}", a.port))?;
    axum::serve(listener, app).await?;
    Ok(json!({"served": true}).to_string())
}

// ---- http ------------------------------------------------------------------------------------

#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let uri: http::Uri = url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url: only http:// is supported");
    }
    let host = uri.host().context("--url: no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    Ok(Target { host, port, path })
}

/// One worker's tally.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    non2xx: u64,
    conn_errors: u64,
    latencies_us: Vec<u32>,
}

fn make_body(prefix: &str, worker: usize, seq: u64, size: usize) -> (String, Vec<u8>) {
    let id = format!("{prefix}-{worker}-{seq}");
    let head = format!(r#"{{"id":"{id}","kind":"bench","pad":""#);
    let tail = r#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = Vec::with_capacity(head.len() + pad + tail.len());
    body.extend_from_slice(head.as_bytes());
    body.resize(head.len() + pad, b'x');
    body.extend_from_slice(tail.as_bytes());
    (id, body)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

struct Job {
    target: Arc<Target>,
    secret: Option<Arc<Secret>>,
    fixed_body: Option<Bytes>,
    headers: Arc<Vec<(http::HeaderName, http::HeaderValue)>>,
    prefix: Arc<str>,
    body_size: usize,
    timeout: Duration,
    /// Seconds between this worker's requests (0: none).
    interval: f64,
    /// Seconds after the others' start this worker's schedule starts: workers are spread over
    /// one interval, so the paced load arrives evenly at `--rate`, not as bursts of `--conns`
    /// requests every interval.
    phase: f64,
    deadline: Instant,
    stop: Arc<AtomicBool>,
}

async fn worker(w: usize, job: Job) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    let mut seq: u64 = 0;
    let start = Instant::now() + Duration::from_secs_f64(job.phase);
    let host = format!("{}:{}", job.target.host, job.target.port);
    loop {
        let now = Instant::now();
        if now >= job.deadline || job.stop.load(Ordering::Relaxed) {
            break;
        }
        if job.interval > 0.0 {
            let due = start + Duration::from_secs_f64(job.interval * seq as f64);
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        seq += 1;
        let mut s = match sender.take() {
            Some(s) => s,
            None => match tokio::time::timeout(job.timeout, connect(&job.target)).await {
                Ok(Ok(s)) => s,
                _ => {
                    tally.conn_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let mut req = http::Request::post(job.target.path.as_str())
            .header(http::header::HOST, host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        for (k, v) in job.headers.iter() {
            req = req.header(k, v);
        }
        let body = match &job.fixed_body {
            Some(b) => b.clone(),
            None => {
                let (id, body) = make_body(&job.prefix, w, seq, job.body_size);
                if let Some(secret) = &job.secret {
                    for (k, v) in github::sign(secret, &body) {
                        req = req.header(k, v);
                    }
                    req = req
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", id);
                }
                Bytes::from(body)
            }
        };
        let Ok(req) = req.body(Full::new(body)) else {
            tally.conn_errors += 1;
            continue;
        };
        let t0 = Instant::now();
        let result = tokio::time::timeout(job.timeout, async {
            if s.ready().await.is_err() {
                return None;
            }
            let resp = s.send_request(req).await.ok()?;
            let status = resp.status();
            let keep = !resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            #[allow(
                clippy::disallowed_methods,
                reason = "the load generator drains saltgate's own small responses"
            )]
            resp.into_body().collect().await.ok()?;
            Some((status, keep))
        })
        .await;
        let elapsed = t0.elapsed();
        match result {
            Ok(Some((status, keep))) => {
                tally
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                if status.is_success() {
                    tally.ok += 1;
                } else {
                    tally.non2xx += 1;
                }
                if keep {
                    sender = Some(s);
                }
            }
            _ => tally.conn_errors += 1,
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

async fn http(a: HttpArgs) -> Result<String> {
    let target = Arc::new(parse_url(&a.url)?);
    let secret = match &a.github_secret_file {
        Some(f) => Some(Arc::new(
            Secret::trimmed(&std::fs::read(f).with_context(|| f.display().to_string())?)
                .map_err(|_| anyhow::anyhow!("empty secret"))?,
        )),
        None => None,
    };
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h.split_once(':').context("--header: want `Name: value`")?;
        headers.push((k.trim().parse()?, v.trim().parse()?));
    }
    let headers = Arc::new(headers);
    let prefix: Arc<str> = a.id_prefix.clone().into();
    let conns = a.conns.max(1);
    let interval = if a.rate > 0.0 {
        conns as f64 / a.rate
    } else {
        0.0
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    let mut tasks = Vec::with_capacity(conns);
    for w in 0..conns {
        let job = Job {
            target: Arc::clone(&target),
            secret: secret.clone(),
            fixed_body: a.body.clone().map(Bytes::from),
            headers: Arc::clone(&headers),
            prefix: Arc::clone(&prefix),
            body_size: a.body_size,
            timeout: Duration::from_secs_f64(a.timeout),
            interval,
            phase: interval * w as f64 / conns as f64,
            deadline,
            stop: Arc::clone(&stop),
        };
        tasks.push(tokio::spawn(worker(w, job)));
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await?;
        total.ok += t.ok;
        total.non2xx += t.non2xx;
        total.conn_errors += t.conn_errors;
        total.latencies_us.extend(t.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let answered = total.ok + total.non2xx;
    Ok(json!({
        "mode": "http",
        "label": a.label,
        "conns": conns,
        "rate_target": a.rate,
        "secs": (elapsed * 1000.0).round() / 1000.0,
        "count": answered + total.conn_errors,
        "ok": total.ok,
        "non2xx": total.non2xx,
        "conn_errors": total.conn_errors,
        "errors": total.non2xx + total.conn_errors,
        "rps": (total.ok as f64 / elapsed * 10.0).round() / 10.0,
        "p50_ms": percentile(&total.latencies_us, 0.50),
        "p99_ms": percentile(&total.latencies_us, 0.99),
    })
    .to_string())
}

// ---- count -----------------------------------------------------------------------------------

fn bus(sock_dir: &std::path::Path) -> IpcBus {
    IpcBus::start(IpcBusConfig::new(
        Endpoint::Unix(sock_dir.join("master_event_pub.ipc")),
        Endpoint::Unix(sock_dir.join("master_event_pull.ipc")),
    ))
}

fn hook_id(event: &Event) -> Option<String> {
    if !event.tag.starts_with("salt/netapi/hook") {
        return None;
    }
    map_get(map_get(&event.data, "post")?, "id").and_then(text_like)
}

async fn count(a: CountArgs) -> Result<String> {
    let bus = bus(&a.sock_dir);
    let mut sub = bus.subscribe();
    bus.wait_connected(Duration::from_secs(30))
        .await
        .context("connect to the master's event publisher")?;
    std::fs::write(&a.ready_file, b"ready\n")?;
    let started = Instant::now();
    let max = started + Duration::from_secs(a.max_secs);
    let idle = Duration::from_millis(a.idle_ms);
    let mut seen: HashSet<String> = HashSet::new();
    let mut dups: u64 = 0;
    let mut lagged: u64 = 0;
    let mut last = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut checked = Instant::now();
    loop {
        let now = Instant::now();
        if now >= max {
            break;
        }
        // A stat per event would cost the counter (and so the shared CPUs) more than counting.
        if stopped_at.is_none() && now.duration_since(checked) >= Duration::from_millis(100) {
            checked = now;
            if a.stop_file.exists() {
                stopped_at = Some(now);
            }
        }
        if let Some(s) = stopped_at
            && now.duration_since(last.max(s)) >= idle
        {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Err(_) => {}
            Ok(None) => break,
            Ok(Some(BusItem::Event(ev))) => {
                if let Some(id) = hook_id(&ev)
                    && id.starts_with(&a.prefix)
                {
                    last = Instant::now();
                    if !seen.insert(id) {
                        dups += 1;
                    }
                }
            }
            Ok(Some(BusItem::Lagged(n))) => lagged += n,
            Ok(Some(_)) => {}
        }
    }
    Ok(json!({
        "mode": "count",
        "prefix": a.prefix,
        "events": seen.len(),
        "duplicates": dups,
        "lagged": lagged,
    })
    .to_string())
}

// ---- push ------------------------------------------------------------------------------------

async fn push(a: PushArgs) -> Result<String> {
    let bus = Arc::new(bus(&a.sock_dir));
    let mut sub = bus.subscribe();
    bus.wait_connected(Duration::from_secs(30))
        .await
        .context("connect to the master's event publisher")?;
    let prefix = format!("push{}", std::process::id());
    let received = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let stop_count = Arc::new(AtomicBool::new(false));
    let counter = {
        let received = Arc::clone(&received);
        let lagged = Arc::clone(&lagged);
        let stop_count = Arc::clone(&stop_count);
        let prefix = prefix.clone();
        tokio::spawn(async move {
            while !stop_count.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
                    Ok(Some(BusItem::Event(ev)))
                        if hook_id(&ev).is_some_and(|id| id.starts_with(&prefix)) =>
                    {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(BusItem::Lagged(n))) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(None) => break,
                    _ => {}
                }
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    let fired = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..a.inflight.max(1) {
        let bus = Arc::clone(&bus);
        let fired = Arc::clone(&fired);
        let failed = Arc::clone(&failed);
        let prefix = prefix.clone();
        let pad = "x".repeat(a.body_size);
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let data = saltgate::salt::wire::payload::from_json(&json!({
                    "post": {"id": format!("{prefix}-{w}-{seq}"), "pad": pad},
                }));
                match bus
                    .fire(Event::new("salt/netapi/hook/bench/push", data))
                    .await
                {
                    Ok(()) => fired.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let push_secs = started.elapsed().as_secs_f64();
    // Let the publisher drain: stop once nothing new arrived for a second.
    let mut prev = u64::MAX;
    while received.load(Ordering::Relaxed) != prev {
        prev = received.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop_count.store(true, Ordering::Relaxed);
    counter.await?;
    let fired = fired.load(Ordering::Relaxed);
    let received = received.load(Ordering::Relaxed);
    Ok(json!({
        "mode": "push",
        "secs": (push_secs * 1000.0).round() / 1000.0,
        "fired": fired,
        "failed": failed.load(Ordering::Relaxed),
        "received": received,
        "lagged": lagged.load(Ordering::Relaxed),
        "fired_per_s": (fired as f64 / push_secs).round(),
        "received_per_s": (received as f64 / push_secs).round(),
    })
    .to_string())
}

// ---- fanout ----------------------------------------------------------------------------------

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One SSE subscriber's tally.
#[derive(Debug, Default)]
struct SubTally {
    /// The stream answered 200.
    connected: bool,
    /// A warm-up event came through.
    warm: bool,
    /// Distinct timed events received.
    received: u64,
    duplicates: u64,
    lag_notices: u64,
    /// Events the lag notices said were missed.
    missed: u64,
    /// Receive − send, µs, per timed event.
    lags_us: Vec<u32>,
    /// Why the stream ended early, if it did.
    error: Option<String>,
}

struct SubShared {
    tag: String,
    /// Timed events to be fired.
    total: u64,
    /// Subscribers that have every timed event, or whose stream ended.
    finished: AtomicU64,
    /// Subscribers that have shown a warm-up event.
    warm: AtomicU64,
    /// Stop reading.
    done: AtomicBool,
}

/// Reads one `/events` stream until `shared.done`.
async fn subscriber(target: Arc<Target>, token: Arc<str>, shared: Arc<SubShared>) -> SubTally {
    let mut t = SubTally::default();
    let host = format!("{}:{}", target.host, target.port);
    let mut s = match tokio::time::timeout(Duration::from_secs(10), connect(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            t.error = Some(format!("connect: {e}"));
            return t;
        }
        Err(_) => {
            t.error = Some("connect: timeout".into());
            return t;
        }
    };
    let req = http::Request::get(target.path.as_str())
        .header(http::header::HOST, host.as_str())
        .header(http::header::ACCEPT, "text/event-stream")
        .header("X-Auth-Token", &*token)
        .body(Full::new(Bytes::new()));
    let Ok(req) = req else {
        t.error = Some("bad request".into());
        return t;
    };
    let resp = match tokio::time::timeout(Duration::from_secs(10), async {
        s.ready().await?;
        s.send_request(req).await
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            t.error = Some(format!("request: {e}"));
            return t;
        }
        Err(_) => {
            t.error = Some("request: timeout".into());
            return t;
        }
    };
    if !resp.status().is_success() {
        t.error = Some(format!("status {}", resp.status()));
        return t;
    }
    t.connected = true;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut seen: Vec<bool> = Vec::new();
    let timed_tag = format!("{}/e", shared.tag);
    let warm_tag = format!("{}/warm", shared.tag);
    loop {
        if shared.done.load(Ordering::Relaxed) {
            break;
        }
        let frame = match tokio::time::timeout(Duration::from_millis(100), body.frame()).await {
            Err(_) => continue,
            Ok(None) => {
                t.error = Some("stream ended".into());
                break;
            }
            Ok(Some(Err(e))) => {
                t.error = Some(format!("stream: {e}"));
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = unix_us();
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            let Some(json) = line.strip_prefix(b"data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
                continue;
            };
            let tag = v.get("tag").and_then(|t| t.as_str()).unwrap_or("");
            let d = v.get("data");
            if tag == timed_tag {
                let seq = d
                    .and_then(|d| d.get("seq"))
                    .and_then(serde_json::Value::as_u64);
                let sent = d
                    .and_then(|d| d.get("sent_us"))
                    .and_then(serde_json::Value::as_u64);
                if let (Some(seq), Some(sent)) = (seq, sent) {
                    let i = usize::try_from(seq).unwrap_or(usize::MAX);
                    if i >= seen.len() {
                        seen.resize(i.saturating_add(1).min(1 << 24), false);
                    }
                    if let Some(slot) = seen.get_mut(i) {
                        if *slot {
                            t.duplicates += 1;
                            continue;
                        }
                        *slot = true;
                    }
                    t.received += 1;
                    if t.received == shared.total {
                        shared.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    t.lags_us
                        .push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
                }
            } else if tag == warm_tag {
                if !t.warm {
                    t.warm = true;
                    shared.warm.fetch_add(1, Ordering::Relaxed);
                }
            } else if tag == saltgate::api::stream::LAGGED_TAG {
                t.lag_notices += 1;
                t.missed += d
                    .and_then(|d| d.get("missed"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
            }
        }
        buf.drain(..start);
    }
    if t.received < shared.total {
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
    t
}

async fn fanout(a: FanoutArgs) -> Result<String> {
    let target = Arc::new(parse_url(&a.url)?);
    let token: Arc<str> = a.token.clone().into();
    let bus = bus(&a.sock_dir);
    bus.wait_connected(Duration::from_secs(30))
        .await
        .context("connect to the master's event bus")?;
    let shared = Arc::new(SubShared {
        tag: format!("bench/fanout/{}", std::process::id()),
        total: (a.rate * a.duration).round() as u64,
        finished: AtomicU64::new(0),
        warm: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let subs = a.subs.max(1);
    let mut tasks = Vec::with_capacity(subs);
    for _ in 0..subs {
        tasks.push(tokio::spawn(subscriber(
            Arc::clone(&target),
            Arc::clone(&token),
            Arc::clone(&shared),
        )));
    }
    // Warm-up: fire until every stream has shown a warm-up event (or give up).
    let warm_tag = format!("{}/warm", shared.tag);
    let warm_started = Instant::now();
    let warm_deadline = warm_started + Duration::from_secs_f64(a.warmup_secs);
    while (shared.warm.load(Ordering::Relaxed) as usize) < subs && Instant::now() < warm_deadline {
        let _ = bus
            .fire(Event::new(
                warm_tag.as_str(),
                saltgate::salt::wire::payload::from_json(&json!({"warm": true})),
            ))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warm_secs = warm_started.elapsed().as_secs_f64();
    let warmed = shared.warm.load(Ordering::Relaxed);
    // Let the warm-up events drain before the timed part.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pad = "x".repeat(a.body_size);
    let timed_tag = format!("{}/e", shared.tag);
    let total = shared.total;
    let started = Instant::now();
    let mut fired = 0u64;
    let mut failed = 0u64;
    let mut late_max_us = 0u64;
    let fire_deadline =
        started + Duration::from_secs_f64(a.max_fire_secs.unwrap_or(2.0 * a.duration));
    let mut cut_short = false;
    while fired + failed < total {
        if Instant::now() >= fire_deadline {
            cut_short = true;
            break;
        }
        // Fire every event that is due by now, then sleep to the next one.
        let elapsed = started.elapsed().as_secs_f64();
        let due = ((elapsed * a.rate) as u64 + 1).min(total);
        while fired + failed < due && Instant::now() < fire_deadline {
            let seq = fired + failed;
            let planned = started + Duration::from_secs_f64(seq as f64 / a.rate);
            late_max_us = late_max_us.max(
                u64::try_from(
                    Instant::now()
                        .saturating_duration_since(planned)
                        .as_micros(),
                )
                .unwrap_or(u64::MAX),
            );
            let data = saltgate::salt::wire::payload::from_json(&json!({
                "seq": seq, "sent_us": unix_us(), "pad": pad,
            }));
            // A master that stops reading must not hold the cell past its time limit.
            let fire = bus.fire(Event::new(timed_tag.as_str(), data));
            match tokio::time::timeout_at(fire_deadline.into(), fire).await {
                Ok(Ok(())) => fired += 1,
                Ok(Err(_)) => failed += 1,
                Err(_) => {
                    cut_short = true;
                    break;
                }
            }
        }
        let next = started + Duration::from_secs_f64((fired + failed) as f64 / a.rate);
        tokio::time::sleep_until(next.into()).await;
    }
    let fire_secs = started.elapsed().as_secs_f64();
    // Drain: until every connected stream has everything, or drain_secs.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    while Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if shared.finished.load(Ordering::Relaxed) as usize >= subs {
            break;
        }
    }
    shared.done.store(true, Ordering::Relaxed);
    let mut tallies = Vec::with_capacity(subs);
    for t in tasks {
        tallies.push(t.await?);
    }
    let connected = tallies.iter().filter(|t| t.connected).count();
    let mut errors: Vec<String> = tallies.iter().filter_map(|t| t.error.clone()).collect();
    errors.sort();
    errors.dedup();
    let mut per_sub: Vec<u64> = tallies
        .iter()
        .filter(|t| t.connected)
        .map(|t| t.received)
        .collect();
    per_sub.sort_unstable();
    let mut lags: Vec<u32> = tallies
        .iter_mut()
        .flat_map(|t| std::mem::take(&mut t.lags_us))
        .collect();
    lags.sort_unstable();
    let received: u64 = per_sub.iter().sum();
    Ok(json!({
        "mode": "fanout",
        "subs": subs,
        "connected": connected,
        "warmed": warmed,
        "warmup_secs": (warm_secs * 1000.0).round() / 1000.0,
        "rate_target": a.rate,
        "secs": (fire_secs * 1000.0).round() / 1000.0,
        "fired": fired,
        "failed": failed,
        "fire_late_max_ms": late_max_us as f64 / 1000.0,
        "fire_cut_short": cut_short,
        "received": received,
        "per_sub_min": per_sub.first().copied().unwrap_or(0),
        "per_sub_median": per_sub.get(per_sub.len() / 2).copied().unwrap_or(0),
        "per_sub_max": per_sub.last().copied().unwrap_or(0),
        "subs_complete": per_sub.iter().filter(|&&n| n >= fired).count(),
        "duplicates": tallies.iter().map(|t| t.duplicates).sum::<u64>(),
        "lag_notices": tallies.iter().map(|t| t.lag_notices).sum::<u64>(),
        "lag_missed": tallies.iter().map(|t| t.missed).sum::<u64>(),
        "subs_with_notices": tallies.iter().filter(|t| t.lag_notices > 0).count(),
        "p50_ms": percentile(&lags, 0.50),
        "p99_ms": percentile(&lags, 0.99),
        "max_ms": lags.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        "errors": errors,
    })
    .to_string())
}

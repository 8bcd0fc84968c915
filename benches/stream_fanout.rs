//! Fan-out load: N SSE subscribers × M hook events against the real `saltgate` binary on the
//! built-in bus. Prints throughput, how many events each subscriber got or was told it missed,
//! and the server's resident memory (from `/proc/<pid>/status`) idle, with the subscribers
//! connected, and at its peak. No assertions on timing: this is a measurement.
//!
//!   cargo bench --bench stream_fanout                       500 subscribers × 10,000 events
//!   SUBSCRIBERS=100 EVENTS=2000 cargo bench --bench stream_fanout
//!   STALLED=300 EVENT_BYTES=1000000 EVENTS=300 SUBSCRIBERS=2 cargo bench --bench stream_fanout
//!
//! `EVENT_BYTES` pads each hook body to about that size (default: a small GitHub-like push).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement harness: a failed step aborts the run"
)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reads one subscriber's stream (HTTP/1.0, so the body is not chunked) until it has seen or
/// been told it missed `events` bench events. Returns (received, missed).
async fn subscriber(
    addr: std::net::SocketAddr,
    events: u64,
    ready: tokio::sync::mpsc::Sender<()>,
) -> (u64, u64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /events?tag=salt/netapi/hook/bench HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0_u8; 32 << 10];
    let (mut received, mut missed) = (0_u64, 0_u64);
    let mut headers_done = false;
    while received + missed < events {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "stream ended early");
        buf.extend_from_slice(&chunk[..n]);
        if !headers_done {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                buf.drain(..end + 4);
                headers_done = true;
                let _ = ready.send(()).await;
            } else {
                continue;
            }
        }
        let mut start = 0;
        while let Some(end) = find(&buf[start..], b"\n\n") {
            let record = &buf[start..start + end];
            if find(record, b"tag: salt/netapi/hook/bench").is_some() {
                received += 1;
            } else if find(record, b"saltgate/stream/lagged").is_some() {
                let text = String::from_utf8_lossy(record);
                let n: u64 = text
                    .split("\"missed\": ")
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                missed += n;
            }
            start += end + 2;
        }
        buf.drain(..start);
    }
    (received, missed)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::main]
async fn main() {
    let subscribers = env_usize("SUBSCRIBERS", 500);
    let events = env_usize("EVENTS", 10_000) as u64;
    let senders = env_usize("SENDERS", 8);
    // Subscribers that connect and never read: they must lag, not grow the server.
    let stalled = env_usize("STALLED", 20);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("master"),
        format!(
            "rest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  webhook_disable_auth: true\n\
             saltgate:\n  bus: builtin\n  streams_disable_auth: true\n  max_connections: 10000\n"
        ),
    )
    .unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = server.id().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("http://{addr}/")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = memory(pid);

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(subscribers);
    let subs: Vec<_> = (0..subscribers)
        .map(|_| tokio::spawn(subscriber(addr, events, ready_tx.clone())))
        .collect();
    for _ in 0..subscribers {
        ready_rx.recv().await.unwrap();
    }
    let mut stalled_conns = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await
            .unwrap();
        stalled_conns.push(s);
    }
    let connected = memory(pid);

    let pad = env_usize("EVENT_BYTES", 0);
    let body = if pad == 0 {
        r#"{"ref": "refs/heads/main", "repository": {"full_name": "acme/widgets"}, "pusher": {"name": "ci"}}"#.to_owned()
    } else {
        format!(
            r#"{{"ref": "refs/heads/main", "pad": "{}"}}"#,
            "x".repeat(pad.saturating_sub(32))
        )
    };
    let body = bytes::Bytes::from(body);
    let started = Instant::now();
    let per_sender = events / senders as u64;
    let extra = events % senders as u64;
    let fire: Vec<_> = (0..senders as u64)
        .map(|i| {
            let client = client.clone();
            let body = body.clone();
            let n = per_sender + u64::from(i < extra);
            tokio::spawn(async move {
                for _ in 0..n {
                    let r = client
                        .post(format!("http://{addr}/hook/bench"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for f in fire {
        f.await.unwrap();
    }
    let fired_in = started.elapsed();
    let (mut received, mut missed) = (0_u64, 0_u64);
    let (mut min_recv, mut max_missed) = (u64::MAX, 0_u64);
    for s in subs {
        let (r, m) = s.await.unwrap();
        received += r;
        missed += m;
        min_recv = min_recv.min(r);
        max_missed = max_missed.max(m);
    }
    let drained_in = started.elapsed();
    let end = memory(pid);
    drop(stalled_conns);
    let _ = server.kill().await;

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "stream fan-out: {subscribers} SSE subscribers (+{stalled} that never read) x {events} hook events ({senders} senders)"
    );
    println!(
        "  hooks fired in {:.2?} ({:.0}/s); all subscribers done in {:.2?} ({:.0} events delivered/s)",
        fired_in,
        events as f64 / fired_in.as_secs_f64(),
        drained_in,
        received as f64 / drained_in.as_secs_f64()
    );
    println!(
        "  delivered {received}, missed (each announced) {missed}; worst subscriber: {min_recv} received, {max_missed} missed"
    );
    println!(
        "  server RSS: idle {:.1} MiB, {subscribers} connected {:.1} MiB ({:.1} KiB each), end {:.1} MiB, peak (VmHWM) {:.1} MiB",
        mib(idle.0),
        mib(connected.0),
        (connected.0.saturating_sub(idle.0)) as f64 / subscribers as f64,
        mib(end.0),
        mib(end.1)
    );
}

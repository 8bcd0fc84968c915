//! Hostile connections: idle and trickling sockets, partial HTTP/2 prefaces, slow bodies, one
//! address holding many connections, streams crowding the listener, h2c. Each is driven against
//! the real listener; "another client" is a socket bound to 127.0.0.2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use saltgate::security::Secret;
use saltgate::security::signature::github;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::TestApp;

const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `s` within `limit` (whatever it answers first); the bytes it sent.
async fn closed_within<R: AsyncRead + Unpin>(s: &mut R, limit: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, got)
}

/// A reqwest client whose connections come from 127.0.0.2.
fn other_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(OTHER))
        .build()
        .unwrap()
}

const GITHUB_RULE: &str = "- path: github\n  auth: none\n  verify: {github: {secret_env: GH}}\n";
const GITHUB_SECRET: &str = "hostile-conn-secret";

/// POSTs a GitHub-signed hook from 127.0.0.2; the status and how long it took.
async fn signed_hook_from_other(app: &TestApp) -> (reqwest::StatusCode, Duration) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut req = other_client()
        .post(app.url("/hook/github/push"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "4c3f4f1e-0000-4000-8000-000000000001")
        .body(body.to_vec());
    for (k, v) in github::sign(&Secret::new(GITHUB_SECRET.into()).unwrap(), body) {
        req = req.header(k, v);
    }
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(1), req.send())
        .await
        .expect("the signed hook from 127.0.0.2 was not answered within 1 s")
        .unwrap();
    (resp.status(), started.elapsed())
}

/// The soft limit on open files, from `/proc/self/limits` (no unsafe code needed).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_flood_from_one_address_does_not_lock_out_another() {
    const FLOOD: usize = 4096;
    // The client and server ends of every connection live in this process.
    if let Some(n) = open_files_limit() {
        assert!(
            n >= 2 * FLOOD as u64 + 1024,
            "this test needs RLIMIT_NOFILE >= {} (now {n}): raise it with `ulimit -n`",
            2 * FLOOD + 1024
        );
    }
    let deadline = Duration::from_secs(2);
    let app = TestApp::builder()
        .with_hooks(GITHUB_RULE, &[("GH", GITHUB_SECRET)])
        .with_limits(|l| {
            // Default max_connections (4096) and per-client cap; shortened deadlines.
            l.first_byte_timeout = deadline;
            l.header_timeout = deadline;
            l.body_idle_timeout = deadline;
            l.body_rate_grace = Duration::from_secs(1);
        })
        .spawn()
        .await;
    assert_eq!(app.state.config.saltgate.max_connections, FLOOD);
    let addr = app.addr;
    let opened = Instant::now();
    // Every fourth connection trickles its request line a byte at a time, every fourth a body;
    // the rest are idle.
    let flood: Vec<TcpStream> = futures::stream::iter(0..FLOOD)
        .map(|i| async move {
            let mut s = connect_from(Ipv4Addr::LOCALHOST, addr).await;
            let start: &[u8] = match i % 4 {
                1 => b"P",
                2 => b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
                _ => b"",
            };
            if !start.is_empty() {
                let _ = s.write_all(start).await;
            }
            s
        })
        .buffered(32)
        .collect()
        .await;
    let open_took = opened.elapsed();
    let (mut readers, writers): (Vec<_>, Vec<_>) =
        flood.into_iter().map(TcpStream::into_split).unzip();
    // The tricklers keep sending a byte every 200 ms while their socket stays open.
    let trickle = tokio::spawn(async move {
        let mut writers = writers;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (i, w) in writers.iter_mut().enumerate() {
                if i % 4 == 1 || i % 4 == 2 {
                    let _ = w.try_write(b"a");
                }
            }
        }
        writers
    });

    let (status, took) = signed_hook_from_other(&app).await;
    assert_eq!(status, 200);
    eprintln!("{FLOOD} connections opened in {open_took:?}; the signed hook took {took:?}");

    // Every one of them is closed within its deadline (plus a generous margin).
    let limit = deadline * 2 + Duration::from_secs(3);
    let closed = futures::stream::iter(readers.iter_mut().enumerate())
        .map(|(i, r)| async move {
            let (closed, _) = closed_within(r, limit).await;
            if !closed {
                eprintln!("still open: connection {i}, kind {}", i % 4);
            }
            closed
        })
        .buffer_unordered(FLOOD)
        .filter(|closed| futures::future::ready(*closed))
        .count()
        .await;
    let all_closed = opened.elapsed();
    assert_eq!(
        closed,
        FLOOD,
        "{} of {FLOOD} idle or trickling connections still open {all_closed:?} after opening",
        FLOOD - closed
    );
    eprintln!("all {FLOOD} closed {all_closed:?} after the flood started");
    trickle.abort();
}

#[tokio::test]
async fn per_client_cap_refuses_the_excess_while_another_address_gets_in() {
    let app = TestApp::builder()
        .with_limits(|l| l.max_connections_per_client = 4)
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(Ipv4Addr::LOCALHOST, app.addr).await);
    }
    let mut excess = connect_from(Ipv4Addr::LOCALHOST, app.addr).await;
    let (closed, _) = closed_within(&mut excess, Duration::from_secs(1)).await;
    assert!(
        closed,
        "a fifth connection from 127.0.0.1 was kept past the cap of 4"
    );
    // The held ones are still open, and another address is served.
    let (closed, _) = closed_within(&mut held[0], Duration::from_millis(200)).await;
    assert!(!closed, "a connection within the cap was closed");
    let resp = tokio::time::timeout(
        Duration::from_secs(1),
        other_client().get(app.url("/")).send(),
    )
    .await
    .expect("127.0.0.2 served while 127.0.0.1 is at its cap")
    .unwrap();
    assert_eq!(resp.status(), 200);
    // Closing one frees a place for 127.0.0.1 again.
    let (accepted, closed) = app.connections();
    drop(held.pop());
    app.connections_reach(accepted, closed + 1).await;
    let mut again = connect_from(Ipv4Addr::LOCALHOST, app.addr).await;
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut again, Duration::from_secs(2)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("saltgate_connection_limits_total{limit=\"per_client\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_connection_is_closed_at_its_first_byte_deadline() {
    let app = TestApp::builder()
        .with_limits(|l| l.first_byte_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let (closed, _) = closed_within(&mut s, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a connection that sent nothing was still open after 4 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn partial_http2_preface_is_closed_in_plain_text_and_tls() {
    let app = TestApp::builder()
        .with_limits(|l| l.header_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(&H2_PREFACE[..20]).await.unwrap();
    let (closed, _) = closed_within(&mut s, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a partial HTTP/2 preface held a plain-text connection"
    );

    let app = TestApp::builder()
        .with_tls()
        .with_limits(|l| {
            l.header_timeout = Duration::from_secs(1);
            l.first_byte_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    // ALPN h2 and part of the preface.
    let mut tls = tls_connect(app.addr, b"h2").await;
    tls.write_all(&H2_PREFACE[..10]).await.unwrap();
    tls.flush().await.unwrap();
    let (closed, _) = closed_within(&mut tls, Duration::from_secs(4)).await;
    assert!(closed, "a partial HTTP/2 preface held a TLS connection");
    // A handshake and then nothing.
    let mut tls = tls_connect(app.addr, b"http/1.1").await;
    let (closed, _) = closed_within(&mut tls, Duration::from_secs(4)).await;
    assert!(closed, "a TLS connection idle after its handshake was kept");
}

#[tokio::test]
async fn trickling_or_stalled_body_is_cut_off_with_408() {
    let app = TestApp::builder()
        .with_limits(|l| {
            l.body_idle_timeout = Duration::from_secs(1);
            l.body_min_rate = 100;
            l.body_rate_grace = Duration::from_secs(1);
        })
        .spawn()
        .await;
    // 10 bytes/s, well under the 100 bytes/s minimum, and never idle for 1 s.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(5) {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            got.extend_from_slice(&buf[..n]);
            if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "trickled body: {text:?}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // A body that stops: cut off after the idle timeout.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let (closed, got) = closed_within(&mut s, Duration::from_secs(4)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(closed, "stalled body: still open");
    assert!(text.starts_with("HTTP/1.1 408"), "stalled body: {text:?}");
    assert!(text.contains("body_timeout"), "{text}");
    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("saltgate_connection_limits_total{limit=\"body\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stream_budget_is_separate_from_the_general_budget() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.saltgate.streams_disable_auth = true;
            c.saltgate.stream_keepalive_secs = 1;
        })
        .with_limits(|l| {
            l.max_connections = 3;
            l.max_streams = 2;
        })
        .spawn()
        .await;
    let open = |app: &TestApp| reqwest::Client::new().get(app.url("/events")).send();
    let s1 = open(&app).await.unwrap();
    let s2 = open(&app).await.unwrap();
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    // The stream budget is full: refused at once, with Retry-After.
    let third = tokio::time::timeout(Duration::from_secs(2), open(&app))
        .await
        .expect("a stream past the stream budget was not answered")
        .unwrap();
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["code"], "busy");
    // The two open streams do not count in the general budget: two idle connections and a hook
    // still fit in its three slots.
    let (accepted, closed) = app.connections();
    let _idle1 = TcpStream::connect(app.addr).await.unwrap();
    let _idle2 = TcpStream::connect(app.addr).await.unwrap();
    app.connections_reach(accepted + 2, closed).await;
    let hook = tokio::time::timeout(
        Duration::from_secs(1),
        reqwest::Client::new()
            .post(app.url("/hook/beside/streams"))
            .send(),
    )
    .await
    .expect("open streams crowded a hook out of the general budget")
    .unwrap();
    assert_eq!(hook.status(), 200);
    // A stream that ends gives its place back.
    drop(s1);
    let fourth = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = open(&app).await.unwrap();
            if r.status() == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a closed stream's place was not given back");
    drop((fourth, s2));
}

#[tokio::test]
async fn buffered_bodies_share_one_byte_budget() {
    let app = TestApp::builder()
        .with_limits(|l| l.max_buffered_body_bytes = 1000)
        .spawn()
        .await;
    // A body of 800 declared bytes is being received slowly: the 700 received count.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 800\r\n\r\n")
        .await
        .unwrap();
    slow.write_all(&[b'y'; 700]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = reqwest::Client::new();
    let second = c
        .post(app.url("/hook/other"))
        .header("content-type", "text/plain")
        .body(vec![b'x'; 800])
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        503,
        "a body past the byte budget was buffered"
    );
    assert!(second.headers().contains_key("retry-after"));
    // Small bodies still fit beside it; a declared size alone reserves nothing.
    let mut declared = TcpStream::connect(app.addr).await.unwrap();
    declared
        .write_all(b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let small = c
        .post(app.url("/hook/other"))
        .body(vec![b'x'; 200])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    // Once the slow body is done and dropped, its bytes are back.
    slow.write_all(&[b'y'; 100]).await.unwrap();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let third = c
        .post(app.url("/hook/other"))
        .body(vec![b'x'; 800])
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8; 9] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn h2c_is_not_served_and_h2_over_tls_has_few_streams() {
    let app = TestApp::builder().spawn().await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(H2_SETTINGS).await.unwrap();
    let (closed, got) = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "the h2c attempt was kept open");
    assert!(
        got.len() < 9 || got[3] != 4,
        "plain text answered an HTTP/2 SETTINGS frame: {got:?}"
    );

    let app = TestApp::builder().with_tls().spawn().await;
    let mut tls = tls_connect(app.addr, b"h2").await;
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(H2_SETTINGS).await.unwrap();
    tls.flush().await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(3), tls.read_exact(&mut head))
        .await
        .expect("no HTTP/2 answer over TLS")
        .unwrap();
    assert_eq!(head[3], 4, "the first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // 0x3 MAX_CONCURRENT_STREAMS, 0x4 INITIAL_WINDOW_SIZE.
    assert!(settings.contains(&(3, 32)), "{settings:?}");
    assert!(settings.contains(&(4, 64 * 1024)), "{settings:?}");
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, alpn: &[u8]) -> TlsStream {
    use rustls_pki_types::pem::PemObject;
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn reader_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let app = TestApp::builder()
        .with_config(|c| c.saltgate.streams_disable_auth = true)
        .with_limits(|l| {
            l.write_timeout = Duration::from_secs(1);
            // A stream connection's write deadline is the stream one.
            l.stream_write_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    // An `/events` reader with a small receive buffer that never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(app.addr).await.unwrap();
    reader
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Enough events to fill every socket buffer between saltgate and the reader.
    let c = reqwest::Client::new();
    let body = "x".repeat(256 * 1024);
    for i in 0..40 {
        let resp = c
            .post(app.url(&format!("/hook/big/{i}")))
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // What was buffered can still be read, then the connection ends.
    let (closed, got) = closed_within(&mut reader, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a reader that stopped reading was kept ({} bytes read)",
        got.len()
    );
    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("saltgate_connection_limits_total{limit=\"write\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_keeps_its_stream_place_until_its_socket_closes() {
    let app = TestApp::builder()
        .with_config(|c| c.saltgate.streams_disable_auth = true)
        .with_limits(|l| l.max_streams = 1)
        .spawn()
        .await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
        .await
        .unwrap();
    let refused = reqwest::get(app.url("/events")).await.unwrap();
    assert_eq!(
        refused.status(),
        503,
        "the upgraded WebSocket left the stream budget"
    );
    drop(ws);
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = reqwest::get(app.url("/events")).await.unwrap();
            if r.status() == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a closed WebSocket's stream place was not given back");
    drop(reopened);
}

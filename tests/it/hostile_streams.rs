//! Hostile input: event stream readers that stop reading (issue 10, finding 5).
//!
//! 300 `/events` and 100 `/ws` readers connect, start their stream and never read again, while
//! 300 hooks of 1 MiB are fired. The server must hold at most 64 MiB more than before (its peak,
//! `VmHWM`, against its resident size beforehand), and a live SSE reader and a live WebSocket
//! reader must each receive every event with nothing missed. The write deadline is set far off
//! there, so the stalled readers stay subscribed throughout; a second test sets it short and
//! checks that stalled readers are dropped once `stream_write_timeout_secs` has passed.
//!
//! saltgate runs as its own process (the built binary on the built-in bus) so its memory is its
//! own, not shared with the other tests of this binary. Stalled readers connect from 127.0.0.2 to
//! 127.0.0.9 (50 per address) with small receive buffers, so the kernel takes little of what the
//! server writes and per-address connection caps are not what refuses them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const STALLED_SSE: usize = 300;
const STALLED_WS: usize = 100;
const HOOKS: usize = 300;
const BODY: usize = 1 << 20;
const BUDGET_KIB: u64 = 64 << 10;
const TAG: &str = "salt/netapi/hook/hostile/";

/// A saltgate process on an ephemeral port, killed on drop.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(write_timeout_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("master"),
            format!(
                "rest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  \
                 webhook_disable_auth: true\n  stats_disable_auth: true\n\
                 saltgate:\n  bus: builtin\n  streams_disable_auth: true\n  \
                 stream_write_timeout_secs: {write_timeout_secs}\n"
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
            .args(["serve", "--config"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = Self {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("saltgate did not start listening on {addr}");
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Starts measuring the peak from now.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    /// The `saltgate_stream_subscribers` gauge of `kind`.
    async fn subscribers(&self, kind: &str) -> u64 {
        let series = format!("saltgate_stream_subscribers{{kind=\"{kind}\"}}");
        let value = crate::support::metric(&self.url("/metrics"), &series).await;
        assert!(value >= 0.0 && value.fract() == 0.0, "{series} {value}");
        value as u64
    }

    async fn wait_subscribers(&self, kind: &str, want: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let have = self.subscribers(kind).await;
            if have == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind} subscribers: {have}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A TCP connection from `127.0.0.<2 + n % 8>` with a small receive buffer.
async fn small_socket(server: SocketAddr, n: usize) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let octet = 2 + u8::try_from(n % 8).unwrap();
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(127, 0, 0, octet),
            0,
        )))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// Opens `/events`, reads the response head and then never reads again.
async fn stalled_sse(server: SocketAddr, n: usize) -> TcpStream {
    let mut s = small_socket(server, n).await;
    s.write_all(b"GET /events HTTP/1.1\r\nHost: saltgate\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "stream closed early");
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    s
}

type StalledWs = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens `/ws`, says it is ready and then never reads again.
async fn stalled_ws(server: SocketAddr, n: usize) -> StalledWs {
    let s = small_socket(server, n).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{server}/ws"), s)
        .await
        .unwrap();
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    ws
}

/// The index of a hook event from its tag, checking it carried the whole body.
fn hook_index(tag: &str, text_len: usize) -> Option<usize> {
    let i = tag.strip_prefix(TAG)?.parse().ok()?;
    // The event carries the body twice: parsed (`post`) and raw (`body`).
    assert!(text_len > 2 * BODY, "event {i} is {text_len} bytes");
    Some(i)
}

/// Reads `/events` and reports each hook event's index; a lag notice fails the test.
async fn live_sse(url: String, seen: mpsc::UnboundedSender<usize>) {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned: usize = 0;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        loop {
            // A record ends in a blank line; the JSON on its data line has no raw newline.
            let mut at = scanned.saturating_sub(1);
            let mut end = None;
            while let Some(p) = buf[at..].iter().position(|&b| b == b'\n') {
                let p = at + p;
                if buf.get(p + 1) == Some(&b'\n') {
                    end = Some(p);
                    break;
                }
                at = p + 1;
            }
            let Some(end) = end else {
                scanned = buf.len();
                break;
            };
            let head = String::from_utf8_lossy(&buf[..end.min(512)]).into_owned();
            buf.drain(..end + 2);
            scanned = 0;
            let tag = head
                .lines()
                .find_map(|l| l.strip_prefix("tag: "))
                .unwrap_or_default();
            assert!(
                !tag.starts_with("saltgate/stream/lagged"),
                "live SSE lagged"
            );
            if let Some(i) = hook_index(tag, end) {
                let _ = seen.send(i);
            }
        }
    }
}

/// Reads `/ws` and reports each hook event's index; a lag notice fails the test.
async fn live_ws(url: String, seen: mpsc::UnboundedSender<usize>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg.unwrap() else {
            continue;
        };
        assert!(!text.contains("saltgate/stream/lagged"), "live WS lagged");
        let Some(json) = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
        else {
            continue;
        };
        let tag = json
            .rsplit_once(", \"tag\": \"")
            .and_then(|(_, t)| t.strip_suffix("\"}"))
            .unwrap_or_default();
        if let Some(i) = hook_index(tag, text.len()) {
            let _ = seen.send(i);
        }
    }
}

/// Fires hook `i` with a 1 MiB JSON body.
async fn fire(client: &reqwest::Client, server: &Server, i: usize) {
    let resp = client
        .post(server.url(&format!("/hook/hostile/{i}")))
        .header("content-type", "application/json")
        .body(body(i))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "hook {i}");
}

fn body(i: usize) -> String {
    let head = format!("{{\"i\": {i}, \"blob\": \"");
    let tail = "\"}";
    format!("{head}{}{tail}", "x".repeat(BODY - head.len() - tail.len()))
}

/// Waits until `rx` has reported `i` (in order: a live reader must see every event), calling
/// `check` every 200 ms meanwhile.
async fn expect_seen(
    rx: &mut mpsc::UnboundedReceiver<usize>,
    i: usize,
    who: &str,
    check: &dyn Fn(&str) -> u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        tokio::select! {
            got = rx.recv() => break got,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                check(&format!("waiting for {who} to receive hook {i}"));
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{who} did not receive hook {i} within 60 s"
                );
            }
        }
    };
    let got = got.unwrap_or_else(|| panic!("{who} stream ended before hook {i}"));
    assert_eq!(got, i, "{who} received hooks out of order or missed one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_readers_do_not_hold_memory_and_live_ones_get_every_event() {
    let server = Server::start(3600).await;
    let client = reqwest::Client::new();

    let (sse_tx, mut sse_seen) = mpsc::unbounded_channel();
    let (ws_tx, mut ws_seen) = mpsc::unbounded_channel();
    tokio::spawn(live_sse(server.url("/events"), sse_tx));
    tokio::spawn(live_ws(format!("ws://{}/ws", server.addr), ws_tx));
    server
        .wait_subscribers("sse", 1, Duration::from_secs(10))
        .await;
    server
        .wait_subscribers("ws", 1, Duration::from_secs(10))
        .await;
    // Warm up: the cost of one hook in flight is not what is measured here.
    const WARM: usize = 3;
    let unchecked = |_: &str| 0;
    for i in 0..WARM {
        fire(&client, &server, i).await;
        expect_seen(&mut sse_seen, i, "live SSE", &unchecked).await;
        expect_seen(&mut ws_seen, i, "live WS", &unchecked).await;
    }
    let (before, _) = server.memory();
    server.reset_peak();

    let mut stalled_sses = Vec::with_capacity(STALLED_SSE);
    for n in 0..STALLED_SSE {
        stalled_sses.push(stalled_sse(server.addr, n).await);
    }
    let mut stalled_wss = Vec::with_capacity(STALLED_WS);
    for n in 0..STALLED_WS {
        stalled_wss.push(stalled_ws(server.addr, n).await);
    }
    let sse_total = 1 + STALLED_SSE as u64;
    let ws_total = 1 + STALLED_WS as u64;
    server
        .wait_subscribers("sse", sse_total, Duration::from_secs(20))
        .await;
    server
        .wait_subscribers("ws", ws_total, Duration::from_secs(20))
        .await;

    let grown = |at: &str| {
        let (rss, peak) = server.memory();
        let growth = peak.saturating_sub(before);
        assert!(
            growth <= BUDGET_KIB,
            "{at}: peak RSS {} MiB, {} MiB over the {} MiB before the stalled readers (now {} \
             MiB); budget 64 MiB",
            peak / 1024,
            growth / 1024,
            before / 1024,
            rss / 1024
        );
        growth
    };
    let connected = server.memory().0;
    for i in WARM..WARM + HOOKS {
        fire(&client, &server, i).await;
        expect_seen(&mut sse_seen, i, "live SSE", &grown).await;
        expect_seen(&mut ws_seen, i, "live WS", &grown).await;
        grown(&format!("after hook {i}"));
    }
    let growth = grown("after every hook");
    eprintln!(
        "hostile streams: {STALLED_SSE} stalled SSE + {STALLED_WS} stalled WS readers, {HOOKS} \
         hooks of 1 MiB: RSS {before} KiB before, {connected} KiB with the readers connected, \
         peak {growth} KiB over the start"
    );

    // Still subscribed: what they pinned was measured above.
    server
        .wait_subscribers("sse", sse_total, Duration::from_secs(1))
        .await;
    server
        .wait_subscribers("ws", ws_total, Duration::from_secs(1))
        .await;
    drop(stalled_sses);
    drop(stalled_wss);
}

/// Stalled readers are dropped once they have held an event for `stream_write_timeout_secs`,
/// and the live readers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_readers_are_dropped_after_the_write_deadline() {
    const TIMEOUT: u64 = 2;
    let server = Server::start(TIMEOUT).await;
    let client = reqwest::Client::new();
    let (sse_tx, mut sse_seen) = mpsc::unbounded_channel();
    let (ws_tx, mut ws_seen) = mpsc::unbounded_channel();
    tokio::spawn(live_sse(server.url("/events"), sse_tx));
    tokio::spawn(live_ws(format!("ws://{}/ws", server.addr), ws_tx));
    let mut stalled_sses = Vec::new();
    let mut stalled_wss = Vec::new();
    for n in 0..20 {
        stalled_sses.push(stalled_sse(server.addr, n).await);
        stalled_wss.push(stalled_ws(server.addr, n).await);
    }
    server
        .wait_subscribers("sse", 21, Duration::from_secs(10))
        .await;
    server
        .wait_subscribers("ws", 21, Duration::from_secs(10))
        .await;
    let unchecked = |_: &str| 0;
    for i in 0..3 {
        fire(&client, &server, i).await;
        expect_seen(&mut sse_seen, i, "live SSE", &unchecked).await;
        expect_seen(&mut ws_seen, i, "live WS", &unchecked).await;
    }
    let within = Duration::from_secs(TIMEOUT * 4 + 20);
    server.wait_subscribers("sse", 1, within).await;
    server.wait_subscribers("ws", 1, within).await;
    // The WebSocket readers' connections are closed; the SSE readers' end at their next read.
    for mut ws in stalled_wss {
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        assert!(
            end.is_ok(),
            "a dropped WebSocket reader's connection stayed open"
        );
    }
    for mut s in stalled_sses {
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            let mut buf = vec![0_u8; 64 << 10];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a dropped SSE reader's connection stayed open");
    }
    fire(&client, &server, 3).await;
    expect_seen(&mut sse_seen, 3, "live SSE", &unchecked).await;
    expect_seen(&mut ws_seen, 3, "live WS", &unchecked).await;
}

//! The listener's own defences: header-read timeout, connection cap, graceful drain.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestApp;

#[tokio::test]
async fn slow_header_sender_is_cut_off() {
    let app = TestApp::builder()
        .with_limits(|l| l.header_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let started = std::time::Instant::now();
    let mut cut = false;
    for b in request
        .iter()
        .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
    {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            // The server answered (408) or closed: either way it is cut off.
            let _ = n;
            cut = true;
            break;
        }
    }
    assert!(cut, "a byte-a-while client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_cap_holds_extra_clients_back() {
    let app = TestApp::builder()
        .with_limits(|l| l.max_connections = 2)
        .spawn()
        .await;
    // Two idle connections take both slots.
    let _a = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    app.connections_reach(2, 0).await;
    let third = tokio::time::timeout(Duration::from_millis(500), reqwest::get(app.url("/"))).await;
    assert!(third.is_err(), "a third connection was served past the cap");
    drop(_a);
    let resp = tokio::time::timeout(Duration::from_secs(5), reqwest::get(app.url("/")))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn shutdown_drains_and_stops_accepting() {
    let app = TestApp::builder().spawn().await;
    let addr = app.addr;
    assert_eq!(reqwest::get(app.url("/")).await.unwrap().status(), 200);
    app.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let app = TestApp::builder()
        .with_limits(|l| {
            l.header_timeout = Duration::from_secs(1);
            l.keep_alive_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the server must not keep the idle connection forever.
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "idle keep-alive connection still open after 4 s"
    );
}

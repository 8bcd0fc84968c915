//! TLS from `ssl_crt`/`ssl_key` (rustls), and when plain HTTP is refused.

use saltgate::config::Config;
use saltgate::server;

use crate::support::TestApp;

fn client() -> reqwest::Client {
    let ca = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.crt"),
    )
    .unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_and_hooks_over_tls() {
    let app = TestApp::builder().with_tls().spawn().await;
    let url = format!("https://localhost:{}/", app.addr.port());
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut sub = app.subscribe();
    let resp = client()
        .post(format!("https://localhost:{}/hook/tls", app.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    crate::support::recv_event(&mut sub, "salt/netapi/hook/tls").await;
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::get(app.url("/")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn stalled_handshake_does_not_block_other_clients() {
    let app = TestApp::builder().with_tls().spawn().await;
    // Open a TCP connection and never start the handshake.
    let _stalled = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let url = format!("https://localhost:{}/", app.addr.port());
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client().get(&url).send())
        .await
        .expect("served while another handshake stalls")
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn plain_http_needs_loopback_or_disable_ssl() {
    let mut config = Config::builtin();
    config.api.host = "0.0.0.0".parse().unwrap();
    let Err(err) = server::tls_from_config(&config) else {
        panic!("plain HTTP on 0.0.0.0 accepted")
    };
    let err = err.to_string();
    assert!(err.contains("disable_ssl"), "{err}");
    config.api.disable_ssl = true;
    assert!(server::tls_from_config(&config).unwrap().is_none());
    let mut config = Config::builtin();
    config.api.host = "127.0.0.1".parse().unwrap();
    assert!(server::tls_from_config(&config).unwrap().is_none());
}

//! Several salt-api blocks in one master config: each dialect on its own listener, over one
//! core (state, metrics, connection budget); and the rest_wsgi dialect's own edges (TLS, the
//! failed-credential throttle, its error shape).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::StatusCode;
use saltgate::config::{Config, Dialect};
use saltgate::server;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::fake_master::FakeMaster;

/// Loads `text` as a master config and serves every listener it asks for; their addresses by
/// dialect, and a sender that stops the server.
async fn serve_config(
    text: &str,
) -> (
    HashMap<&'static str, SocketAddr>,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let text = text.replace("@DIR@", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.path().join("master"), text).unwrap();
    let config = Config::load(dir.path(), &HashMap::new()).unwrap();
    let limits = server::Limits::from_config(&config);
    let listeners = server::bind_all(&config).await.unwrap();
    let addrs = listeners
        .iter()
        .map(|l| (l.dialect.block(), l.tcp.local_addr().unwrap()))
        .collect();
    let state = server::build_state(config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(state, listeners, limits, async {
        let _ = stopped.await;
    }));
    (addrs, stop, dir)
}

const BOTH: &str = "netapi_enable_clients: [runner]\n\
                    rest_cherrypy:\n  port: 0\n  host: 127.0.0.1\n  stats_disable_auth: true\n\
                    rest_wsgi:\n  port: 0\n\
                    saltgate:\n  bus: builtin\n";

#[tokio::test]
async fn a_config_with_both_blocks_serves_both_over_one_core() {
    let (addrs, _stop, _dir) = serve_config(BOTH).await;
    let cherry = addrs["rest_cherrypy"];
    let wsgi = addrs["rest_wsgi"];
    assert_ne!(cherry.port(), wsgi.port());
    // rest_wsgi binds localhost, as salt-api's does.
    assert_eq!(wsgi.ip(), IpAddr::from([127, 0, 0, 1]));
    let c = reqwest::Client::new();
    let v: Value = c
        .get(format!("http://{cherry}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["return"], "Welcome");
    let resp = c.get(format!("http://{wsgi}/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"return": ["T", "h", "e", "y", " ""#),
        "{text}"
    );
    // rest_cherrypy's routes are not on the rest_wsgi listener: every path is rest_wsgi's.
    let resp = c
        .post(format!("http://{wsgi}/login"))
        .json(&json!([{"client": "runner", "fun": "test.arg", "username": "u", "password": "p", "eauth": "pam"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "no master on the built-in bus");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"return": "No Salt master is attached: this saltgate runs on its built-in bus"}"#
    );
    // One core: the rest_wsgi requests are counted in the metrics rest_cherrypy serves.
    let metrics = c
        .get(format!("http://{cherry}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"saltgate_http_requests_total{route="/{*path}",method="POST",status="503"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn listeners_share_the_connection_budget() {
    let text = format!("{BOTH}  max_connections: 1\n  first_byte_timeout_secs: 1\n");
    let (addrs, _stop, _dir) = serve_config(&text).await;
    // An idle connection to rest_wsgi holds the only slot...
    let _idle = tokio::net::TcpStream::connect(addrs["rest_wsgi"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so rest_cherrypy's client waits until the first-byte deadline closes it.
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("http://{}/", addrs["rest_cherrypy"]))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "served after {:?}: the budget is not shared",
        started.elapsed()
    );
}

#[tokio::test]
async fn rest_wsgi_serves_tls_when_its_block_names_a_certificate() {
    let text = "rest_wsgi:\n  port: 0\n  ssl_crt: @DIR@/tests/fixtures/tls/server.crt\n  \
                ssl_key: @DIR@/tests/fixtures/tls/server.key\nsaltgate:\n  bus: builtin\n";
    let (addrs, _stop, _dir) = serve_config(text).await;
    assert_eq!(addrs.len(), 1, "only rest_wsgi: {addrs:?}");
    let port = addrs["rest_wsgi"].port();
    let ca = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.crt"),
    )
    .unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let resp = c
        .put(format!("https://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"return": "405: Method Not Allowed"}"#
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn a_bad_certificate_on_any_listener_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master"),
        "rest_cherrypy:\n  port: 0\n  host: 127.0.0.1\nrest_wsgi:\n  port: 0\n  \
         ssl_crt: /nonexistent/c.pem\n  ssl_key: /nonexistent/k.pem\n",
    )
    .unwrap();
    let config = Config::load(dir.path(), &HashMap::new()).unwrap();
    let err = server::bind_all(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("rest_wsgi.ssl_crt: /nonexistent/c.pem"),
        "{err}"
    );
    // Plain HTTP on a public address needs disable_ssl, per block.
    std::fs::write(
        dir.path().join("master"),
        "rest_wsgi:\n  port: 0\n  host: 0.0.0.0\n",
    )
    .unwrap();
    let config = Config::load(dir.path(), &HashMap::new()).unwrap();
    let err = server::bind_all(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("rest_wsgi: no ssl_crt/ssl_key for 0.0.0.0"),
        "{err}"
    );
}

#[tokio::test]
async fn rest_wsgi_throttles_failed_credentials_and_answers_in_its_shape() {
    let master = FakeMaster::start(&[("saltdev", "saltdev")]);
    let app = TestApp::builder()
        .with_master(&master)
        .with_config(|c| c.master.netapi_enable_clients = vec!["runner".into()])
        .with_dialect(Dialect::RestWsgi)
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let burst = saltgate::security::throttle::DEFAULT_FAILURE_BURST as usize;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..burst + 2 {
        let resp = c
            .post(app.url("/"))
            .json(&json!([{"client": "runner", "fun": "test.arg",
                "eauth": "file", "username": "saltdev", "password": "wrong"}]))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        last = Some(resp);
    }
    let mut want = vec![StatusCode::UNAUTHORIZED; burst];
    want.extend([StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(statuses, want);
    assert_eq!(master.calls.other(), burst, "refused before the master");
    let last = last.unwrap();
    assert!(last.headers().contains_key("retry-after"));
    let v: Value = last.json().await.unwrap();
    assert!(
        v["return"]
            .as_str()
            .unwrap()
            .starts_with("Too many requests"),
        "{v}"
    );
    // A body over the cap: 413, in the same shape.
    let resp = c
        .post(app.url("/"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(v["return"].as_str().unwrap().contains("limit"), "{v}");
}

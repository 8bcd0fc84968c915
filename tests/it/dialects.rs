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

/// `POST url` with the session `token` and a JSON body.
async fn as_session(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    c.post(url)
        .header("x-auth-token", token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A rest_tornado block as salt-api reads it, for `with_config`.
fn tornado_block(yaml: &str) -> saltgate::config::RestTornado {
    serde_yaml::from_str(yaml).unwrap()
}

#[tokio::test]
async fn rest_tornado_routes_answer_as_rest_tornado() {
    let master = FakeMaster::start(&[("saltdev", "saltdev")]);
    let app = TestApp::builder()
        .with_master(&master)
        .with_config(|c| {
            c.master.netapi_enable_clients = vec!["local".into(), "runner".into()];
            c.tornado = Some(tornado_block("port: 0\n"));
        })
        .with_dialect(Dialect::RestTornado)
        .spawn()
        .await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // GET /: the clients rest_tornado serves, written as Python writes JSON.
    let resp = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"clients": ["local", "local_async", "runner", "runner_async"], "return": "Welcome"}"#
    );
    // Handlers that inherit GET from the root answer it too.
    let v: Value = c
        .get(app.url("/run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["return"], "Welcome");
    // rest_tornado's hook handler fails on GET (500); saltgate says 405.
    for path in ["/hook", "/hook/github"] {
        let resp = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{path}");
    }
    // GET /login is 401.
    let resp = c.get(app.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Session");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"status": "401 Unauthorized", "return": "Please log in"})
    );
    // Without a session (none, a malformed one, one the master does not know): to /login.
    let lowstate = json!([{"client": "runner", "fun": "test.arg"}]);
    for token in [None, Some("not-hex"), Some("ab12cd34")] {
        for (method, path) in [
            ("POST", "/"),
            ("POST", "/minions"),
            ("GET", "/minions"),
            ("GET", "/minions/m1"),
            ("GET", "/jobs"),
            ("GET", "/jobs/20261203000000000000"),
            ("POST", "/jobs"),
            ("GET", "/events"),
            ("POST", "/hook/github"),
        ] {
            let mut req = c.request(method.parse().unwrap(), app.url(path));
            if method == "POST" {
                req = req.json(&lowstate);
            }
            if let Some(t) = token {
                req = req.header("x-auth-token", t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 302, "{method} {path} {token:?}");
            assert_eq!(resp.headers()["location"], "/login", "{method} {path}");
        }
    }
    // POST /login: incomplete credentials are 400, wrong ones 401, good ones a token.
    let mut answers = Vec::new();
    for creds in [
        json!({"username": "saltdev", "eauth": "file"}),
        json!({"username": "saltdev", "password": "nope", "eauth": "file"}),
        json!({"username": "saltdev", "password": "saltdev", "eauth": "file"}),
    ] {
        answers.push(c.post(app.url("/login")).json(&creds).send().await.unwrap());
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [400, 401, 200]);
    let resp = answers.pop().unwrap();
    let v: Value = resp.json().await.unwrap();
    let token = v["return"][0]["token"].as_str().unwrap().to_owned();
    // With the session: each chunk runs with its own credentials; this master refuses every
    // command, so the first chunk fails to authenticate and ends the run.
    let two = json!([
        {"client": "runner", "fun": "test.arg"},
        {"client": "local", "tgt": "*", "fun": "test.ping"},
    ]);
    let before = master.calls.other();
    let resp = as_session(&c, &app.url("/"), &token, &two).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"return": ["Failed to authenticate"]}"#
    );
    assert_eq!(
        master.calls.other(),
        before + 1,
        "the second chunk never ran"
    );
    assert_eq!(master.calls.other_auth().last(), Some(&"token"));
    // /run needs no session: a chunk without credentials fails to authenticate.
    let resp = c
        .post(app.url("/run"))
        .json(&lowstate)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"return": ["Failed to authenticate"]}));
    // A client rest_tornado does not serve is refused before anything runs.
    let before = master.calls.other();
    let resp = as_session(
        &c,
        &app.url("/"),
        &token,
        &json!([
            {"client": "runner", "fun": "test.arg"},
            {"client": "wheel", "fun": "key.list_all"},
        ]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(master.calls.other(), before);
    // A client netapi_enable_clients does not list (rest_tornado ignores the list).
    let resp = as_session(
        &c,
        &app.url("/"),
        &token,
        &json!([{"client": "local_async", "tgt": "*", "fun": "test.ping"}]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "client_disabled", "{v}");
    // POST /minions takes local_async only, in rest_tornado's words.
    let resp = as_session(
        &c,
        &app.url("/minions"),
        &token,
        &json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["message"], "We don't serve your kind here", "{v}");
    // An empty body and a body of another type are refused (rest_tornado never answers the
    // first).
    let resp = c
        .post(app.url("/"))
        .header("x-auth-token", &token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(app.url("/"))
        .header("x-auth-token", &token)
        .header("content-type", "text/html")
        .body("<p>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // An unacceptable Accept: 406 before anything runs.
    let resp = c
        .post(app.url("/"))
        .header("x-auth-token", &token)
        .header("accept", "text/html")
        .json(&lowstate)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
    // Preflights: 204, the requested headers allowed.
    let resp = c
        .request(http::Method::OPTIONS, app.url("/"))
        .header(
            "access-control-request-headers",
            "x-auth-token,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-headers"],
        "x-auth-token,content-type"
    );
    assert_eq!(
        resp.headers()["access-control-allow-methods"],
        "OPTIONS, GET, POST"
    );
    // Without Access-Control-Request-Headers too (rest_tornado: 500).
    let resp = c
        .request(http::Method::OPTIONS, app.url("/minions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // The session cookie does not authenticate a request from another origin.
    let resp = c
        .post(app.url("/"))
        .header("cookie", format!("session_id={token}"))
        .header("origin", "https://evil.example")
        .json(&lowstate)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // rest_cherrypy's own routes are not rest_tornado's; WebSockets are off by default.
    for path in ["/logout", "/keys", "/stats", "/ws", "/all_events/ab12"] {
        let resp = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn rest_tornado_fires_its_own_hook_event_and_honours_its_block() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.tornado = Some(tornado_block(
                "port: 0\nwebhook_disable_auth: true\nwebsockets: true\n\
                 cors_origin: [\"https://ops.example\"]\n",
            ));
        })
        .with_dialect(Dialect::RestTornado)
        .spawn()
        .await;
    let mut sub = app.subscribe();
    let c = reqwest::Client::new();
    let resp = c
        .post(app.url("/hook/github/deploy?ref=main&tag=a&tag=b"))
        .header("x-github-event", "push")
        .header("x-auth-token", "deadbeef")
        .header("origin", "https://ops.example")
        .json(&json!({"after": "abc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://ops.example"
    );
    assert_eq!(resp.text().await.unwrap(), r#"{"success": true}"#);
    let ev = crate::support::recv_event(&mut sub, "salt/netapi/hook/github/deploy").await;
    let data = saltgate::salt::to_json(&ev.data);
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("_saltgate"))
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["_stamp", "get", "headers", "post"]);
    assert_eq!(data["post"], json!({"after": "abc"}));
    assert_eq!(data["get"], json!({"ref": "main", "tag": ["a", "b"]}));
    assert_eq!(data["headers"]["X-Github-Event"], "push");
    assert!(data["headers"].get("X-Auth-Token").is_none(), "{data}");
    assert!(data["headers"].get("Remote-Addr").is_none(), "{data}");
    // An origin the block does not list gets no CORS header.
    let resp = c
        .post(app.url("/hook/other"))
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    // With websockets on, the routes exist (a malformed token is refused, not 404).
    let resp = c.get(app.url("/all_events/not-hex")).send().await.unwrap();
    assert_ne!(resp.status(), 404);
}

#[tokio::test]
async fn a_config_with_every_block_serves_every_dialect() {
    let (addrs, _stop, _dir) = serve_config(
        "rest_cherrypy:\n  port: 0\n  host: 127.0.0.1\n\
         rest_tornado:\n  port: 0\n  address: 127.0.0.1\n  disable_ssl: true\n  backlog: 16\n\
         rest_wsgi:\n  port: 0\n\
         saltgate:\n  bus: builtin\n",
    )
    .await;
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    let c = reqwest::Client::new();
    let v: Value = c
        .get(format!("http://{}/", addrs["rest_tornado"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["clients"],
        json!(["local", "local_async", "runner", "runner_async"])
    );
    let v: Value = c
        .get(format!("http://{}/", addrs["rest_cherrypy"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["return"], "Welcome");
    // rest_tornado refuses to start without TLS on a public address, as saltgate does.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master"),
        "rest_tornado:\n  port: 0\nsaltgate:\n  bus: builtin\n",
    )
    .unwrap();
    let config = Config::load(dir.path(), &HashMap::new()).unwrap();
    let err = server::bind_all(&config).await.unwrap_err().to_string();
    assert!(err.starts_with("rest_tornado: no ssl_crt/ssl_key"), "{err}");
}

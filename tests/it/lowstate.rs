//! The lowstate API without a master: negotiation, body parsing, auth refusals, disabled
//! clients, CORS. Everything here is decided before saltgate would talk to a master, so on the
//! built-in bus a request that passes every check ends in 503 "no master".

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

const ALL_CLIENTS: [&str; 8] = [
    "local",
    "local_async",
    "local_batch",
    "local_subset",
    "runner",
    "runner_async",
    "wheel",
    "wheel_async",
];
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn app() -> TestApp {
    TestApp::builder()
        .with_config(|c| {
            c.master.netapi_enable_clients = ALL_CLIENTS.iter().map(|s| (*s).to_owned()).collect();
        })
        .spawn()
        .await
}

/// One request; returns status, content type and the body parsed as JSON or YAML.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    accept: Option<&str>,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.body(body.to_owned()).send().await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let value = if ct == "application/x-yaml" {
        serde_yaml::from_str(&text).unwrap()
    } else if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, ct, value)
}

async fn post(
    app: &TestApp,
    path: &str,
    ct: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let (s, _, v) = send(
        app,
        reqwest::Method::POST,
        path,
        Some(ct),
        None,
        token,
        body,
    )
    .await;
    (s, v)
}

#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["code"], code, "{:?}", got.1);
    assert_eq!(got.1["status"], status.as_u16(), "{:?}", got.1);
}

/// A valid body for each route in each format: (json, yaml, form).
fn bodies(path: &str) -> (&'static str, &'static str, &'static str) {
    match path {
        "/" | "/minions" => (
            r#"[{"client": "local", "tgt": "*", "fun": "test.ping"}]"#,
            "- client: local\n  tgt: '*'\n  fun: test.ping\n",
            "client=local&tgt=*&fun=test.ping",
        ),
        "/run" => (
            r#"[{"client": "local", "tgt": "*", "fun": "test.ping", "eauth": "pam", "username": "u", "password": "p"}]"#,
            "- {client: local, tgt: '*', fun: test.ping, eauth: pam, username: u, password: p}\n",
            "client=local&tgt=*&fun=test.ping&eauth=pam&username=u&password=p",
        ),
        _ => (
            r#"{"eauth": "pam", "username": "u", "password": "p"}"#,
            "eauth: pam\nusername: u\npassword: p\n",
            "eauth=pam&username=u&password=p",
        ),
    }
}

#[tokio::test]
async fn negotiation_sweep_every_body_route() {
    let app = app().await;
    let routes = ["/", "/run", "/login", "/token", "/minions"];
    let accepts = [
        ("application/json", Some("application/json")),
        ("application/x-yaml", Some("application/x-yaml")),
        ("*/*", Some("application/json")),
        ("text/html", None),
    ];
    for path in routes {
        let (json_body, yaml_body, form_body) = bodies(path);
        let kinds = [
            ("application/json", json_body, true),
            ("application/x-yaml", yaml_body, true),
            ("application/x-www-form-urlencoded", form_body, true),
            ("application/xml", "<lowstate/>", false),
        ];
        for (ct, body, good) in kinds {
            for (accept, want_ct) in accepts {
                let (status, got_ct, v) = send(
                    &app,
                    reqwest::Method::POST,
                    path,
                    Some(ct),
                    Some(accept),
                    Some(TOKEN),
                    body,
                )
                .await;
                let case = format!("{path} {ct} accept={accept}: {status} {v:?}");
                let Some(want_ct) = want_ct else {
                    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{case}");
                    assert_eq!(v["code"], "not_acceptable", "{case}");
                    continue;
                };
                assert_eq!(got_ct, want_ct, "{case}");
                if good {
                    // Every check passed: only the missing master is left.
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
                    assert_eq!(v["code"], "salt_unavailable", "{case}");
                } else {
                    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{case}");
                    assert_eq!(v["code"], "unsupported_media_type", "{case}");
                }
            }
        }
    }
}

#[tokio::test]
async fn not_acceptable_comes_before_auth_and_body() {
    let app = app().await;
    let (status, _, v) = send(
        &app,
        reqwest::Method::POST,
        "/",
        Some("application/json"),
        Some("application/xml"),
        None,
        "{nope",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(v["code"], "not_acceptable");
}

#[tokio::test]
async fn session_routes_refuse_missing_or_malformed_tokens() {
    let app = app().await;
    let chunk = r#"{"client": "local", "tgt": "*", "fun": "test.ping"}"#;
    for token in [None, Some("not-hex-../../etc/passwd"), Some("")] {
        for path in ["/", "/minions"] {
            let got = post(&app, path, "application/json", token, chunk).await;
            assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let got = post(&app, "/logout", "application/json", token, "").await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        for path in [
            "/minions",
            "/minions/m1",
            "/jobs",
            "/jobs/123",
            "/keys",
            "/keys/m1",
            "/stats",
        ] {
            let (s, _, v) = send(&app, reqwest::Method::GET, path, None, None, token, "").await;
            assert_error(&(s, v), StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // A body that would be refused anyway still gets 401 first: no parsing without a session.
    let got = post(&app, "/", "application/json", None, "{nope").await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    // The session cookie works like the header.
    let resp = reqwest::Client::new()
        .post(app.url("/"))
        .header("content-type", "application/json")
        .header("cookie", format!("session_id={TOKEN}"))
        .body(chunk)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn run_needs_credentials_in_every_chunk() {
    let app = app().await;
    let good = json!({"client": "runner", "fun": "test.arg", "token": TOKEN});
    let cases = [
        json!([good, {"client": "runner", "fun": "test.arg"}]),
        json!([{"client": "runner", "fun": "test.arg", "token": 42}]),
        json!([{"client": "runner", "fun": "test.arg", "token": "zz"}]),
        json!([{"client": "runner", "fun": "test.arg", "username": "u", "password": "p"}]),
    ];
    for body in cases {
        // A session header does not stand in for chunk credentials on /run.
        let got = post(
            &app,
            "/run",
            "application/json",
            Some(TOKEN),
            &body.to_string(),
        )
        .await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let got = post(
        &app,
        "/run",
        "application/json",
        None,
        r#"[{"client": "local", "tgt": "*", "fun": "cmd.run", "arg": "id", "raw_shell": true, "token": "ab"}]"#,
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(got.1["message"], "chunk 0: Raw shell option not allowed.");
}

#[tokio::test]
async fn disabled_and_unknown_clients_are_refused_before_anything_runs() {
    let app = TestApp::builder()
        .with_config(|c| c.master.netapi_enable_clients = vec!["local".into()])
        .spawn()
        .await;
    let body = json!([
        {"client": "local", "tgt": "*", "fun": "test.ping"},
        {"client": "wheel", "fun": "key.list_all"},
    ]);
    let got = post(
        &app,
        "/",
        "application/json",
        Some(TOKEN),
        &body.to_string(),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "client_disabled");
    assert_eq!(
        got.1["message"],
        "chunk 1: Client disabled: 'wheel'. Add to 'netapi_enable_clients' master config option to enable."
    );
    for client in ["bogus", "ssh"] {
        let body = json!({"client": client, "tgt": "*", "fun": "test.ping", "token": TOKEN});
        let got = post(&app, "/run", "application/json", None, &body.to_string()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{client}: {:?}", got.1);
    }
    let got = post(
        &app,
        "/run",
        "application/json",
        None,
        r#"{"tgt": "*", "fun": "x", "token": "ab"}"#,
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_lowstate");
    assert_eq!(
        got.1["message"],
        "chunk 0: Invalid client specified: 'None'"
    );
    // Nothing enabled (Salt's default): every client refused.
    let app = TestApp::builder().spawn().await;
    let got = post(
        &app,
        "/",
        "application/x-www-form-urlencoded",
        Some(TOKEN),
        "client=local&tgt=*&fun=test.ping",
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "client_disabled");
}

#[tokio::test]
async fn malformed_bodies_get_clear_400s() {
    let app = app().await;
    let cases: &[(&str, &str, &str)] = &[
        ("application/json", "{nope", "bad_body"),
        ("application/json", "[1] trailing", "bad_body"),
        ("application/x-yaml", "- [unclosed", "bad_body"),
        ("application/json", "{}", "bad_lowstate"),
        ("application/json", "\"text\"", "bad_lowstate"),
        ("application/json", "42", "bad_lowstate"),
        ("application/json", "", "bad_lowstate"),
        ("text/plain", "not json", "bad_lowstate"),
        ("application/json", "[\"not a map\"]", "bad_lowstate"),
        (
            "application/json",
            r#"[{"client": "local", "fun": "test.ping"}]"#,
            "bad_lowstate",
        ),
        (
            "application/json",
            r#"[{"client": "runner"}]"#,
            "bad_lowstate",
        ),
    ];
    for (ct, body, code) in cases {
        let got = post(&app, "/", ct, Some(TOKEN), body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let got = post(&app, "/", "application/json", Some(TOKEN), &deep).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_body");
    let got = post(
        &app,
        "/login",
        "application/json",
        None,
        r#"{"username": "u"}"#,
    )
    .await;
    // Incomplete credentials are refused as rest_cherrypy refuses them; no body at all is 400.
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    let got = post(&app, "/login", "application/json", None, "").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_lowstate");
    let got = post(
        &app,
        "/token",
        "application/json",
        None,
        r#"[{"username": "u", "password": "p"}]"#,
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_lowstate");
    // An empty lowstate is fine and runs nothing; with no master that is still a 503.
    let got = post(&app, "/", "application/json", Some(TOKEN), "[]").await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "salt_unavailable");
}

#[tokio::test]
async fn yaml_alias_bomb_is_refused_quickly() {
    let app = app().await;
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let got = post(&app, "/", "application/x-yaml", Some(TOKEN), &doc).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_body");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::builder()
        .with_config(|c| c.api.max_request_body_size = 64)
        .spawn()
        .await;
    let body = format!(
        r#"[{{"client": "local", "tgt": "*", "fun": "test.arg", "arg": ["{}"]}}]"#,
        "x".repeat(100)
    );
    let got = post(&app, "/", "application/json", Some(TOKEN), &body).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn get_routes_explain_themselves() {
    let app = app().await;
    let resp = reqwest::get(app.url("/login")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["www-authenticate"], "Session");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": null, "return": "Please log in"})
    );
    for path in ["/", "/run", "/token"] {
        let v: Value = reqwest::get(app.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["return"], "Welcome", "{path}");
    }
}

#[tokio::test]
async fn stats_without_auth_when_configured() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.api.stats_disable_auth = true;
            c.api.collect_stats = true;
        })
        .spawn()
        .await;
    reqwest::get(app.url("/nope")).await.unwrap();
    let v: Value = reqwest::get(app.url("/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["saltgate"]["collect_stats"], true);
    assert!(
        v["saltgate"]["requests"]["total"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert!(
        v["saltgate"]["requests"]["4xx"].as_u64().unwrap() >= 1,
        "{v}"
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_an_allowlist_when_set() {
    let app = app().await;
    let resp = reqwest::Client::new()
        .get(app.url("/"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let app = TestApp::builder()
        .with_config(|c| {
            c.api.cors_origin = Some(saltgate::config::CorsOrigin::Many(vec![
                "https://ok.example".into(),
            ]))
        })
        .spawn()
        .await;
    let client = reqwest::Client::new();
    for path in ["/", "/login", "/run", "/minions", "/logout", "/nonexistent"] {
        let resp = client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://ok.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "x-auth-token, content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(
            h["access-control-allow-origin"], "https://ok.example",
            "{path}"
        );
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("x-auth-token")
        );
        assert!(h.get("access-control-allow-credentials").is_none());
        let resp = client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    let resp = client
        .get(app.url("/"))
        .header("origin", "https://ok.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://ok.example"
    );
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "x-auth-token"
    );
}

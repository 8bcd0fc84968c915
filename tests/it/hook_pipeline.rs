//! `/hook`: the happy path and each refusal, with its status, its body and no event fired.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_no_event, data_json, recv_event};

#[tokio::test]
async fn hook_fires_salt_api_shaped_event() {
    let app = TestApp::builder().spawn().await;
    let mut sub = app.subscribe();
    let resp = reqwest::Client::new()
        .post(app.url("/hook/github/deploy"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-auth-token", "do-not-leak")
        .header("remote-addr", "6.6.6.6")
        .body(r#"{"ref": "refs/heads/main", "n": [1, 2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let ev = recv_event(&mut sub, "salt/netapi/hook/").await;
    assert_eq!(ev.tag, "salt/netapi/hook/github/deploy");
    let data = data_json(&ev);
    assert_eq!(data["post"], json!({"ref": "refs/heads/main", "n": [1, 2]}));
    assert_eq!(data["body"], r#"{"ref": "refs/heads/main", "n": [1, 2]}"#);
    assert_eq!(data["headers"]["X-Github-Event"], "push");
    assert_eq!(data["headers"]["Remote-Addr"], "127.0.0.1");
    assert!(data["headers"].get("X-Auth-Token").is_none());
    assert!(!data.to_string().contains("do-not-leak"));
    assert_eq!(data["_stamp"].as_str().unwrap().len(), 26);
}

#[tokio::test]
async fn bare_hook_url_and_form_and_empty_bodies() {
    let app = TestApp::builder().spawn().await;
    let mut sub = app.subscribe();
    let client = reqwest::Client::new();
    let resp = client.post(app.url("/hook")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook").await;
    assert_eq!(ev.tag, "salt/netapi/hook");
    assert_eq!(data_json(&ev)["post"], json!({}));
    assert_eq!(data_json(&ev)["body"], "");
    let resp = client
        .post(app.url("/hook/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1&a=2&b=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook/form").await;
    assert_eq!(data_json(&ev)["post"], json!({"a": ["1", "2"], "b": "x"}));
}

#[tokio::test]
async fn post_without_content_length_is_an_empty_body_not_411() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder().spawn().await;
    let mut sub = app.subscribe();
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /hook/bare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ev = recv_event(&mut sub, "salt/netapi/hook/bare").await;
    assert_eq!(data_json(&ev)["body"], "");
    assert_eq!(data_json(&ev)["post"], json!({}));
}

#[tokio::test]
async fn yaml_response_when_asked() {
    let app = TestApp::builder().spawn().await;
    let resp = reqwest::Client::new()
        .post(app.url("/hook/y"))
        .header("accept", "application/x-yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-yaml");
    assert_eq!(resp.text().await.unwrap().trim(), "success: true");
}

async fn refused(
    app: &TestApp,
    req: reqwest::RequestBuilder,
    status: StatusCode,
    code: &str,
) -> reqwest::header::HeaderMap {
    let mut sub = app.subscribe();
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), status);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_no_event(&mut sub).await;
    headers
}

#[tokio::test]
async fn each_refusal_has_status_body_and_fires_nothing() {
    let app = TestApp::builder()
        .with_config(|c| c.api.max_request_body_size = 1024)
        .spawn()
        .await;
    let c = reqwest::Client::new();
    refused(
        &app,
        c.post(app.url("/hook/a")).header("accept", "text/html"),
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
    )
    .await;
    refused(
        &app,
        c.post(app.url("/hook/a")).body(vec![b'x'; 2048]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    // Without Content-Length: counted while streaming.
    let stream = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 100]))),
    );
    refused(
        &app,
        c.post(app.url("/hook/a"))
            .body(reqwest::Body::wrap_stream(stream)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    refused(
        &app,
        c.post(app.url("/hook/a"))
            .header("content-type", "application/json")
            .body("{bad"),
        StatusCode::BAD_REQUEST,
        "bad_body",
    )
    .await;
    refused(
        &app,
        c.get(app.url("/nope")),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    refused(
        &app,
        c.post(app.url("/hook/a%0A%0Ab")),
        StatusCode::BAD_REQUEST,
        "bad_path",
    )
    .await;
}

#[tokio::test]
async fn token_auth_is_required_unless_disabled() {
    let app = TestApp::builder()
        .with_config(|c| c.api.webhook_disable_auth = false)
        .spawn()
        .await;
    let c = reqwest::Client::new();
    refused(
        &app,
        c.post(app.url("/hook/a")),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    refused(
        &app,
        c.post(app.url("/hook/a"))
            .header("x-auth-token", "whatever"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn index_lists_enabled_clients() {
    let app = TestApp::builder()
        .with_config(|c| c.master.netapi_enable_clients = vec!["local".into(), "runner".into()])
        .spawn()
        .await;
    let body: Value = reqwest::get(app.url("/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"return": "Welcome", "clients": ["local", "runner"]})
    );
}

#[tokio::test]
async fn a_thousand_hooks_on_32_connections_all_reach_the_bus() {
    let app = TestApp::builder().spawn().await;
    let mut sub = app.subscribe();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let url = app.url("/hook/load");
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, counter) = (client.clone(), url.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            loop {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 1000 {
                    return ok;
                }
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"id": {i}}}"#))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                ok += 1;
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 1000);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 1000 {
        let ev = recv_event(&mut sub, "salt/netapi/hook/load").await;
        seen.insert(data_json(&ev)["post"]["id"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 1000);
}

#[tokio::test]
async fn yaml_bodies_stay_text_unless_the_rule_parses_them_bounded() {
    let rule = "- path: yml\n  auth: none\n  yaml: true\n";
    let app = TestApp::builder().with_hooks(rule, &[]).spawn().await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let send = |path: &str, body: &str| {
        c.post(app.url(path))
            .header("content-type", "application/x-yaml")
            .body(body.to_owned())
    };
    assert_eq!(
        send("/hook/other", "a: 1\n").send().await.unwrap().status(),
        StatusCode::OK
    );
    let ev = recv_event(&mut sub, "salt/netapi/hook/other").await;
    assert_eq!(data_json(&ev)["post"], "a: 1\n");
    assert_eq!(
        send("/hook/yml", "a: [1, 2]\n")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ev = recv_event(&mut sub, "salt/netapi/hook/yml").await;
    assert_eq!(data_json(&ev)["post"], json!({"a": [1, 2]}));
    // A billion-laughs document is refused, not expanded.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 10].join(", ");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    refused(
        &app,
        send("/hook/yml", &bomb),
        StatusCode::BAD_REQUEST,
        "bad_body",
    )
    .await;
}

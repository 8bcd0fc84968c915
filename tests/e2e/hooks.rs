//! The hook pipeline in front of a real master and Reactor: a signed push makes the Reactor act;
//! every refusal is answered with its status and a JSON body, and nothing reaches the bus.

use std::time::Duration;

use reqwest::StatusCode;
use saltgate::salt::bus::ipc::{IpcBus, IpcBusConfig};
use saltgate::salt::{BusItem, EventBus};
use saltgate::security::Secret;
use saltgate::security::signature::github;

use crate::gate::{Gate, blocking};
use crate::support::salt;

const RULES: &str = r#"
- path: e2e/github
  auth: none
  verify: {github: {secret_env: E2E_GITHUB_SECRET}}
  max_body: 4096
  rate: {per_second: 1, burst: 3}
- path: e2e/fenced
  auth: none
  allow_from: [203.0.113.0/24]
"#;

fn signed(body: &[u8], secret: &str, delivery: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in github::sign(&Secret::new(secret.into()).unwrap(), body) {
        h.insert(k, v.parse().unwrap());
    }
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-github-event", "push".parse().unwrap());
    h.insert("x-github-delivery", delivery.parse().unwrap());
    h
}

#[tokio::test]
async fn signed_push_reaches_the_reactor_and_refusals_fire_nothing() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(
        sandbox,
        RULES,
        &[("E2E_GITHUB_SECRET", "e2e-s3cret")],
        |_| {},
    )
    .await;
    let (publisher, puller) = gate.state.config.master.bus_endpoints();
    let watcher = IpcBus::start(IpcBusConfig::new(publisher, puller));
    watcher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let run = std::process::id();
    let c = reqwest::Client::new();

    let id = format!("gh-push-{run}");
    let body = serde_json::json!({"id": id, "ref": "refs/heads/main"}).to_string();
    let resp = c
        .post(gate.url("/hook/e2e/github"))
        .headers(signed(body.as_bytes(), "e2e-s3cret", &format!("d-{run}-1")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id2 = id.clone();
    let written = blocking(move || sandbox.wait_reactor_file(&id2, Duration::from_secs(60))).await;
    assert_eq!(written["post"]["ref"], "refs/heads/main");
    assert_eq!(written["headers"]["X-Github-Event"], "push");
    assert!(written["headers"].get("X-Hub-Signature-256").is_none());

    // Every refusal from here on: status, JSON body, and no hook event on the master bus.
    let mut sub = watcher.subscribe();
    let big = serde_json::json!({"id": "big", "pad": "x".repeat(5000)}).to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "wrong signature",
            c.post(gate.url("/hook/e2e/github"))
                .headers(signed(
                    body.as_bytes(),
                    "not-the-secret",
                    &format!("d-{run}-2"),
                ))
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "disallowed address",
            c.post(gate.url("/hook/e2e/fenced"))
                .header("x-forwarded-for", "203.0.113.9"),
            StatusCode::FORBIDDEN,
            "address_not_allowed",
        ),
        (
            "over the size limit",
            c.post(gate.url("/hook/e2e/github"))
                .headers(signed(big.as_bytes(), "e2e-s3cret", &format!("d-{run}-3")))
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (label, req, status, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{label}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["code"], code, "{label}");
    }
    // Over the rate: the burst of 3 is spent by the requests above on this rule.
    let mut limited = None;
    for n in 0..5 {
        let resp = c
            .post(gate.url("/hook/e2e/github"))
            .headers(signed(b"{}", "not-the-secret", &format!("d-{run}-r{n}")))
            .body("{}")
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            let json: serde_json::Value = resp.json().await.unwrap();
            limited = Some(json["code"].clone());
            break;
        }
    }
    assert_eq!(limited, Some(serde_json::json!("rate_limited")));
    // A replayed delivery id: 200 duplicate, nothing fired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resp = c
        .post(gate.url("/hook/e2e/github"))
        .headers(signed(body.as_bytes(), "e2e-s3cret", &format!("d-{run}-1")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        json,
        serde_json::json!({"success": true, "duplicate": true})
    );

    // Nothing above reached the master's bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(item) = tokio::time::timeout_at(deadline, sub.recv()).await {
        if let Some(BusItem::Event(ev)) = item {
            assert!(
                !ev.tag.starts_with("salt/netapi/hook/e2e/github")
                    && !ev.tag.starts_with("salt/netapi/hook/e2e/fenced"),
                "a refused hook reached the bus: {}",
                ev.tag
            );
        }
    }
}

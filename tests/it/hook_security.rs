//! The hook pipeline's security controls, each proven by its status, its body, and no event.

use reqwest::StatusCode;
use saltgate::security::Secret;
use saltgate::security::signature::{github, slack};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_no_event, data_json, recv_event};

const GITHUB_RULE: &str = r#"
- path: github
  auth: none
  verify: {github: {secret_env: GH_SECRET}}
"#;

pub(crate) fn github_headers(body: &[u8], secret: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in github::sign(&Secret::new(secret.into()).unwrap(), body) {
        h.insert(k, v.parse().unwrap());
    }
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-github-event", "push".parse().unwrap());
    h
}

async fn status_code(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn github_signature_accepted_and_forgery_refused() {
    let app = TestApp::builder()
        .with_hooks(GITHUB_RULE, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut sub = app.subscribe();
    let resp = c
        .post(app.url("/hook/github/deploy"))
        .headers(github_headers(body, "s3cret"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook/github/deploy").await;
    let data = data_json(&ev);
    assert_eq!(data["post"]["ref"], "refs/heads/main");
    assert!(
        data["headers"].get("X-Hub-Signature-256").is_none(),
        "signature leaked to the bus"
    );

    for (label, headers, payload) in [
        ("wrong key", github_headers(body, "other"), body.to_vec()),
        (
            "changed body",
            github_headers(body, "s3cret"),
            br#"{"ref":"refs/heads/evil"}"#.to_vec(),
        ),
        (
            "no signature",
            reqwest::header::HeaderMap::new(),
            body.to_vec(),
        ),
    ] {
        let resp = c
            .post(app.url("/hook/github/deploy"))
            .headers(headers)
            .body(payload)
            .send()
            .await
            .unwrap();
        let (status, json) = status_code(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
        assert_eq!(json["code"], "bad_signature", "{label}");
        assert_no_event(&mut sub).await;
    }
}

#[tokio::test]
async fn replayed_delivery_is_answered_duplicate_and_fires_once() {
    let app = TestApp::builder()
        .with_hooks(GITHUB_RULE, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let body = br#"{"n":1}"#;
    let mut headers = github_headers(body, "s3cret");
    headers.insert(
        "x-github-delivery",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
    );
    let mut sub = app.subscribe();
    let send = || {
        c.post(app.url("/hook/github"))
            .headers(headers.clone())
            .body(body.to_vec())
    };
    let (status, json) = status_code(send().send().await.unwrap()).await;
    assert_eq!((status, json), (StatusCode::OK, json!({"success": true})));
    recv_event(&mut sub, "salt/netapi/hook/github").await;
    let (status, json) = status_code(send().send().await.unwrap()).await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({"success": true, "duplicate": true}))
    );
    assert_no_event(&mut sub).await;
}

#[tokio::test]
async fn github_ping_is_answered_without_the_reactor() {
    let app = TestApp::builder()
        .with_hooks(GITHUB_RULE, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let mut headers = github_headers(body, "s3cret");
    headers.insert("x-github-event", "ping".parse().unwrap());
    let mut sub = app.subscribe();
    let resp = reqwest::Client::new()
        .post(app.url("/hook/github"))
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_code(resp).await,
        (StatusCode::OK, json!({"success": true, "ping": true}))
    );
    assert_no_event(&mut sub).await;
}

#[tokio::test]
async fn slack_stale_timestamp_refused_and_challenge_answered() {
    let rule = "- path: slack\n  auth: none\n  verify: {slack: {secret_env: SLACK}}\n";
    let app = TestApp::builder()
        .with_hooks(rule, &[("SLACK", "8f742231b10e8888abcd")])
        .spawn()
        .await;
    let secret = Secret::new(b"8f742231b10e8888abcd".to_vec()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let body = b"token=x&team_id=T1&command=%2Fdeploy";
    let mut req = c.post(app.url("/hook/slack")).body(body.to_vec());
    for (k, v) in slack::sign(&secret, body, now - 600) {
        req = req.header(k, v);
    }
    let (status, json) = status_code(req.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "stale_request");
    assert_no_event(&mut sub).await;

    let body = br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#;
    let mut req = c.post(app.url("/hook/slack")).body(body.to_vec());
    for (k, v) in slack::sign(&secret, body, now) {
        req = req.header(k, v);
    }
    let (status, json) = status_code(req.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_no_event(&mut sub).await;
}

#[tokio::test]
async fn allowlist_refuses_and_forwarded_headers_from_untrusted_peers_change_nothing() {
    let rule = "- path: ci\n  auth: none\n  allow_from: [203.0.113.0/24]\n";
    let app = TestApp::builder().with_hooks(rule, &[]).spawn().await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.5"),
        ("remote-addr", "203.0.113.5"),
        ("x-real-ip", "203.0.113.5"),
    ] {
        let resp = c
            .post(app.url("/hook/ci"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let (status, json) = status_code(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(json["code"], "address_not_allowed");
        assert_no_event(&mut sub).await;
    }
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_used() {
    let rule = "- path: ci\n  auth: none\n  allow_from: [203.0.113.0/24]\n";
    let app = TestApp::builder()
        .with_hooks(rule, &[])
        .with_config(|c| c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    // The client lies in the left-most hop; the proxy appended the real address.
    let resp = c
        .post(app.url("/hook/ci"))
        .header("x-forwarded-for", "10.9.9.9, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook/ci").await;
    assert_eq!(data_json(&ev)["headers"]["Remote-Addr"], "203.0.113.7");
    let resp = c
        .post(app.url("/hook/ci"))
        .header("x-forwarded-for", "203.0.113.7, 10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let rule = "- path: busy\n  auth: none\n  rate: {per_second: 1, burst: 2}\n";
    let app = TestApp::builder().with_hooks(rule, &[]).spawn().await;
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let resp = c.post(app.url("/hook/busy")).send().await.unwrap();
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp.headers().get("retry-after").cloned();
            let json: Value = resp.json().await.unwrap();
            assert_eq!(json["code"], "rate_limited");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs));
    // Other rules are not affected.
    assert_eq!(
        c.post(app.url("/hook/other"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn rule_body_limit_and_unmatched_refusal() {
    let rule = "- path: small\n  auth: none\n  max_body: 16\n";
    let app = TestApp::builder()
        .with_hooks(rule, &[])
        .with_config(|c| c.saltgate.unmatched_hooks = saltgate::config::Unmatched::Refuse)
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let resp = c
        .post(app.url("/hook/small"))
        .body(vec![b'x'; 17])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = c.post(app.url("/hook/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_no_event(&mut sub).await;
    let resp = c
        .post(app.url("/hook/small/sub"))
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_gigabyte_upload_is_refused_without_buffering_it() {
    let app = TestApp::builder().spawn().await;
    let before = rss_kib();
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks =
        futures::stream::iter((0..16 * 1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let mut sub = app.subscribe();
    // No Content-Length: the cap is enforced while streaming.
    let result = reqwest::Client::new()
        .post(app.url("/hook/big"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(resp) = result {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "memory grew by {grown} KiB");
    assert_no_event(&mut sub).await;
    // With a declared 1 GiB Content-Length: refused before reading.
    let resp = reqwest::Client::new()
        .post(app.url("/hook/big"))
        .header("content-length", (1u64 << 30).to_string())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            (0..1).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))),
        )))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}

#[tokio::test]
async fn saltgate_sign_output_passes_the_rule() {
    let app = TestApp::builder()
        .with_hooks(GITHUB_RULE, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("body.json"), br#"{"signed":"by the cli"}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["sign", "--provider", "github", "--secret-file"])
        .arg(dir.path().join("secret"))
        .arg(dir.path().join("body.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut req = reqwest::Client::new()
        .post(app.url("/hook/github"))
        .body(br#"{"signed":"by the cli"}"#.to_vec());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.split_once(": ").unwrap();
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn sns_rule_refuses_foreign_certificate_urls_and_reports_fetch_failures() {
    let rule = "- path: sns\n  auth: none\n  verify: {sns: {topic_arns: [\"arn:aws:sns:eu-west-1:123456789012:alerts\"]}}\n";
    let app = TestApp::builder().with_hooks(rule, &[]).spawn().await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let message = |cert_url: &str| {
        json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alerts",
            "Message": "disk full",
            "Timestamp": "2026-11-23T12:00:00.000Z",
            "SignatureVersion": "2",
            "Signature": "AAAA",
            "SigningCertURL": cert_url,
        })
        .to_string()
    };
    // A certificate URL off AWS's SNS hosts is refused before any fetch.
    let resp = c
        .post(app.url("/hook/sns"))
        .header("x-amz-sns-message-type", "Notification")
        .body(message(
            "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        ))
        .send()
        .await
        .unwrap();
    let (status, body) = status_code(resp).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_signature"))
    );
    // A well-formed URL whose certificate cannot be fetched (no network here): 503, so SNS
    // retries later, and nothing fired.
    let resp = c
        .post(app.url("/hook/sns"))
        .header("x-amz-sns-message-type", "Notification")
        .body(message(
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem",
        ))
        .send()
        .await
        .unwrap();
    let (status, body) = status_code(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_no_event(&mut sub).await;
}

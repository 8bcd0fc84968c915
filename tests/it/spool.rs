//! The spool on the HTTP path, in-process: hooks are committed before they are answered, carry
//! their delivery id, are answered 202 `queued` while the bus is down, 503 `spool_full` with
//! `Retry-After` once the spool is full, and a retried delivery is still a duplicate after a
//! restart. Against a real master: tests/e2e/spool.rs.

use reqwest::StatusCode;
use saltgate::spool::{SpoolConfig, Storage};
use serde_json::json;

use crate::hook_security::github_headers;
use crate::support::{TestApp, app_metric, data_json, recv_event};

const RULE: &str = "- path: gh\n  auth: none\n  verify: {github: {secret_env: GH_SECRET}}\n";

fn on_disk(dir: &std::path::Path) -> impl FnOnce(&mut saltgate::config::Config) {
    let dir = dir.to_path_buf();
    move |c| c.spool = Some(SpoolConfig::new(Storage::Dir(dir)))
}

#[tokio::test]
async fn a_spooled_hook_is_answered_once_committed_and_carries_its_delivery_id() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .with_config(on_disk(dir.path()))
        .with_config(|c| c.api.stats_disable_auth = true)
        .spawn()
        .await;
    let mut sub = app.subscribe();
    let resp = reqwest::Client::new()
        .post(app.url("/hook/ci/build"))
        .header("content-type", "application/json")
        .body(r#"{"ok": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"success": true})
    );
    let ev = recv_event(&mut sub, "salt/netapi/hook/ci/build").await;
    let data = data_json(&ev);
    // salt-api's keys first and unchanged; saltgate's own entry last.
    let keys: Vec<&str> = ev
        .data
        .as_map()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["_stamp", "headers", "post", "body", "_saltgate"]);
    assert_eq!(data["post"], json!({"ok": true}));
    let id = data["_saltgate"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 33, "{id}");
    // Hook bodies are on disk: owner-only.
    use std::os::unix::fs::PermissionsExt;
    for file in ["spool.redb", "spool.wal.0", "spool.wal.1"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
    assert_eq!(app_metric(&app, "saltgate_spool_accepted_total").await, 1.0);
    assert!(app_metric(&app, "saltgate_spool_commit_duration_seconds_count").await >= 1.0);
}

#[tokio::test]
async fn with_the_bus_down_hooks_are_queued_until_the_spool_is_full_then_503_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .with_config(|c| {
            // The master's bus, whose sockets do not exist: nothing can be delivered.
            c.use_master = true;
            c.master.sock_dir = "/nonexistent/saltgate-it/sock".into();
            let mut spool = SpoolConfig::new(Storage::Dir(dir.path().to_path_buf()));
            spool.max_bytes = 64 << 10;
            c.spool = Some(spool);
        })
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let body = format!(r#"{{"pad": "{}"}}"#, "x".repeat(2000));
    let mut queued = 0;
    let full = loop {
        let resp = c
            .post(app.url("/hook/down"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::ACCEPTED {
            break resp;
        }
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(answer, json!({"success": true, "queued": true}));
        queued += 1;
        assert!(queued < 1000, "the spool never filled");
    };
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.headers()["retry-after"], "30");
    let answer: serde_json::Value = full.json().await.unwrap();
    assert_eq!(answer["code"], "spool_full", "{answer}");
    assert!(queued >= 5, "{queued}");
    let status = app.state.spool.as_ref().unwrap().status();
    assert_eq!((status.pending, status.refused_full), (queued, 1));
    assert_eq!(status.link, "down");
}

#[tokio::test]
async fn a_retried_delivery_after_a_restart_is_still_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let body = br#"{"ref":"refs/heads/main"}"#;
    let send = |app: &TestApp| {
        let mut headers = github_headers(body, "s3cret");
        headers.insert("x-github-delivery", "d-1".parse().unwrap());
        reqwest::Client::new()
            .post(app.url("/hook/gh"))
            .headers(headers)
            .body(body.to_vec())
            .send()
    };
    let app = TestApp::builder()
        .with_hooks(RULE, &[("GH_SECRET", "s3cret")])
        .with_config(on_disk(dir.path()))
        .spawn()
        .await;
    let first: serde_json::Value = send(&app).await.unwrap().json().await.unwrap();
    assert_eq!(first, json!({"success": true}));
    app.shutdown().await;
    let app = TestApp::builder()
        .with_hooks(RULE, &[("GH_SECRET", "s3cret")])
        .with_config(on_disk(dir.path()))
        .spawn()
        .await;
    let again: serde_json::Value = send(&app).await.unwrap().json().await.unwrap();
    assert_eq!(again, json!({"success": true, "duplicate": true}));
}

#[test]
fn an_unwritable_spool_directory_stops_the_start_naming_the_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("master");
    std::fs::write(
        &config,
        "rest_cherrypy:\n  host: 127.0.0.1\n  port: 0\n  disable_ssl: true\nsaltgate:\n  \
         bus: builtin\n  spool:\n    dir: /proc/saltgate-spool\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "saltgate.spool: /proc/saltgate-spool/spool.redb: cannot create the directory"
        ),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

/// The delivery log behind `/ui`: an accepted hook is listed (filtered by path and state),
/// opens as the event that went onto the bus, and Redeliver fires it again with the same
/// delivery id; unknown entries are 404, a bad filter 400, a foreign-origin cookie POST 403.
#[tokio::test]
async fn delivery_log_lists_opens_and_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = on_disk(dir.path());
    let app = TestApp::builder()
        .with_config(|c| {
            spool(c);
            c.saltgate.streams_disable_auth = true;
        })
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    for (path, id) in [("ci/deploy", "log-1"), ("other", "log-2")] {
        let resp = c
            .post(app.url(&format!("/hook/{path}")))
            .json(&json!({"id": id}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        recv_event(&mut sub, &format!("salt/netapi/hook/{path}")).await;
    }
    let get = |q: &str| {
        let url = app.url(&format!("/ui/log{q}"));
        let c = c.clone();
        async move {
            let resp = c.get(url).send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    // Both listed, newest first; the path filter keeps one; entries become delivered.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let ci = loop {
        let (status, body) = get("?path=ci&state=delivered").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["deliveries"].as_array().unwrap().clone();
        if rows.len() == 1 {
            break rows[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ci["path"], "ci/deploy");
    assert_eq!(ci["state"], "delivered");
    assert!(ci["confirmed_ms"].as_u64().is_some(), "{ci}");
    let (_, all) = get("").await;
    let paths: Vec<&str> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, ["other", "ci/deploy"]);
    // One entry: the event as it went onto the bus.
    let seq = ci["seq"].as_u64().unwrap();
    let (status, one) = get(&format!("/{seq}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["event"]["tag"], "salt/netapi/hook/ci/deploy");
    assert_eq!(one["event"]["data"]["post"]["id"], "log-1");
    let id = one["event"]["data"]["_saltgate"]["id"].clone();
    assert!(id.is_string(), "{one}");
    // Redeliver: the same event and delivery id again on the bus.
    let resp = c
        .post(app.url(&format!("/ui/log/{seq}/redeliver")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let again = recv_event(&mut sub, "salt/netapi/hook/ci/deploy").await;
    let data = data_json(&again);
    assert_eq!(data["post"]["id"], "log-1");
    assert_eq!(data["_saltgate"]["id"], id);
    assert!(app_metric(&app, "saltgate_spool_redelivered_total").await >= 1.0);
    // Refusals, each in our error shape.
    for (method, path, status, code) in [
        (
            "GET",
            "/ui/log/999999".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/ui/log/x".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/ui/log?state=lost".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/ui/log?color=red".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "POST",
            "/ui/log/999999/redeliver".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let method: reqwest::Method = method.parse().unwrap();
        let resp = c.request(method, app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code, "{path}");
    }
    let resp = c
        .post(app.url(&format!("/ui/log/{seq}/redeliver")))
        .header("cookie", "session_id=0123abcd")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// Without a spool there is no delivery log: 503 with a reason, not an empty list.
#[tokio::test]
async fn without_a_spool_the_log_says_so() {
    let app = TestApp::builder()
        .with_config(|c| c.saltgate.streams_disable_auth = true)
        .spawn()
        .await;
    let resp = reqwest::get(app.url("/ui/log")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("no spool"),
        "{body}"
    );
}

//! saltgate's own ACL check of compound commands, and the keys a chunk may not set, on the
//! built-in bus. With no master attached, a request that passes every check ends in 503 "no
//! master": a 403 or 400 here shows the refusal comes before any master call.

use reqwest::StatusCode;
use serde_json::{Value, json};

use saltgate::api::lowstate::Client;

use crate::support::{TestApp, assert_no_event};

const LOCAL_CLIENTS: [&str; 4] = ["local", "local_async", "local_batch", "local_subset"];
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn app() -> TestApp {
    TestApp::builder()
        .with_config(|c| {
            c.master.netapi_enable_clients = Client::ALL
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect();
            c.master.external_auth = json!({"file": {
                "^filename": "/nonexistent",
                "saltdev": [".*", "@runner", "@wheel", "@jobs"],
                "limited": ["test.ping"],
            }});
        })
        .spawn()
        .await
}

/// POSTs `body` as JSON; returns status, content type and the body (JSON or YAML).
async fn post(
    app: &TestApp,
    path: &str,
    accept: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, String, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url(path))
        .header("accept", accept)
        .json(body);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    let v = if ct == "application/x-yaml" {
        serde_yaml::from_str(&text).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, ct, v)
}

fn eauth_chunk(client: &str, user: &str, tgt: &str, fun: Value, arg: Value) -> Value {
    json!({"client": client, "tgt": tgt, "fun": fun, "arg": arg,
        "eauth": "file", "username": user, "password": user})
}

#[tokio::test]
async fn a_limited_users_compound_command_is_refused_before_any_master_call() {
    let app = app().await;
    let mut sub = app.subscribe();
    let cases = [
        ("m1", json!(["cmd.run", "test.ping"]), json!([["id"], []])),
        ("*", json!(["test.ping", "cmd.run"]), json!([[], ["id"]])),
        (
            "*",
            json!(["file.write", "test.ping"]),
            json!([["/tmp/x", "y"], []]),
        ),
    ];
    for client in LOCAL_CLIENTS {
        for (tgt, fun, arg) in &cases {
            let chunk = eauth_chunk(client, "limited", tgt, fun.clone(), arg.clone());
            let (status, _, v) =
                post(&app, "/run", "application/json", None, &json!([chunk])).await;
            let case = format!("{client} {tgt} {fun}: {v}");
            assert_eq!(status, StatusCode::FORBIDDEN, "{case}");
            assert_eq!(v["code"], "not_authorized", "{case}");
            assert_eq!(v["status"], 403, "{case}");
            let refused = fun
                .as_array()
                .unwrap()
                .iter()
                .find(|f| *f != "test.ping")
                .unwrap();
            let msg = v["message"].as_str().unwrap();
            assert!(msg.starts_with("chunk 0: '"), "{case}");
            assert!(
                msg.contains(&format!("'{}'", refused.as_str().unwrap())),
                "{case}"
            );
            assert!(msg.contains("'limited'"), "{case}");
        }
    }
    // A later chunk's refusal stops the earlier ones too: nothing has run.
    let body = json!([
        eauth_chunk("local", "limited", "*", json!("test.ping"), json!([])),
        eauth_chunk(
            "local",
            "limited",
            "*",
            json!(["cmd.run", "test.ping"]),
            json!([["id"], []])
        ),
    ]);
    let (status, _, v) = post(&app, "/run", "application/json", None, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("chunk 1: "),
        "{v}"
    );
    assert_no_event(&mut sub).await;
}

#[tokio::test]
async fn the_refusal_is_in_the_negotiated_format() {
    let app = app().await;
    let chunk = eauth_chunk(
        "local",
        "limited",
        "m1",
        json!(["cmd.run", "test.ping"]),
        json!([["id"], []]),
    );
    let (status, ct, v) = post(&app, "/run", "application/x-yaml", None, &json!([chunk])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(ct, "application/x-yaml");
    assert_eq!(v["code"], "not_authorized");
    assert!(v["message"].as_str().unwrap().contains("'cmd.run'"), "{v}");
}

#[tokio::test]
async fn allowed_compound_commands_and_single_functions_go_on_to_the_master() {
    let app = app().await;
    // saltdev's `.*` allows every function: the request reaches the (missing) master.
    let chunk = eauth_chunk(
        "local",
        "saltdev",
        "*",
        json!(["cmd.run", "test.ping"]),
        json!([["id"], []]),
    );
    let (status, _, v) = post(&app, "/run", "application/json", None, &json!([chunk])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    // A single function is the master's to decide (its check is exact for one function).
    for fun in [json!("cmd.run"), json!(["cmd.run"])] {
        let chunk = eauth_chunk("local", "limited", "*", fun, json!(["id"]));
        let (status, _, v) = post(&app, "/run", "application/json", None, &json!([chunk])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    }
    // pam credentials: the user's groups are not known without a token, so a compound command
    // that the user's own entries do not allow is refused as undecidable.
    let app = TestApp::builder()
        .with_config(|c| {
            c.master.netapi_enable_clients = vec!["local".into()];
            c.master.external_auth = json!({"pam": {"alice": ["test.ping"], "ops%": [".*"]}});
        })
        .spawn()
        .await;
    let chunk = json!({"client": "local", "tgt": "*", "fun": ["cmd.run", "test.ping"],
        "arg": [["id"], []], "eauth": "pam", "username": "alice", "password": "x"});
    let (status, _, v) = post(&app, "/run", "application/json", None, &json!([chunk])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("/login"), "{v}");
}

#[tokio::test]
async fn chunks_cannot_set_keys_of_the_masters_request() {
    let app = app().await;
    let mut sub = app.subscribe();
    let cases = [
        ("wheel", "cmd"),
        ("wheel_async", "cmd"),
        ("wheel", "__tag__"),
        ("wheel", "__jid__"),
        ("wheel", "__user__"),
        ("wheel", "user"),
        ("runner", "cmd"),
        ("runner_async", "key"),
        ("local", "cmd"),
        ("local_async", "user"),
    ];
    for (client, key) in cases {
        let mut chunk = json!({"client": client, "tgt": "*", "fun": "test.arg",
            "eauth": "file", "username": "saltdev", "password": "saltdev"});
        chunk[key] = json!("runner");
        let (status, _, v) = post(&app, "/run", "application/json", None, &json!([chunk])).await;
        let case = format!("{client} {key}: {v}");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(v["code"], "bad_lowstate", "{case}");
        assert!(
            v["message"].as_str().unwrap().contains(&format!("'{key}'")),
            "{case}"
        );
        // The same with a session token: refused before the token is looked up.
        let mut chunk = chunk.clone();
        for k in ["eauth", "username", "password"] {
            chunk.as_object_mut().unwrap().remove(k);
        }
        let (status, ct, v) = post(
            &app,
            "/",
            "application/x-yaml",
            Some(TOKEN),
            &json!([chunk]),
        )
        .await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::BAD_REQUEST, "application/x-yaml"),
            "{v:?}"
        );
    }
    // The wheel client's own arguments still pass (to the missing master).
    let chunk = json!({"client": "wheel", "fun": "key.list", "match": "*",
        "eauth": "file", "username": "saltdev", "password": "saltdev"});
    let (status, _, v) = post(&app, "/run", "application/json", None, &json!([chunk])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_no_event(&mut sub).await;
}

//! saltgate's own ACL check of compound commands, and the keys a chunk may not set.
//!
//! eauth chunks with a compound command are logged in first (`mk_token`), so these run against
//! the fake master (`support::fake_master`), which answers `mk_token` and refuses every publish
//! as an authentication failure: a publish reaching it shows in `calls.other` (and
//! `calls.other_auth` says which credentials it carried). Key checks need no master: on the
//! built-in bus a request that passes them ends in 503 "no master", so a 400 there shows the
//! refusal comes before any master call.

use reqwest::StatusCode;
use serde_json::{Value, json};

use saltgate::api::netapi::Client;

use crate::support::fake_master::FakeMaster;
use crate::support::{TestApp, assert_no_event};

const LOCAL_CLIENTS: [&str; 4] = ["local", "local_async", "local_batch", "local_subset"];
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const USERS: &[(&str, &str)] = &[("saltdev", "saltdev"), ("limited", "limited")];

fn all_clients(c: &mut saltgate::config::Config) {
    c.master.netapi_enable_clients = Client::ALL
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    c.master.external_auth = json!({"file": {
        "^filename": "/nonexistent",
        "saltdev": [".*", "@runner", "@wheel", "@jobs"],
        "limited": ["test.ping"],
    }});
}

/// On the built-in bus.
async fn app_builtin() -> TestApp {
    TestApp::builder().with_config(all_clients).spawn().await
}

/// Attached to `master`.
async fn app_with(master: &FakeMaster) -> TestApp {
    TestApp::builder()
        .with_master(master)
        .with_config(all_clients)
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
    with_password(client, user, user, tgt, fun, arg)
}

fn with_password(
    client: &str,
    user: &str,
    password: &str,
    tgt: &str,
    fun: Value,
    arg: Value,
) -> Value {
    json!({"client": client, "tgt": tgt, "fun": fun, "arg": arg,
        "eauth": "file", "username": user, "password": password})
}

async fn run(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let (status, _, v) = post(app, "/run", "application/json", None, &body).await;
    (status, v)
}

#[tokio::test]
async fn a_limited_users_compound_command_is_refused_before_it_is_published() {
    let master = FakeMaster::start(USERS);
    let app = app_with(&master).await;
    let cases = [
        ("m1", json!(["cmd.run", "test.ping"]), json!([["id"], []])),
        ("*", json!(["test.ping", "cmd.run"]), json!([[], ["id"]])),
        (
            "*",
            json!(["file.write", "test.ping"]),
            json!([["/tmp/x", "y"], []]),
        ),
    ];
    let mut requests = 0;
    for client in LOCAL_CLIENTS {
        for (tgt, fun, arg) in &cases {
            let chunk = eauth_chunk(client, "limited", tgt, fun.clone(), arg.clone());
            let (status, v) = run(&app, json!([chunk])).await;
            requests += 1;
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
    assert_eq!(master.calls.mk_token(), requests, "one login per request");
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
    let (status, v) = run(&app, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("chunk 1: "),
        "{v}"
    );
    assert_eq!(master.calls.other(), 0, "nothing was published");
}

#[tokio::test]
async fn a_wrong_password_with_a_compound_command_is_401_whatever_the_acl() {
    let master = FakeMaster::start(USERS);
    let app = app_with(&master).await;
    let forbidden = (json!(["cmd.run", "test.ping"]), json!([["id"], []]));
    // limited's ACL refuses cmd.run; saltdev's allows it; nobody is unknown.
    let mut answers = Vec::new();
    for user in ["limited", "saltdev", "nobody"] {
        let chunk = with_password(
            "local",
            user,
            "wrong",
            "*",
            forbidden.0.clone(),
            forbidden.1.clone(),
        );
        let (status, v) = run(&app, json!([chunk])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            !msg.contains("cmd.run") && !msg.contains(user),
            "{user}: the refusal says nothing of the ACL: {v}"
        );
        answers.push(v);
    }
    // The same answer as a wrong password with a single function (which the master refuses).
    let single = with_password(
        "local",
        "limited",
        "wrong",
        "*",
        json!("cmd.run"),
        json!([]),
    );
    let (status, v) = run(&app, json!([single])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    answers.push(v);
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(master.calls.mk_token(), 3);
    assert_eq!(
        master.calls.other(),
        1,
        "only the single function was published"
    );
    // Each wrong password counts against the client, as on /login.
    let mut throttled = false;
    for _ in 0..20 {
        let chunk = with_password(
            "local",
            "limited",
            "wrong",
            "*",
            forbidden.0.clone(),
            forbidden.1.clone(),
        );
        let (status, v) = run(&app, json!([chunk])).await;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                throttled = true;
                break;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(throttled, "wrong passwords were never throttled");
    assert!(master.calls.mk_token() <= 12, "{}", master.calls.mk_token());
}

#[tokio::test]
async fn the_refusal_is_in_the_negotiated_format() {
    let master = FakeMaster::start(USERS);
    let app = app_with(&master).await;
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
async fn allowed_compound_commands_run_with_the_new_token_and_single_functions_go_as_they_are() {
    let master = FakeMaster::start(USERS);
    let app = app_with(&master).await;
    // saltdev's `.*` allows every function: the job is published, with the login's token
    // (the fake master then refuses it: 401).
    let both = eauth_chunk(
        "local",
        "saltdev",
        "*",
        json!(["cmd.run", "test.ping"]),
        json!([["id"], []]),
    );
    let (status, v) = run(&app, json!([both.clone(), both])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        master.calls.mk_token(),
        1,
        "the same credentials log in once"
    );
    assert_eq!(master.calls.other_auth(), ["token"]);
    // A single function is the master's to decide (its check is exact for one function): no
    // login, the credentials go with the command.
    for fun in [json!("cmd.run"), json!(["cmd.run"])] {
        let chunk = eauth_chunk("local", "limited", "*", fun, json!(["id"]));
        let (status, v) = run(&app, json!([chunk])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    }
    assert_eq!(master.calls.mk_token(), 1);
    assert_eq!(master.calls.other_auth(), ["token", "eauth", "eauth"]);
    // On the built-in bus a compound eauth chunk needs the master to log in: 503.
    let builtin = app_builtin().await;
    let chunk = eauth_chunk(
        "local",
        "limited",
        "*",
        json!(["cmd.run", "test.ping"]),
        json!([["id"], []]),
    );
    let (status, v) = run(&builtin, json!([chunk])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn group_entries_decide_for_password_chunks_through_the_login() {
    let master = FakeMaster::start(&[("alice", "pw"), ("bob", "pw")]);
    master.set_groups("alice", &["ops"]);
    master.set_groups("bob", &["web"]);
    let app = TestApp::builder()
        .with_master(&master)
        .with_config(|c| {
            c.master.netapi_enable_clients = vec!["local".into()];
            c.master.external_auth =
                json!({"file": {"alice": ["test.ping"], "bob": ["test.ping"], "ops%": [".*"]}});
        })
        .spawn()
        .await;
    let chunk = |user: &str| {
        with_password(
            "local",
            user,
            "pw",
            "*",
            json!(["cmd.run", "test.ping"]),
            json!([["id"], []]),
        )
    };
    // alice is in ops, whose `.*` allows cmd.run: published (and refused by the fake).
    let (status, v) = run(&app, json!([chunk("alice")])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(master.calls.other(), 1);
    // bob is not: 403 naming the function, nothing published.
    let (status, v) = run(&app, json!([chunk("bob")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("'cmd.run'"), "{v}");
    assert_eq!(master.calls.other(), 1);
}

#[tokio::test]
async fn chunks_cannot_set_keys_of_the_masters_request() {
    let app = app_builtin().await;
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

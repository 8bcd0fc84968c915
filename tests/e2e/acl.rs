//! Compound commands against the real master: the master allows a `fun` list when any one of
//! its functions is allowed, so `limited` (allowed only `test.ping`) could run `cmd.run` as root
//! by listing `test.ping` beside it. saltgate checks every function itself: the limited user's
//! compound commands are refused on every client and route that publishes, and nothing reaches
//! the master; `saltdev` (allowed `.*`) still runs them. Also the wheel `cmd` trick: a chunk key
//! that would replace the request's `cmd` is refused, and nothing runs. eauth chunks with a
//! compound command are logged in first: a wrong password is the same 401 as for a single
//! function, whatever the ACL, and the token made for the check is revoked afterwards.

use std::time::Duration;

use reqwest::StatusCode;
use saltgate::salt::{BusItem, Subscription};
use serde_json::{Value, json};

use crate::gate::{Gate, blocking};
use crate::support::shared;

async fn post(gate: &Gate, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(gate.url(path))
        .timeout(Duration::from_secs(120))
        .json(body);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn login(gate: &Gate, user: &str) -> String {
    let creds = json!({"username": user, "password": user, "eauth": "file"});
    let (s, v) = post(gate, "/login", None, &creds).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["return"][0]["token"].as_str().unwrap().to_owned()
}

/// Every event on the bus until it has been quiet for `quiet` (at most 20 s).
async fn drain(sub: &mut Subscription, quiet: Duration) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < end {
        let Ok(item) = tokio::time::timeout(quiet, sub.recv()).await else {
            break;
        };
        match item {
            Some(BusItem::Event(ev)) => seen.push((
                ev.tag.clone(),
                saltgate::salt::wire::payload::to_json(&ev.data),
            )),
            Some(_) => {}
            None => break,
        }
    }
    seen
}

/// The names of the master's token files (`<cachedir>/tokens`) that belong to `user`.
fn token_files_of(gate: &Gate, user: &str) -> Vec<String> {
    let dir = gate.state.config.master.cachedir.join("tokens");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let Ok(bytes) = std::fs::read(e.path()) else {
                return false; // removed meanwhile
            };
            let t = saltgate::salt::wire::payload::decode_value(&mut &bytes[..])
                .expect("a msgpack token");
            names(&t, user)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Whether the token data names `user` (3008's `salt.cache` may wrap it in another map).
fn names(t: &rmpv::Value, user: &str) -> bool {
    t.as_map()
        .into_iter()
        .flatten()
        .any(|(k, v)| (k.as_str() == Some("name") && v.as_str() == Some(user)) || names(v, user))
}

/// Published jobs (`salt/job/<jid>/new`) of `user`.
fn jobs_of<'a>(events: &'a [(String, Value)], user: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(tag, data)| {
            tag.starts_with("salt/job/") && tag.ends_with("/new") && data["user"] == user
        })
        .map(|(_, data)| data)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_compound_commands_are_checked_function_by_function() {
    let sandbox = blocking(shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let mid = sandbox.minion_id();
    let limited = login(&gate, "limited").await;
    let saltdev = login(&gate, "saltdev").await;
    let mut sub = gate.state.bus.subscribe();

    let compound = |tgt: &str, fun: Value, arg: Value| json!({"tgt": tgt, "fun": fun, "arg": arg});
    let jobs = [
        compound(mid, json!(["cmd.run", "test.ping"]), json!([["id"], []])),
        compound("*", json!(["test.ping", "cmd.run"]), json!([[], ["id"]])),
        compound(
            "*",
            json!(["file.write", "test.ping"]),
            json!([["/tmp/saltgate-acl-e2e", "pwned"], []]),
        ),
    ];
    let with = |job: &Value, extra: Value| {
        let mut c = job.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let tokens_before = token_files_of(&gate, "limited");
    assert!(
        !tokens_before.is_empty(),
        "the login's token is in the store"
    );
    let mut refused = 0;
    for job in &jobs {
        for client in ["local", "local_async", "local_batch", "local_subset"] {
            let eauth = json!({"client": client, "eauth": "file", "username": "limited", "password": "limited"});
            let per_chunk_token = json!({"client": client, "token": limited});
            let session = json!({"client": client});
            for (path, token, chunk) in [
                ("/run", None, with(job, eauth)),
                ("/run", None, with(job, per_chunk_token)),
                ("/", Some(limited.as_str()), with(job, session)),
            ] {
                let (s, v) = post(&gate, path, token, &json!([chunk])).await;
                let case = format!("{path} {client} {}: {v}", job["fun"]);
                assert_eq!(s, StatusCode::FORBIDDEN, "{case}");
                assert_eq!(v["code"], "not_authorized", "{case}");
                let msg = v["message"].as_str().unwrap();
                assert!(
                    msg.contains("'cmd.run'") || msg.contains("'file.write'"),
                    "{case}"
                );
                refused += 1;
            }
        }
        // POST /minions: every chunk is local_async.
        let (s, v) = post(&gate, "/minions", Some(&limited), &json!([job])).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "/minions {}: {v}", job["fun"]);
        refused += 1;
    }
    assert_eq!(refused, 39);
    // Each eauth chunk above logged in to be checked; none of those tokens is left.
    assert_eq!(token_files_of(&gate, "limited"), tokens_before);

    // A wrong password: 401, the same answer whatever the ACL allows and for a single
    // function, and nothing about the ACL.
    let mut answers = Vec::new();
    for (user, fun, arg) in [
        (
            "limited",
            json!(["cmd.run", "test.ping"]),
            json!([["id"], []]),
        ),
        (
            "saltdev",
            json!(["cmd.run", "test.ping"]),
            json!([["id"], []]),
        ),
        (
            "nobody",
            json!(["cmd.run", "test.ping"]),
            json!([["id"], []]),
        ),
        ("limited", json!("cmd.run"), json!(["id"])),
    ] {
        let chunk = json!({"client": "local", "tgt": mid, "fun": fun, "arg": arg,
            "eauth": "file", "username": user, "password": "wrong"});
        let (s, v) = post(&gate, "/run", None, &json!([chunk])).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{user} {fun}: {v}");
        assert!(!v.to_string().contains("cmd.run"), "{v}");
        answers.push(v);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    // The limited user's single functions are still the master's to decide.
    let ping = json!([{"client": "local", "tgt": mid, "fun": "test.ping"}]);
    let (s, v) = post(&gate, "/", Some(&limited), &ping).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let both_pings = json!([{"client": "local", "tgt": mid, "fun": ["test.ping", "test.ping"], "arg": [[], []]}]);
    let (s, v) = post(&gate, "/", Some(&limited), &both_pings).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // saltdev's compound command runs, on / and on /run.
    let chunk = json!({"client": "local", "tgt": mid, "fun": ["test.ping", "test.arg"], "arg": [[], ["x"]]});
    let (s, v) = post(&gate, "/", Some(&saltdev), &json!([chunk])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["return"][0][mid]["test.ping"], true, "{v}");
    assert_eq!(v["return"][0][mid]["test.arg"]["args"], json!(["x"]), "{v}");
    let run = with(
        &chunk,
        json!({"client": "local_async", "eauth": "file", "username": "saltdev", "password": "saltdev"}),
    );
    let (s, v) = post(&gate, "/run", None, &json!([run])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["return"][0]["jid"].is_string(), "{v}");

    // Nothing the limited user was refused reached the master: its only jobs are test.ping.
    let events = drain(&mut sub, Duration::from_secs(3)).await;
    let theirs = jobs_of(&events, "limited");
    assert!(
        !theirs.is_empty(),
        "the limited user's test.ping was published"
    );
    for job in theirs {
        let funs: Vec<&Value> = match &job["fun"] {
            Value::Array(f) => f.iter().collect(),
            one => vec![one],
        };
        assert!(funs.iter().all(|f| *f == "test.ping"), "published: {job}");
    }
    assert!(
        !jobs_of(&events, "saltdev").is_empty(),
        "saltdev's compound command was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_a_chunk_cannot_reroute_the_masters_request() {
    let sandbox = blocking(shared).await;
    // Only wheel enabled: the trick used to run a runner past netapi_enable_clients.
    let gate = Gate::start(sandbox, "", &[], |c| {
        c.master.netapi_enable_clients = vec!["wheel".into()];
    })
    .await;
    let token = login(&gate, "saltdev").await;
    let mut sub = gate.state.bus.subscribe();
    for (path, chunk) in [
        (
            "/",
            json!({"client": "wheel", "fun": "test.arg", "cmd": "runner"}),
        ),
        (
            "/run",
            json!({"client": "wheel", "fun": "test.arg", "cmd": "runner",
                "eauth": "file", "username": "saltdev", "password": "saltdev"}),
        ),
        (
            "/",
            json!({"client": "wheel", "fun": "key.list_all", "__tag__": "salt/auth"}),
        ),
    ] {
        let t = (path == "/").then_some(token.as_str());
        let (s, v) = post(&gate, path, t, &json!([chunk])).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {chunk}: {v}");
        assert_eq!(v["code"], "bad_lowstate", "{v}");
    }
    let events = drain(&mut sub, Duration::from_secs(3)).await;
    let ran: Vec<&String> = events
        .iter()
        .map(|(tag, _)| tag)
        .filter(|tag| tag.starts_with("salt/run/") || tag.starts_with("salt/wheel/"))
        .collect();
    assert!(ran.is_empty(), "something ran: {ran:?}");
    // The wheel client itself still works.
    let (s, v) = post(
        &gate,
        "/",
        Some(&token),
        &json!([{"client": "wheel", "fun": "key.list_all"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

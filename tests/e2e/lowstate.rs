//! The lowstate API against a real master and minion: saltgate in-process, attached to the
//! shared sandbox's request server and event bus, eauth `file` with `saltdev` (everything) and
//! `limited` (`test.ping` only).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{SaltSandbox, shared};

/// The e2e harness's saltgate ([`crate::gate::Gate`]) on a runtime of its own, for these
/// blocking tests.
struct Gate {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    _gate: crate::gate::Gate,
}

impl Gate {
    fn start(sandbox: &SaltSandbox, tweak: impl FnOnce(&mut saltgate::config::Config)) -> Gate {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let gate = rt.block_on(crate::gate::Gate::start(sandbox, "", &[], tweak));
        Gate {
            rt,
            addr: gate.addr,
            _gate: gate,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, format!("http://{}{}", self.addr, path))
                .timeout(Duration::from_secs(120));
            if let Some(t) = token {
                req = req.header("x-auth-token", t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, headers, v)
        })
    }

    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let (s, _, v) = self.request(reqwest::Method::POST, path, token, Some(body));
        (s, v)
    }

    fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.request(reqwest::Method::GET, path, Some(token), None);
        (s, v)
    }

    fn login(&self, user: &str) -> String {
        let (s, v) = self.post(
            "/login",
            None,
            &json!({"username": user, "password": user, "eauth": "file"}),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        v["return"][0]["token"].as_str().unwrap().to_owned()
    }
}

fn ping_chunk(sandbox: &SaltSandbox) -> Value {
    json!({"client": "local", "tgt": sandbox.minion_id(), "fun": "test.ping"})
}

#[test]
fn login_then_local_ping() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |_| {});
    let (s, headers, v) = gate.request(
        reqwest::Method::POST,
        "/login",
        None,
        Some(&json!({"username": "saltdev", "password": "saltdev", "eauth": "file"})),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["return"][0];
    let token = r["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(headers["x-auth-token"], token);
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("session_id={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_eq!(r["user"], "saltdev");
    assert_eq!(r["eauth"], "file");
    assert_eq!(r["perms"], json!([".*", "@jobs", "@runner", "@wheel"]));
    assert!(r["expire"].as_f64().unwrap() > r["start"].as_f64().unwrap());

    let (s, v) = gate.post("/", Some(token), &json!([ping_chunk(sandbox)]));
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"return": [{"e2e-minion": true}]}));

    // Bad credentials.
    let (s, v) = gate.post(
        "/login",
        None,
        &json!({"username": "saltdev", "password": "wrong", "eauth": "file"}),
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // An unknown token on a session route.
    let (s, v) = gate.post("/", Some(&"ab".repeat(32)), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

#[test]
fn local_async_then_job_lookup_and_minions() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |_| {});
    let token = gate.login("saltdev");
    let mut chunk = ping_chunk(sandbox);
    chunk["client"] = json!("local_async");
    let (s, v) = gate.post("/", Some(&token), &chunk);
    assert_eq!(s, StatusCode::OK, "{v}");
    let jid = v["return"][0]["jid"].as_str().unwrap().to_owned();
    assert_eq!(v["return"][0]["minions"], json!(["e2e-minion"]));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = gate.get(&format!("/jobs/{jid}"), &token);
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["return"] == json!([{"e2e-minion": true}]) {
            assert_eq!(v["info"][0]["Function"], "test.ping");
            break;
        }
        assert!(Instant::now() < deadline, "job {jid} never returned: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (s, v) = gate.get("/jobs", &token);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["return"][0].get(&jid).is_some(), "{jid} not listed");

    // POST /minions: always local_async, 202 with links.
    let (s, v) = gate.post("/minions", Some(&token), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let jid = v["return"][0]["jid"].as_str().unwrap();
    assert_eq!(
        v["_links"]["jobs"],
        json!([{"href": format!("/jobs/{jid}")}])
    );
    let (s, v) = gate.get("/minions/e2e-minion", &token);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["return"][0]["e2e-minion"]["id"], "e2e-minion");
}

#[test]
fn run_with_eauth_runner_wheel_batch_subset() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |_| {});
    let creds = json!({"eauth": "file", "username": "saltdev", "password": "saltdev"});
    let with = |mut chunk: Value| {
        for (k, v) in creds.as_object().unwrap() {
            chunk[k] = v.clone();
        }
        chunk
    };
    let body = json!([
        with(
            json!({"client": "runner", "fun": "test.arg", "arg": ["x", "y=z"], "kwarg": {"a": 1}})
        ),
        with(json!({"client": "wheel", "fun": "key.list_all"})),
        with(json!({"client": "local_batch", "tgt": "*", "fun": "test.ping", "batch": "1"})),
        with(json!({"client": "local_subset", "tgt": "*", "fun": "test.ping", "sub": 1})),
        with(json!({"client": "runner_async", "fun": "test.sleep", "s_time": 0})),
    ]);
    let (s, v) = gate.post("/run", None, &body);
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["return"].as_array().unwrap();
    assert_eq!(r.len(), 5, "{v}");
    assert_eq!(r[0]["args"], json!(["x"]), "{v}");
    assert_eq!(r[0]["kwargs"]["y"], "z");
    assert_eq!(r[0]["kwargs"]["a"], 1);
    assert!(r[1]["tag"].as_str().unwrap().starts_with("salt/wheel/"));
    assert_eq!(r[1]["data"]["success"], true);
    assert!(
        r[1]["data"]["return"]["minions"]
            .as_array()
            .unwrap()
            .contains(&json!("e2e-minion"))
    );
    assert_eq!(r[2], json!({"e2e-minion": true}));
    assert_eq!(r[3], json!({"e2e-minion": true}));
    assert!(r[4]["tag"].as_str().unwrap().starts_with("salt/run/"));

    let token = gate.login("saltdev");
    let (s, v) = gate.get("/keys", &token);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["return"]["minions"]
            .as_array()
            .unwrap()
            .contains(&json!("e2e-minion"))
    );
    let (s, v) = gate.get("/keys/e2e-minion", &token);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["return"]["minions"]["e2e-minion"].is_string(), "{v}");
}

#[test]
fn limited_user_runs_test_ping_and_nothing_else() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |_| {});
    let token = gate.login("limited");
    let (s, v) = gate.post("/", Some(&token), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["return"], json!([{"e2e-minion": true}]));
    let refused = [
        json!({"client": "local", "tgt": "*", "fun": "test.arg", "arg": ["x"]}),
        json!({"client": "runner", "fun": "test.arg"}),
        json!({"client": "wheel", "fun": "key.list_all"}),
    ];
    for chunk in refused {
        let (s, v) = gate.post("/", Some(&token), &chunk);
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
            "{chunk}: {s} {v}"
        );
    }
    // A refused second chunk fails the request and names the chunk.
    let (s, v) = gate.post(
        "/",
        Some(&token),
        &json!([ping_chunk(sandbox), {"client": "local", "tgt": "*", "fun": "test.arg"}]),
    );
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("chunk 1:"),
        "{v}"
    );
    // Eauth on /run: same rights.
    let (s, v) = gate.post(
        "/run",
        None,
        &json!({"client": "local", "tgt": "*", "fun": "cmd.run", "arg": "id",
                "eauth": "file", "username": "limited", "password": "limited"}),
    );
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
        "{s} {v}"
    );
}

#[test]
fn disabled_client_refused_and_logout_revokes() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |c| {
        c.master.netapi_enable_clients = vec!["local".into()];
    });
    let token = gate.login("saltdev");
    let (s, v) = gate.post(
        "/",
        Some(&token),
        &json!({"client": "runner", "fun": "test.arg"}),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "client_disabled");

    let (s, v) = gate.post("/", Some(&token), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, headers, v) = gate.request(reqwest::Method::POST, "/logout", Some(&token), None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"return": "Your token has been cleared"}));
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The master no longer knows the token, so another saltgate (no cache) refuses it too.
    let other = Gate::start(sandbox, |_| {});
    let (s, v) = other.post("/", Some(&token), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = gate.post("/", Some(&token), &ping_chunk(sandbox));
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

/// Runs the real `pepper` CLI (salt-pepper, from the Salt venv `venv`) against the API at
/// `addr`, logged in as the sandbox's eauth user.
pub(crate) fn pepper(
    venv: &std::path::Path,
    addr: SocketAddr,
    args: &[&str],
) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    std::process::Command::new(venv.join("bin/pepper"))
        .env("HOME", home.path())
        .env_remove("PEPPERRC")
        .args([
            "--saltapi-url",
            &format!("http://{addr}"),
            "-a",
            "file",
            "--username",
            "saltdev",
            "--password",
            "saltdev",
            "--non-interactive",
            "--out",
            "json",
        ])
        .args(args)
        .output()
        .expect("pepper runs")
}

#[test]
fn real_pepper_cli_works_against_saltgate() {
    let sandbox = shared();
    let gate = Gate::start(sandbox, |_| {});
    let out = pepper(
        sandbox.venv(),
        gate.addr,
        &[sandbox.minion_id(), "test.ping"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pepper: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("pepper --out json prints JSON");
    assert_eq!(v, json!({"e2e-minion": true}));

    let out = pepper(
        sandbox.venv(),
        gate.addr,
        &["--client", "runner", "test.arg", "x", "y=z"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pepper runner: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"x\"") && stdout.contains("\"y\""),
        "{stdout}"
    );
}

/// The same requests to saltgate and to the real rest_cherrypy on one master give the same
/// `return` bodies (errors aside: those are intended differences). Also prints the latency of
/// a `local` `test.ping` round trip through each.
#[test]
fn same_returns_as_rest_cherrypy() {
    let sandbox = SaltSandbox::builder()
        .with_salt_api(crate::support::SaltApi::RestCherrypy)
        .start();
    let gate = Gate::start(&sandbox, |_| {});
    let cherry = format!("127.0.0.1:{}", sandbox.salt_api_port());
    let call = |base: &str, path: &str, token: Option<&str>, body: &Value| -> (StatusCode, Value) {
        gate.rt.block_on(async {
            let mut req = reqwest::Client::new()
                .post(format!("http://{base}{path}"))
                .header("accept", "application/json")
                .timeout(Duration::from_secs(60))
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
        })
    };
    let login = |base: &str| -> String {
        let (s, v) = call(
            base,
            "/login",
            None,
            &json!({"username": "saltdev", "password": "saltdev", "eauth": "file"}),
        );
        assert_eq!(s, StatusCode::OK, "{base}: {v}");
        v["return"][0]["token"].as_str().unwrap().to_owned()
    };
    let ours = gate.addr.to_string();
    let (t_ours, t_cherry) = (login(&ours), login(&cherry));
    let mid = sandbox.minion_id();
    let same = [
        json!([{"client": "local", "tgt": mid, "fun": "test.ping"}]),
        json!([{"client": "local", "tgt": mid, "fun": "test.arg", "arg": ["a", 1, "k=v"], "kwarg": {"x": {"y": 1}}},
               {"client": "local", "tgt": "nomatch*", "fun": "test.ping"},
               {"client": "local", "tgt": mid, "fun": "nope.nope"}]),
        json!([{"client": "runner", "fun": "test.arg", "arg": ["x", "y=z"], "kwarg": {"a": 1}, "b": 2}]),
        json!([{"client": "local_batch", "tgt": "*", "fun": "test.ping", "batch": "1"}]),
    ];
    for body in same {
        let (s1, mut a) = call(&ours, "/", Some(&t_ours), &body);
        let (s2, mut b) = call(&cherry, "/", Some(&t_cherry), &body);
        assert_eq!(
            (s1, s2),
            (StatusCode::OK, StatusCode::OK),
            "{body}: {a} / {b}"
        );
        // Per-job values differ between the two runs.
        for v in [&mut a, &mut b] {
            if let Some(kwargs) = v.pointer_mut(&format!("/return/0/{mid}/kwargs")) {
                for k in ["__pub_jid", "__pub_user"] {
                    kwargs.as_object_mut().unwrap().remove(k);
                }
            }
        }
        assert_eq!(a, b, "{body}");
    }
    // Shapes whose values differ by run: compare keys.
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    for chunk in [
        json!({"client": "local_async", "tgt": mid, "fun": "test.ping"}),
        json!({"client": "runner_async", "fun": "test.arg"}),
        json!({"client": "wheel", "fun": "key.list_all"}),
    ] {
        let (_, a) = call(&ours, "/", Some(&t_ours), &chunk);
        let (_, b) = call(&cherry, "/", Some(&t_cherry), &chunk);
        assert_eq!(
            keys(&a["return"][0]),
            keys(&b["return"][0]),
            "{chunk}: {a} / {b}"
        );
        if chunk["client"] == "wheel" {
            assert_eq!(keys(&a["return"][0]["data"]), keys(&b["return"][0]["data"]));
            assert_eq!(
                a["return"][0]["data"]["return"],
                b["return"][0]["data"]["return"]
            );
        }
    }
    // Latency of one local test.ping, median of 15, each way.
    let ping = json!([{"client": "local", "tgt": mid, "fun": "test.ping"}]);
    let median = |base: &str, token: &str| -> Duration {
        let mut times: Vec<Duration> = (0..15)
            .map(|_| {
                let t = Instant::now();
                let (s, _) = call(base, "/", Some(token), &ping);
                assert_eq!(s, StatusCode::OK);
                t.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    let (m_ours, m_cherry) = (median(&ours, &t_ours), median(&cherry, &t_cherry));
    println!("local test.ping median: saltgate {m_ours:?}, rest_cherrypy {m_cherry:?}");
}

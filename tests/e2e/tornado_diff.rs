//! Differential test of the rest_tornado dialect: the same request set against saltgate's
//! rest_tornado listener and the real salt-api `rest_tornado` (WebSockets on) on one master.
//! Status codes must match, and so must `return` payloads where they are deterministic, except
//! for the differences listed (each with its reason). The hook event each fires is compared as
//! the Reactor gets it, from the master's bus. pepper runs against the dialect.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use saltgate::config::Dialect;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::gate::{Gate, blocking};
use crate::support::{SaltApi, SaltSandbox};

/// Cases whose statuses differ on purpose: (case, saltgate, rest_tornado, why).
const INTENDED: &[(&str, u16, u16, &str)] = &[
    (
        "disabled client",
        400,
        200,
        "netapi_enable_clients is honoured (rest_tornado ignores it and runs the client)",
    ),
    (
        "hook with an empty body",
        200,
        500,
        "an empty hook body is an event with an empty post (rest_tornado fails on it)",
    ),
    (
        "GET /hook",
        405,
        500,
        "GET is not a method of /hook (rest_tornado's handler fails on its path argument)",
    ),
    (
        "lowstate of another Content-Type",
        415,
        406,
        "an unsupported request body type is 415 Unsupported Media Type (rest_tornado: 406, \
         which is about the answer's format)",
    ),
];

/// How the `return` payloads compare.
#[derive(Clone, Copy, Debug)]
enum Ret {
    /// Equal, byte for byte (Python's `json.dumps` separators).
    Same,
    /// Not deterministic (a new jid each call): both `return[0]` carry this key.
    HasKey(&'static str),
    /// Both `return[0]` are maps (a list that changes between the two calls).
    Map,
    /// An error or a redirect: only the status is compared (rest_tornado writes Tornado's HTML
    /// error page, saltgate an error body in the negotiated format).
    StatusOnly,
}

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<String>,
    status: u16,
    ret: Ret,
}

fn case(name: &'static str, method: &str, path: &str, status: u16, ret: Ret) -> Case {
    Case {
        name,
        method: method.parse().unwrap(),
        path: path.to_owned(),
        token: None,
        headers: Vec::new(),
        body: None,
        status,
        ret,
    }
}

impl Case {
    fn json(mut self, body: &Value) -> Self {
        self.headers.push(("content-type", "application/json"));
        self.body = Some(body.to_string());
        self
    }

    fn raw(mut self, content_type: &'static str, body: &str) -> Self {
        self.headers.push(("content-type", content_type));
        self.body = Some(body.to_owned());
        self
    }

    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

fn eauth(user: &str, password: &str, chunk: Value) -> Value {
    let mut chunk = chunk;
    chunk["eauth"] = json!("file");
    chunk["username"] = json!(user);
    chunk["password"] = json!(password);
    chunk
}

/// The sandbox: the real rest_tornado with WebSockets, `runner_async` left out of
/// `netapi_enable_clients`.
async fn sandbox() -> SaltSandbox {
    blocking(|| {
        SaltSandbox::builder()
            .with_salt_api(SaltApi::RestTornado)
            .with_master_config("rest_tornado:\n  websockets: true")
            .with_master_config(
                "netapi_enable_clients: [local, local_async, local_batch, runner, wheel]",
            )
            .start()
    })
    .await
}

#[tokio::test]
async fn status_codes_and_returns_match_rest_tornado() {
    let sandbox = sandbox().await;
    let gate = Gate::start_dialect(&sandbox, Dialect::RestTornado, "", &[], |_| {}).await;
    let ours = format!("http://{}", gate.addr);
    let theirs = format!("http://127.0.0.1:{}", sandbox.salt_api_port());
    let mid = sandbox.minion_id().to_owned();
    let channel = &gate.salt().channel;
    let token = channel
        .mk_token("file", "saltdev", "saltdev")
        .await
        .unwrap()
        .token;
    let limited = channel
        .mk_token("file", "limited", "limited")
        .await
        .unwrap()
        .token;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A finished job both can list.
    let v: Value = c
        .post(format!("{ours}/"))
        .header("x-auth-token", &token)
        .json(&json!([{"client": "local_async", "tgt": mid, "fun": "test.ping"}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jid = v["return"][0]["jid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ping = json!({"client": "local", "tgt": mid, "fun": "test.ping"});
    let cases = vec![
        case("GET /", "GET", "/", 200, Ret::Same),
        case("GET /login", "GET", "/login", 401, Ret::Same),
        case("login", "POST", "/login", 200, Ret::HasKey("token"))
            .json(&json!({"username": "saltdev", "password": "saltdev", "eauth": "file"})),
        case(
            "login, wrong password",
            "POST",
            "/login",
            401,
            Ret::StatusOnly,
        )
        .json(&json!({"username": "saltdev", "password": "wrong", "eauth": "file"})),
        case(
            "login without a password",
            "POST",
            "/login",
            400,
            Ret::StatusOnly,
        )
        .json(&json!({"username": "saltdev", "eauth": "file"})),
        case(
            "lowstate without a session",
            "POST",
            "/",
            302,
            Ret::StatusOnly,
        )
        .json(&json!([ping])),
        case(
            "lowstate, unknown session",
            "POST",
            "/",
            302,
            Ret::StatusOnly,
        )
        .json(&json!([ping]))
        .token("deadbeefdeadbeef"),
        case("local test.ping", "POST", "/", 200, Ret::Same)
            .json(&json!([ping]))
            .token(&token),
        case("a single map", "POST", "/", 200, Ret::Same)
            .json(&ping)
            .token(&token),
        case("local matching no minion", "POST", "/", 200, Ret::Same)
            .json(&json!([{"client": "local", "tgt": "no-such-minion", "fun": "test.ping"}]))
            .token(&token),
        case("local_async", "POST", "/", 200, Ret::HasKey("jid"))
            .json(&json!([{"client": "local_async", "tgt": mid, "fun": "test.ping"}]))
            .token(&token),
        case("runner", "POST", "/", 200, Ret::Same)
            .json(
                &json!([{"client": "runner", "fun": "test.arg", "arg": ["a"], "kwarg": {"k": 1}}]),
            )
            .token(&token),
        case(
            "a client rest_tornado does not serve",
            "POST",
            "/",
            400,
            Ret::StatusOnly,
        )
        .json(&json!([{"client": "wheel", "fun": "key.list_all"}]))
        .token(&token),
        case("disabled client", "POST", "/", 200, Ret::StatusOnly)
            .json(&json!([{"client": "runner_async", "fun": "test.arg"}]))
            .token(&token),
        case("a chunk's own unknown token", "POST", "/", 200, Ret::Same)
            .json(
                &json!([{"client": "local", "tgt": mid, "fun": "test.ping", "token": "deadbeef"}]),
            )
            .token(&token),
        case("limited user runs test.arg", "POST", "/", 200, Ret::Same)
            .json(&json!([{"client": "local", "tgt": mid, "fun": "test.arg"}]))
            .token(&limited),
        case("limited user runs test.ping", "POST", "/", 200, Ret::Same)
            .json(&json!([ping]))
            .token(&limited),
        case("two chunks, the first refused", "POST", "/", 200, Ret::Same)
            .json(&json!([
                {"client": "local", "tgt": mid, "fun": "test.arg"},
                ping,
            ]))
            .token(&limited),
        case("form lowstate", "POST", "/", 200, Ret::Same)
            .raw(
                "application/x-www-form-urlencoded",
                &format!("client=local&tgt={mid}&fun=test.ping"),
            )
            .token(&token),
        case("JSON as text/plain", "POST", "/", 200, Ret::Same)
            .raw("text/plain", &json!([ping]).to_string())
            .token(&token),
        case("malformed JSON", "POST", "/", 400, Ret::StatusOnly)
            .raw("application/json", "[{bad")
            .token(&token),
        case(
            "lowstate of another Content-Type",
            "POST",
            "/",
            415,
            Ret::StatusOnly,
        )
        .raw("text/html", "<p>")
        .token(&token),
        case("unacceptable Accept", "GET", "/", 406, Ret::StatusOnly).header("accept", "text/html"),
        case("run with eauth", "POST", "/run", 200, Ret::Same).json(&json!([eauth(
            "saltdev",
            "saltdev",
            ping.clone()
        )])),
        case("run, wrong password", "POST", "/run", 200, Ret::Same).json(&json!([eauth(
            "saltdev",
            "wrong",
            ping.clone()
        )])),
        case("run without credentials", "POST", "/run", 200, Ret::Same).json(&json!([ping])),
        case("run with X-Auth-Token", "POST", "/run", 200, Ret::Same)
            .json(&json!([ping]))
            .token(&token),
        case("GET /run", "GET", "/run", 200, Ret::Same),
        case(
            "minions without a session",
            "GET",
            "/minions",
            302,
            Ret::StatusOnly,
        ),
        case(
            "GET /minions/<mid>",
            "GET",
            &format!("/minions/{mid}"),
            200,
            Ret::HasKey("e2e-minion"),
        )
        .token(&token),
        case("POST /minions", "POST", "/minions", 200, Ret::HasKey("jid"))
            .json(&json!([{"tgt": mid, "fun": "test.ping"}]))
            .token(&token),
        case(
            "POST /minions with client local",
            "POST",
            "/minions",
            400,
            Ret::StatusOnly,
        )
        .json(&json!([ping]))
        .token(&token),
        case("GET /jobs", "GET", "/jobs", 200, Ret::Map).token(&token),
        case(
            "GET /jobs/<jid>",
            "GET",
            &format!("/jobs/{jid}"),
            200,
            Ret::Same,
        )
        .token(&token),
        case(
            "jobs without a session",
            "GET",
            "/jobs",
            302,
            Ret::StatusOnly,
        ),
        case(
            "events without a session",
            "GET",
            "/events",
            302,
            Ret::StatusOnly,
        ),
        case(
            "hook",
            "POST",
            "/hook/e2e/tornado-diff?ref=main",
            200,
            Ret::Same,
        )
        .json(&json!({"after": "abc"})),
        case(
            "hook with an empty body",
            "POST",
            "/hook/e2e/tornado-empty",
            200,
            Ret::StatusOnly,
        )
        .raw("application/json", ""),
        case("GET /hook", "GET", "/hook", 405, Ret::StatusOnly),
        case("preflight", "OPTIONS", "/", 204, Ret::StatusOnly)
            .header("access-control-request-headers", "x-auth-token"),
        case("no such route", "GET", "/keys", 404, Ret::StatusOnly),
    ];

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let mut results = Vec::new();
        for base in [&ours, &theirs] {
            let mut req = c.request(case.method.clone(), format!("{base}{}", case.path));
            for (k, v) in &case.headers {
                req = req.header(*k, *v);
            }
            if let Some(t) = &case.token {
                req = req.header("x-auth-token", t);
            }
            if let Some(body) = &case.body {
                req = req.body(body.clone());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let text = resp.text().await.unwrap_or_default();
            results.push((status, location, text));
        }
        let [(s_ours, l_ours, t_ours), (s_them, l_them, t_them)] =
            <[_; 2]>::try_from(results).unwrap();
        report.push(format!(
            "{}: saltgate {s_ours}, rest_tornado {s_them}",
            case.name
        ));
        let (want_ours, want_them) = match INTENDED.iter().find(|(n, ..)| *n == case.name) {
            Some((_, o, t, _)) => (*o, *t),
            None => (case.status, case.status),
        };
        if (s_ours, s_them) != (want_ours, want_them) {
            failures.push(format!(
                "{}: statuses saltgate {s_ours}, rest_tornado {s_them}; want {want_ours}, \
                 {want_them} ({t_ours} / {t_them})",
                case.name
            ));
            continue;
        }
        if s_ours == 302 && (l_ours != l_them || l_ours.as_deref() != Some("/login")) {
            failures.push(format!(
                "{}: redirects to {l_ours:?} and {l_them:?}",
                case.name
            ));
        }
        let v_ours: Value = serde_json::from_str(&t_ours).unwrap_or(Value::Null);
        let v_them: Value = serde_json::from_str(&t_them).unwrap_or(Value::Null);
        let (r_ours, r_them) = (&v_ours["return"], &v_them["return"]);
        match case.ret {
            Ret::Same if t_ours != t_them => failures.push(format!(
                "{}: bodies differ: saltgate {t_ours} / rest_tornado {t_them}",
                case.name
            )),
            Ret::HasKey(key) if r_ours[0].get(key).is_none() || r_them[0].get(key).is_none() => {
                failures.push(format!(
                    "{}: want {key:?} in both: saltgate {t_ours} / rest_tornado {t_them}",
                    case.name
                ));
            }
            Ret::Map if !r_ours[0].is_object() || !r_them[0].is_object() => {
                failures.push(format!(
                    "{}: want a map in both: saltgate {t_ours} / rest_tornado {t_them}",
                    case.name
                ));
            }
            _ => {}
        }
    }
    for (name, ..) in INTENDED {
        assert!(
            cases.iter().any(|c| c.name == *name),
            "intended difference {name} has no case"
        );
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The event each fires for the same hook, as the Reactor gets it from the master's bus.
#[tokio::test]
async fn the_reactor_gets_the_same_hook_event_data_as_from_rest_tornado() {
    let sandbox = sandbox().await;
    let gate = Gate::start_dialect(&sandbox, Dialect::RestTornado, "", &[], |_| {}).await;
    let mut sub = gate.state.bus.subscribe();
    let c = reqwest::Client::new();
    let mut data = Vec::new();
    for (base, side) in [
        (format!("http://{}", gate.addr), "ours"),
        (
            format!("http://127.0.0.1:{}", sandbox.salt_api_port()),
            "theirs",
        ),
    ] {
        for (suffix, content_type, body) in [
            (
                "json",
                "application/json",
                r#"{"after": "abc", "n": [1, 2]}"#,
            ),
            ("form", "application/x-www-form-urlencoded", "a=1&a=2&b=+x+"),
        ] {
            let tag = format!("salt/netapi/hook/e2e/tornado-{side}-{suffix}");
            let resp = c
                .post(format!(
                    "{base}/hook/e2e/tornado-{side}-{suffix}?ref=main&tag=a&tag=b"
                ))
                .header("content-type", content_type)
                .header("x-github-event", "push")
                .header("x-2fa-code", "1")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{side} {suffix}");
            assert_eq!(resp.text().await.unwrap(), r#"{"success": true}"#);
            let ev = sub
                .wait_for(Duration::from_secs(20), |e| e.tag == tag)
                .await
                .unwrap_or_else(|e| panic!("no {tag}: {e}"));
            data.push(saltgate::salt::to_json(&ev.data));
        }
    }
    let [ours_json, ours_form, theirs_json, theirs_form] = <[Value; 4]>::try_from(data).unwrap();
    for (ours, theirs) in [(ours_json, theirs_json), (ours_form, theirs_form)] {
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !k.starts_with("_saltgate"))
                .cloned()
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(&ours), keys(&theirs), "{ours} / {theirs}");
        assert_eq!(ours["post"], theirs["post"]);
        assert_eq!(ours["get"], theirs["get"]);
        // The headers as Tornado names them; Host names each server's own port.
        let headers = |v: &Value| -> Vec<(String, Value)> {
            let mut h: Vec<(String, Value)> = v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "Host")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            h.sort_by(|a, b| a.0.cmp(&b.0));
            h
        };
        assert_eq!(headers(&ours), headers(&theirs));
        assert!(ours["_stamp"].is_string());
    }
}

/// pepper logs in and runs commands through the rest_tornado dialect; the WebSocket feed
/// answers as rest_tornado's does.
#[tokio::test]
async fn pepper_and_websockets_work_against_the_rest_tornado_dialect() {
    let sandbox = sandbox().await;
    let gate = Gate::start_dialect(&sandbox, Dialect::RestTornado, "", &[], |_| {}).await;
    let (venv, addr) = (sandbox.venv().to_path_buf(), gate.addr);
    let mid = sandbox.minion_id().to_owned();
    let out = blocking(move || crate::lowstate::pepper(&venv, addr, &[&mid, "test.ping"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pepper: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("pepper --out json prints JSON");
    assert_eq!(v, json!({sandbox.minion_id(): true}));

    // /all_events/<token>: after "websocket client ready", every event as {"data", "tag"}.
    let token = gate
        .salt()
        .channel
        .mk_token("file", "saltdev", "saltdev")
        .await
        .unwrap()
        .token;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/all_events/{token}", gate.addr))
            .await
            .unwrap();
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let resp = c
        .post(gate.url("/hook/e2e/tornado-ws"))
        .json(&json!({"k": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .expect("an event on /all_events")
            .expect("the socket stays open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["tag"] == "salt/netapi/hook/e2e/tornado-ws" {
            assert_eq!(v["data"]["post"], json!({"k": "v"}));
            break;
        }
    }
    // A token the master does not know: refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/all_events/{}",
        gate.addr,
        "ab".repeat(32)
    ))
    .await;
    assert!(refused.is_err());
}

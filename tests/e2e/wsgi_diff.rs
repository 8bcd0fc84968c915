//! Differential test of the rest_wsgi dialect: the same request set against saltgate's
//! rest_wsgi listener and rest_wsgi's own WSGI application from the same Salt install, on one
//! master. Status codes must match, and so must `return` payloads where they are
//! deterministic, except for the differences listed (each with its reason).
//!
//! The reference is rest_wsgi's `application` under wsgiref's simple server, as salt-api runs
//! it, with its `str` answer encoded to bytes: salt-api itself, started with a `rest_wsgi:`
//! block, answers every request of the set 500 `A server error occurred.  Please contact the
//! administrator.` in text/plain (its application returns `str`, which wsgiref refuses on
//! Python 3). That is measured here too, against the real salt-api on the same master.

use std::time::Duration;

use saltgate::config::Dialect;
use serde_json::{Value, json};

use crate::gate::{Gate, blocking};
use crate::support::{SaltApi, SaltSandbox};

/// What salt-api (rest_wsgi, under wsgiref) answers to every request.
const WSGIREF_ERROR: &str = "A server error occurred.  Please contact the administrator.";

/// Cases where the statuses differ on purpose: (case, saltgate, rest_wsgi, why).
const INTENDED: &[(&str, u16, u16, &str)] = &[
    (
        "wrong password",
        401,
        500,
        "refused credentials are 401 (Salt's LocalClient raises AuthenticationError, which \
         rest_wsgi answers with 500)",
    ),
    (
        "unknown user",
        401,
        500,
        "refused credentials are 401 (as for a wrong password)",
    ),
    (
        "unknown token",
        401,
        500,
        "refused credentials are 401 (as for a wrong password)",
    ),
    (
        "limited user runs test.arg",
        403,
        500,
        "authenticated but not allowed is 403 Forbidden (Salt's LocalClient raises \
         AuthorizationError, which rest_wsgi answers with 500)",
    ),
    (
        "unknown client",
        400,
        500,
        "a client mistake, not a server error; found before any chunk runs",
    ),
    (
        "disabled client",
        400,
        500,
        "a client mistake, not a server error; found before any chunk runs",
    ),
    (
        "chunk without tgt",
        400,
        500,
        "a client mistake, not a server error; found before any chunk runs",
    ),
    (
        "a map, not a list",
        200,
        500,
        "a single map is a one-chunk lowstate (rest_wsgi iterates its keys and fails)",
    ),
    (
        "Content-Type with a charset",
        200,
        406,
        "application/json with parameters is JSON (rest_wsgi compares the whole header)",
    ),
];

/// How the `return` payloads compare.
#[derive(Clone, Copy)]
enum Ret {
    /// Equal.
    Same,
    /// Different on purpose, for this reason.
    Differs(&'static str),
    /// Not deterministic (a new jid each call): both carry this key.
    HasKey(&'static str),
}

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<String>,
    /// The status both answer (unless listed in `INTENDED`).
    status: u16,
    ret: Ret,
}

fn post(name: &'static str, body: Value, status: u16, ret: Ret) -> Case {
    Case {
        name,
        method: reqwest::Method::POST,
        path: "/",
        content_type: Some("application/json"),
        body: Some(body.to_string()),
        status,
        ret,
    }
}

fn eauth(user: &str, password: &str, chunk: Value) -> Value {
    let mut chunk = chunk;
    chunk["eauth"] = json!("file");
    chunk["username"] = json!(user);
    chunk["password"] = json!(password);
    chunk
}

#[tokio::test]
async fn status_codes_and_returns_match_rest_wsgi() {
    let sandbox = blocking(|| {
        SaltSandbox::builder()
            .with_salt_api(SaltApi::RestWsgi)
            .with_rest_wsgi_app()
            // local_batch is served by both but disabled here.
            .with_master_config(
                "netapi_enable_clients: [local, local_async, local_subset, runner, \
                 runner_async, wheel, wheel_async]",
            )
            .start()
    })
    .await;
    let gate = Gate::start_dialect(&sandbox, Dialect::RestWsgi, "", &[], |_| {}).await;
    let ours = format!("http://{}", gate.addr);
    let module = format!("http://127.0.0.1:{}", sandbox.wsgi_app_port());
    let salt_api = format!("http://127.0.0.1:{}", sandbox.salt_api_port());
    let mid = sandbox.minion_id();
    let token = gate
        .salt()
        .channel
        .mk_token("file", "saltdev", "saltdev")
        .await
        .unwrap()
        .token;
    let ping = json!({"client": "local", "tgt": mid, "fun": "test.ping"});
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let cases = vec![
        post(
            "local test.ping, eauth",
            json!([eauth("saltdev", "saltdev", ping.clone())]),
            200,
            Ret::Same,
        ),
        post(
            "wrong password",
            json!([eauth("saltdev", "wrong", ping.clone())]),
            401,
            Ret::Same,
        ),
        post(
            "unknown user",
            json!([eauth("nobody", "nobody", ping.clone())]),
            401,
            Ret::Same,
        ),
        post("no credentials", json!([ping.clone()]), 401, Ret::Same),
        post(
            "token",
            json!([{"client": "local", "tgt": mid, "fun": "test.ping", "token": token}]),
            200,
            Ret::Same,
        ),
        post(
            "unknown token",
            json!([{"client": "local", "tgt": mid, "fun": "test.ping", "token": "deadbeef"}]),
            401,
            Ret::Same,
        ),
        post(
            "limited user runs test.ping",
            json!([eauth("limited", "limited", ping.clone())]),
            200,
            Ret::Same,
        ),
        post(
            "limited user runs test.arg",
            json!([eauth(
                "limited",
                "limited",
                json!({"client": "local", "tgt": mid, "fun": "test.arg"})
            )]),
            403,
            Ret::Same,
        ),
        post(
            "two chunks, the second without credentials",
            json!([eauth("saltdev", "saltdev", ping.clone()), ping.clone()]),
            401,
            Ret::Same,
        ),
        post(
            "runner, eauth",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "runner", "fun": "test.arg", "arg": ["a"], "kwarg": {"k": 1}})
            )]),
            200,
            Ret::Same,
        ),
        post(
            "wheel, eauth",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "wheel", "fun": "key.list_all"})
            )]),
            200,
            Ret::HasKey("data"),
        ),
        post(
            "local_async, eauth",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "local_async", "tgt": mid, "fun": "test.ping"})
            )]),
            200,
            Ret::HasKey("jid"),
        ),
        post(
            "unknown client",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "bogus", "fun": "test.ping"})
            )]),
            400,
            Ret::Same,
        ),
        post(
            "disabled client",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "local_batch", "tgt": mid, "fun": "test.ping"})
            )]),
            400,
            Ret::Same,
        ),
        post(
            "chunk without tgt",
            json!([eauth(
                "saltdev",
                "saltdev",
                json!({"client": "local", "fun": "test.ping"})
            )]),
            400,
            Ret::Differs("saltgate names what is missing; rest_wsgi shows a Python error"),
        ),
        post(
            "a map, not a list",
            eauth("saltdev", "saltdev", ping.clone()),
            200,
            Ret::Differs("rest_wsgi fails on a map"),
        ),
        Case {
            body: Some("[{bad".into()),
            ..post(
                "malformed JSON",
                json!(null),
                400,
                Ret::Differs("the parse error is saltgate's words, not Python's json module's"),
            )
        },
        Case {
            body: Some(String::new()),
            ..post(
                "empty body",
                json!(null),
                400,
                Ret::Differs("the parse error is saltgate's words, not Python's json module's"),
            )
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            body: Some("client=local".into()),
            ..post("form body", json!(null), 406, Ret::Same)
        },
        Case {
            content_type: None,
            ..post(
                "no Content-Type",
                json!([eauth("saltdev", "saltdev", ping.clone())]),
                406,
                Ret::Same,
            )
        },
        Case {
            content_type: Some("application/json; charset=utf-8"),
            ..post(
                "Content-Type with a charset",
                json!([eauth("saltdev", "saltdev", ping.clone())]),
                200,
                Ret::Differs("rest_wsgi refuses it (406)"),
            )
        },
        Case {
            method: reqwest::Method::GET,
            content_type: None,
            body: None,
            ..post("GET /", json!(null), 200, Ret::Same)
        },
        Case {
            method: reqwest::Method::GET,
            path: "/anything/else",
            content_type: None,
            body: None,
            ..post("GET another path", json!(null), 200, Ret::Same)
        },
        Case {
            path: "/run",
            ..post(
                "POST another path",
                json!([eauth("saltdev", "saltdev", ping.clone())]),
                200,
                Ret::Same,
            )
        },
        Case {
            method: reqwest::Method::PUT,
            ..post("PUT", json!([]), 405, Ret::Same)
        },
        Case {
            method: reqwest::Method::DELETE,
            content_type: None,
            body: None,
            ..post("DELETE", json!(null), 405, Ret::Same)
        },
        post("empty list", json!([]), 200, Ret::Same),
    ];

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let mut results = Vec::new();
        for base in [&ours, &module, &salt_api] {
            let mut req = c.request(case.method.clone(), format!("{base}{}", case.path));
            if let Some(ct) = case.content_type {
                req = req.header("content-type", ct);
            }
            if let Some(body) = &case.body {
                req = req.body(body.clone());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let text = resp.text().await.unwrap_or_default();
            results.push((status, ct, text));
        }
        let [
            (s_ours, ct_ours, t_ours),
            (s_mod, ct_mod, t_mod),
            (s_api, _, t_api),
        ] = <[_; 3]>::try_from(results).unwrap();
        let why = match case.ret {
            Ret::Differs(why) => format!(" (return differs: {why})"),
            _ => String::new(),
        };
        report.push(format!(
            "{}: saltgate {s_ours}, rest_wsgi {s_mod}{why}",
            case.name
        ));
        let (want_ours, want_mod) = match INTENDED.iter().find(|(n, ..)| *n == case.name) {
            Some((_, o, m, _)) => (*o, *m),
            None => (case.status, case.status),
        };
        if (s_ours, s_mod) != (want_ours, want_mod) {
            failures.push(format!(
                "{}: statuses saltgate {s_ours}, rest_wsgi {s_mod}; want {want_ours}, {want_mod}",
                case.name
            ));
        }
        // salt-api's rest_wsgi: the same 500 for everything.
        if (s_api, t_api.as_str()) != (500, WSGIREF_ERROR) {
            failures.push(format!("{}: salt-api answered {s_api} {t_api}", case.name));
        }
        for (side, ct) in [("saltgate", &ct_ours), ("rest_wsgi", &ct_mod)] {
            if ct != "application/json" {
                failures.push(format!("{}: {side} content-type {ct:?}", case.name));
            }
        }
        let v_ours: Value = serde_json::from_str(&t_ours).unwrap_or(Value::String(t_ours.clone()));
        let v_mod: Value = serde_json::from_str(&t_mod).unwrap_or(Value::String(t_mod.clone()));
        let (r_ours, r_mod) = (&v_ours["return"], &v_mod["return"]);
        match case.ret {
            Ret::Same if r_ours != r_mod => failures.push(format!(
                "{}: returns differ: saltgate {r_ours} / rest_wsgi {r_mod}",
                case.name
            )),
            // Deterministic answers are the same bytes (Python's json.dumps separators).
            Ret::Same if t_ours != t_mod => failures.push(format!(
                "{}: bodies differ: saltgate {t_ours} / rest_wsgi {t_mod}",
                case.name
            )),
            Ret::Differs(_) if r_ours == r_mod => failures.push(format!(
                "{}: listed as different but both return {r_ours}",
                case.name
            )),
            Ret::HasKey(key) if r_ours[0].get(key).is_none() || r_mod[0].get(key).is_none() => {
                failures.push(format!(
                    "{}: want {key:?} in both: saltgate {r_ours} / rest_wsgi {r_mod}",
                    case.name
                ));
            }
            _ => {}
        }
        // Every answer is {"return": ...}, failures a string.
        if !v_ours.is_object() || v_ours.as_object().map(|o| o.len()) != Some(1) {
            failures.push(format!(
                "{}: saltgate's body is not {{\"return\": ..}}: {t_ours}",
                case.name
            ));
        }
        if s_ours >= 400 && !r_ours.is_string() {
            failures.push(format!(
                "{}: saltgate's error return is not a string: {t_ours}",
                case.name
            ));
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

/// The README's example: a plain `curl` with the credentials in the body.
#[tokio::test]
async fn plain_curl_with_credentials_in_the_body_runs_a_command() {
    let sandbox = crate::support::salt::shared();
    let gate = Gate::start_dialect(sandbox, Dialect::RestWsgi, "", &[], |_| {}).await;
    let mid = sandbox.minion_id().to_owned();
    let url = gate.url("/");
    let out = blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", &url, "-H", "Content-Type: application/json", "-d"])
            .arg(format!(
                r#"[{{"client": "local", "tgt": "{mid}", "fun": "test.ping", "eauth": "file", "username": "saltdev", "password": "saltdev"}}]"#
            ))
            .output()
            .expect("run curl")
    })
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        status,
        "200",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v, json!({"return": [{sandbox.minion_id(): true}]}));
}

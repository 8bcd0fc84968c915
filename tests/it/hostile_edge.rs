//! Hostile requests at the edge that need no crash to get past the operator's intent: CSRF,
//! path tricks around hook rules, log injection, static-file redirects and symlinks, token
//! syntax, resent bodies. Each case asserts the status, the error code and what did not happen.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestApp, assert_no_event, recv_event};

/// Sends `request` as written (no client-side path normalisation) and returns the status line's
/// code, the head and the body.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}

fn post(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: saltgate\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: saltgate\r\nConnection: close\r\n\r\n")
}

async fn code_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

// --- CSRF -------------------------------------------------------------------------------------

#[tokio::test]
async fn cookie_authenticated_posts_and_logins_from_another_origin_are_refused() {
    let app = TestApp::builder().spawn().await;
    let c = reqwest::Client::new();
    let own = format!("http://{}", app.addr);
    let cookie = "session_id=0123456789abcdef";
    let lowstate = r#"[{"client":"local","tgt":"*","fun":"cmd.run","arg":["id"]}]"#;
    let mut sub = app.subscribe();

    // A form on a sibling site posting the victim's cookie: refused before anything runs.
    for (path, content_type, body) in [
        ("/", "text/plain", lowstate),
        (
            "/",
            "application/x-www-form-urlencoded",
            "client=local&tgt=*&fun=cmd.run&arg=id",
        ),
        ("/run", "text/plain", lowstate),
        ("/minions", "text/plain", lowstate),
        ("/logout", "text/plain", ""),
        ("/hook/deploy", "application/x-www-form-urlencoded", "a=1"),
    ] {
        let resp = c
            .post(app.url(path))
            .header("cookie", cookie)
            .header("origin", "https://evil.example")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, json) = code_of(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} {content_type}");
        assert_eq!(json["code"], "cross_origin", "{path}");
        assert!(json["message"].as_str().unwrap().contains("X-Auth-Token"));
    }
    assert_no_event(&mut sub).await;

    // Login CSRF: no cookie needed, a foreign origin or a cross-site fetch is enough.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ] {
        let resp = c
            .post(app.url("/login"))
            .header(name, value)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=attacker&password=x&eauth=pam")
            .send()
            .await
            .unwrap();
        let (status, json) = code_of(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {value}");
        assert_eq!(json["code"], "cross_origin");
    }

    // The refusal speaks the negotiated format.
    let resp = c
        .post(app.url("/"))
        .header("cookie", cookie)
        .header("origin", "https://evil.example")
        .header("accept", "application/x-yaml")
        .body(lowstate)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["content-type"], "application/x-yaml");
    assert!(resp.text().await.unwrap().contains("code: cross_origin"));

    // Unaffected: the same origin, a token in a header, tools without browser headers, a hook
    // without the cookie, and safe methods.
    let not_refused = |resp: reqwest::Response, label: &str| {
        assert_ne!(resp.status(), StatusCode::FORBIDDEN, "{label}");
    };
    for (label, headers) in [
        (
            "same origin",
            vec![("cookie", cookie), ("origin", own.as_str())],
        ),
        (
            "sec-fetch-site same-origin",
            vec![("cookie", cookie), ("sec-fetch-site", "same-origin")],
        ),
        ("no browser headers (curl -b)", vec![("cookie", cookie)]),
        (
            "token in a header",
            vec![
                ("cookie", cookie),
                ("origin", "https://evil.example"),
                ("x-auth-token", "0123456789abcdef"),
            ],
        ),
        (
            "x-requested-with",
            vec![
                ("cookie", cookie),
                ("origin", "https://evil.example"),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
    ] {
        let mut req = c
            .post(app.url("/"))
            .header("content-type", "application/json")
            .body(lowstate);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        not_refused(req.send().await.unwrap(), label);
    }
    let resp = c
        .post(app.url("/hook/deploy"))
        .header("origin", "https://sender.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a cookie-less hook is not CSRF"
    );
    recv_event(&mut sub, "salt/netapi/hook/deploy").await;
    let resp = c
        .get(app.url("/"))
        .header("cookie", cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// --- Hook path tricks -------------------------------------------------------------------------

const SIGNED_RULE: &str = r#"
- path: github/deploy
  auth: none
  verify: {github: {secret_env: GH_SECRET}}
"#;

#[tokio::test]
async fn hook_paths_that_would_slip_past_their_rule_are_refused() {
    let app = TestApp::builder()
        .with_hooks(SIGNED_RULE, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let mut sub = app.subscribe();
    for path in [
        "/hook/github//deploy",
        "/hook/github/./deploy",
        "/hook/github/%2e/deploy",
        "/hook/github/../github/deploy",
        "/hook/github/%2E%2E/github/deploy",
        "/hook/github/deploy/./x",
        "/hook/github/deploy//x",
    ] {
        let (code, _, body) = raw(app.addr, &post(path, "", "{}")).await;
        assert_eq!(code, 400, "{path}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], "bad_path", "{path}");
        assert!(json["message"].as_str().unwrap().contains("segment"));
    }
    assert_no_event(&mut sub).await;

    // The signed rule covers its path and below, on segment boundaries, whatever the slashes
    // around it; its own path unsigned is 401.
    for path in [
        "/hook/github/deploy",
        "/hook/github/deploy/",
        "/hook/github/deploy/prod",
    ] {
        let (code, _, body) = raw(app.addr, &post(path, "", "{}")).await;
        assert_eq!(code, 401, "{path}: {body}");
    }
    // A sibling or another case is another tag, routed as such: with unmatched paths allowed it
    // fires under the default rule (check-config warns), as the distinct tag.
    let (code, _, _) = raw(app.addr, &post("/hook/github/deployX", "", "{}")).await;
    assert_eq!(code, 200);
    let ev = recv_event(&mut sub, "salt/netapi/hook/").await;
    assert_eq!(ev.tag, "salt/netapi/hook/github/deployX");

    let strict = TestApp::builder()
        .with_hooks(SIGNED_RULE, &[("GH_SECRET", "s3cret")])
        .with_config(|c| c.saltgate.unmatched_hooks = saltgate::config::Unmatched::Refuse)
        .spawn()
        .await;
    let mut sub = strict.subscribe();
    for path in [
        "/hook/github/deployX",
        "/hook/GitHub/Deploy",
        "/hook/github",
    ] {
        let (code, _, _) = raw(strict.addr, &post(path, "", "{}")).await;
        assert_eq!(code, 404, "{path}");
    }
    assert_no_event(&mut sub).await;
}

#[test]
fn check_config_warns_about_unsigned_fallthrough_and_reactor_globs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gh.secret"), "s3cret\n").unwrap();
    let master = format!(
        "reactor:\n  - 'salt/netapi/hook/github/deploy*': [/srv/reactor/deploy.sls]\n  \
         - 'salt/netapi/hook/github/deploy/*': [/srv/reactor/ok.sls]\n\
         saltgate:\n  bus: builtin\n  hooks:\n    - path: github/deploy\n      auth: none\n      \
         verify: {{github: {{secret_file: {}}}}}\n",
        dir.path().join("gh.secret").display()
    );
    std::fs::write(dir.path().join("master"), &master).unwrap();
    let run = |dir: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
            .args(["check-config", "--config"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    };
    let warnings = run(dir.path());
    assert!(
        warnings.contains("warning: saltgate.unmatched_hooks is allow"),
        "{warnings}"
    );
    assert!(
        warnings.contains("reactor glob \"salt/netapi/hook/github/deploy*\""),
        "{warnings}"
    );
    assert!(
        !warnings.contains("deploy/*\""),
        "a glob on a segment boundary is fine: {warnings}"
    );
    std::fs::write(
        dir.path().join("master"),
        master.replace(
            "  bus: builtin\n",
            "  bus: builtin\n  unmatched_hooks: refuse\n",
        ),
    )
    .unwrap();
    assert_eq!(
        run(dir.path()),
        "",
        "refusing unmatched paths leaves nothing to warn about"
    );
}

// --- Log injection ----------------------------------------------------------------------------

/// A `saltgate serve` subprocess with text logs on a free port, killed on drop.
struct Served {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_text_logs() -> (Served, BufReader<std::process::ChildStdout>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master"),
        format!(
            "rest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  \
             webhook_disable_auth: true\nsaltgate:\n  bus: builtin\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let served = Served {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "saltgate exited");
        if line.contains("saltgate listening") {
            break;
        }
    }
    (served, out)
}

#[tokio::test]
async fn client_text_cannot_forge_or_repaint_text_log_lines() {
    let (served, out) = serve_text_logs();
    let forged = "x%0A2026-01-01T00:00:00.000000Z%20%20INFO%20forged%0D%1B%5B2K%E2%80%A8";
    let (code, _, body) = raw(served.addr, &post(&format!("/hook/{forged}"), "", "{}")).await;
    assert_eq!(code, 400, "{body}");
    // A marker request whose log line shows the first one was written completely.
    let (code, _, _) = raw(served.addr, &post("/hook/a%0Ab/..", "", "{}")).await;
    assert_eq!(code, 400);
    drop(served);
    let mut text = String::new();
    out.into_inner().read_to_string(&mut text).unwrap();
    assert!(!text.contains('\x1b'), "raw ESC in the log: {text:?}");
    assert!(
        !text.contains('\r') && !text.contains('\u{2028}'),
        "{text:?}"
    );
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Hook refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert!(
        refused[0].contains(r"hook=x\n2026-01-01T00:00:00.000000Z  INFO forged\r\u{1b}[2K\u{2028}"),
        "{}",
        refused[0]
    );
    for line in text.lines() {
        assert!(
            !line.contains("INFO forged") || line.contains("Hook refused"),
            "forged: {line}"
        );
    }
}

// --- Static files -----------------------------------------------------------------------------

#[tokio::test]
async fn static_directory_redirects_keep_their_prefix_and_links_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("sub/index.html"), "sub index").unwrap();
    std::fs::write(www.join("hello.txt"), "hello").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), www.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink(www.join("hello.txt"), www.join("inside.txt")).unwrap();
    for prefix in ["", "/api"] {
        let www = www.clone();
        let gate = TestApp::builder()
            .with_config(move |c| {
                c.api.static_dir = Some(www);
                c.api.root_prefix = if prefix.is_empty() {
                    "/".into()
                } else {
                    prefix.into()
                };
            })
            .spawn()
            .await;
        let (code, head, _) = raw(gate.addr, &get(&format!("{prefix}/static/sub"))).await;
        assert!((300..400).contains(&code), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("\r\nlocation: {prefix}/static/sub/")),
            "{head}"
        );
        let (code, _, body) = raw(gate.addr, &get(&format!("{prefix}/static/sub/"))).await;
        assert_eq!((code, body.as_str()), (200, "sub index"));
        for path in ["///sub", "//sub", "/sub//", "/.//sub", "//evil.example/x"] {
            let (code, head, body) = raw(gate.addr, &get(&format!("{prefix}/static{path}"))).await;
            assert_eq!(code, 404, "{path}: {head}");
            assert!(
                !head.to_ascii_lowercase().contains("location:"),
                "{path}: {head}"
            );
            assert!(!body.contains("sub index"));
        }
        for path in ["/escape.txt", "/escape-dir/secret.txt", "/escape-dir/"] {
            let (code, _, body) = raw(gate.addr, &get(&format!("{prefix}/static{path}"))).await;
            assert_eq!(code, 404, "{path}");
            assert!(!body.contains("outside"), "{path}");
        }
        let (code, _, body) = raw(gate.addr, &get(&format!("{prefix}/static/inside.txt"))).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "hello"),
            "a link inside the directory"
        );
    }
}

// --- Token syntax -----------------------------------------------------------------------------

#[tokio::test]
async fn malformed_tokens_on_token_hooks_are_refused_before_the_master_is_asked() {
    let app = TestApp::builder()
        .with_hooks("- path: ci\n  auth: token\n", &[])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    for (name, value) in [
        ("x-auth-token", "../../etc/passwd"),
        ("x-auth-token", "0123-not-hex"),
        ("cookie", "session_id=zz%0A"),
    ] {
        let resp = c
            .post(app.url("/hook/ci"))
            .header(name, value)
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, json) = code_of(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(
            json,
            json!({"status": 401, "code": "unauthorized", "message": "Invalid token"}),
            "{value}"
        );
    }
    assert_no_event(&mut sub).await;
    // A well-formed token gets as far as the master (none here).
    let resp = c
        .post(app.url("/hook/ci"))
        .header("x-auth-token", "0123456789abcdef")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, json) = code_of(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["message"], "Token auth needs a Salt master");
}

// --- Resent bodies ----------------------------------------------------------------------------

fn github_headers(body: &[u8], delivery: Option<&str>) -> reqwest::header::HeaderMap {
    let mut h = crate::hook_security::github_headers(body, "s3cret");
    if let Some(id) = delivery {
        h.insert("x-github-delivery", id.parse().unwrap());
    }
    h
}

#[tokio::test]
async fn dedupe_body_fires_a_resent_body_once_whatever_its_delivery_id() {
    let rules = "- path: github\n  auth: none\n  dedupe: body\n  \
                 verify: {github: {secret_env: GH_SECRET}}\n\
                 - path: github-ids\n  auth: none\n  verify: {github: {secret_env: GH_SECRET}}\n";
    let app = TestApp::builder()
        .with_hooks(rules, &[("GH_SECRET", "s3cret")])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let body = br#"{"ref":"refs/heads/main","after":"1a2b"}"#;
    let send = |path: &'static str, body: &'static [u8], id: Option<&str>| {
        c.post(app.url(path))
            .headers(github_headers(body, id))
            .body(body.to_vec())
            .send()
    };
    let ok = json!({"success": true});
    let dup = json!({"success": true, "duplicate": true});
    let (s, j) = code_of(send("/hook/github", body, Some("id-1")).await.unwrap()).await;
    assert_eq!((s, j), (StatusCode::OK, ok.clone()));
    recv_event(&mut sub, "salt/netapi/hook/github").await;
    for id in [Some("id-2"), None, Some("id-1")] {
        let (s, j) = code_of(send("/hook/github", body, id).await.unwrap()).await;
        assert_eq!((s, j), (StatusCode::OK, dup.clone()), "{id:?}");
    }
    assert_no_event(&mut sub).await;
    let other = br#"{"ref":"refs/heads/main","after":"3c4d"}"#;
    let (s, _) = code_of(send("/hook/github", other, Some("id-2")).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    recv_event(&mut sub, "salt/netapi/hook/github").await;

    // The default (`dedupe: id`) stops retries only: a new id fires the same body again.
    for id in ["id-1", "id-9"] {
        let (s, j) = code_of(send("/hook/github-ids", body, Some(id)).await.unwrap()).await;
        assert_eq!((s, j), (StatusCode::OK, ok.clone()), "{id}");
        recv_event(&mut sub, "salt/netapi/hook/github-ids").await;
    }
}

// --- Body framing -----------------------------------------------------------------------------

#[tokio::test]
async fn conflicting_content_lengths_are_refused_before_any_route() {
    let app = TestApp::builder().spawn().await;
    let mut sub = app.subscribe();
    let request = "POST /hook/x HTTP/1.1\r\nHost: saltgate\r\nConnection: close\r\n\
                   Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}";
    let (code, head, _) = raw(app.addr, request).await;
    assert_eq!(code, 400, "{head}");
    assert_no_event(&mut sub).await;
}

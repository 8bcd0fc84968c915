//! The events page in a real headless Chromium, driven over the DevTools protocol: the live
//! stream and the deliveries table show a hook posted after the page opened, event data is
//! rendered as text, and a screenshot is kept under `target/test-artifacts/`.
//!
//! Needs Chromium (`apt-get install -y chromium`, or `SALTGATE_CHROMIUM=/path`); fails, never
//! skips, when it is missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestApp;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and one page, attached over the DevTools protocol.
struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Browser {
        let exe = std::env::var("SALTGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&exe).exists(),
            "Chromium not found at {exe}: install it (apt-get install -y chromium) or set SALTGATE_CHROMIUM"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("Chromium exited before opening the DevTools port");
        })
        .await
        .expect("Chromium did not open the DevTools port within 30 s");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut browser = Browser {
            _child: child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// One DevTools command; events in between are ignored.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 30 s"))
                .expect("DevTools socket closed")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`.
    async fn wait_true(&mut self, expression: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not true within 15 s: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().len() > 1000,
            "an empty screenshot: {}",
            path.display()
        );
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_shows_a_hook_live_in_chromium() {
    let app = TestApp::builder()
        .with_config(|c| c.saltgate.streams_disable_auth = true)
        .spawn()
        .await;
    let mut browser = Browser::launch().await;
    browser
        .call("Page.navigate", json!({"url": app.url("/ui")}))
        .await;
    browser
        .wait_true(
            "document.getElementById('status')?.textContent === 'live'",
            "the page's EventSource connects",
        )
        .await;

    let client = reqwest::Client::new();
    let ok = client
        .post(app.url("/hook/browser/deploy"))
        .header("content-type", "application/json")
        .body(r#"{"from": "browser-test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let refused = client
        .post(app.url("/hook/browser/broken"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    // Markup in a tag must be shown as text, never parsed.
    app.state
        .bus
        .fire(saltgate::salt::Event::new(
            "evil/<img src=x onerror=alert(1)>",
            rmpv::Value::Map(vec![]),
        ))
        .await
        .unwrap();

    browser
        .wait_true(
            r#"[...document.querySelectorAll('#events li')].some(li =>
                 li.dataset.tag === 'salt/netapi/hook/browser/deploy'
                 && li.querySelector('pre').textContent.includes('browser-test'))"#,
            "the hook appears in the live stream",
        )
        .await;
    browser
        .wait_true(
            r#"(() => { const rows = [...document.querySelectorAll('#deliveries tr')]
                 .map(r => [...r.children].map(td => td.textContent));
               return rows.some(r => r[1] === 'salt/netapi/hook/browser/deploy' && r[3] === '200' && r[4] === 'accepted')
                   && rows.some(r => r[1] === 'salt/netapi/hook/browser/broken' && r[3] === '400' && r[4] === 'bad_body'); })()"#,
            "both deliveries appear with their outcome",
        )
        .await;
    browser
        .wait_true(
            r#"[...document.querySelectorAll('#events .tag')].some(t => t.textContent.startsWith('evil/<img'))
               && document.querySelector('#events img') === null"#,
            "markup in a tag is rendered as text",
        )
        .await;
    browser.screenshot("ui-events.png").await;
}

/// The delivery log in Chromium: a spooled hook is listed, opening it shows the event as it
/// went onto the bus, and Redeliver puts it on the bus again (same delivery id); the chart
/// counts it. Screenshot: `target/test-artifacts/ui-delivery-log.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_opens_an_entry_and_redelivers_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().to_path_buf();
    let app = TestApp::builder()
        .with_config(move |c| {
            c.saltgate.streams_disable_auth = true;
            c.spool = Some(saltgate::spool::SpoolConfig::new(
                saltgate::spool::Storage::Dir(spool_dir),
            ));
        })
        .spawn()
        .await;
    let mut sub = app.subscribe();
    let resp = reqwest::Client::new()
        .post(app.url("/hook/browser/log"))
        .header("content-type", "application/json")
        .body(r#"{"from": "delivery-log-test"}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let first = crate::support::recv_event(&mut sub, "salt/netapi/hook/browser/log").await;
    let id = crate::support::data_json(&first)["_saltgate"]["id"].clone();

    let mut browser = Browser::launch().await;
    browser
        .call("Page.navigate", json!({"url": app.url("/ui")}))
        .await;
    browser
        .wait_true(
            r#"[...document.querySelectorAll('#log tr')].some(r =>
                 r.children[2].textContent === 'browser/log' && r.children[3].textContent === 'delivered')"#,
            "the hook is in the delivery log, delivered",
        )
        .await;
    browser
        .eval("document.querySelector('#log tr').click(); true")
        .await;
    browser
        .wait_true(
            r#"!document.getElementById('entry').hidden
               && document.getElementById('entry-event').textContent.includes('delivery-log-test')
               && document.getElementById('entry-event').textContent.includes('salt/netapi/hook/browser/log')"#,
            "the entry opens with its event",
        )
        .await;
    browser
        .eval("document.getElementById('redeliver').click(); true")
        .await;
    browser
        .wait_true(
            "document.getElementById('entry-status').textContent === 'redelivered'",
            "the page reports the redelivery",
        )
        .await;
    let again = crate::support::recv_event(&mut sub, "salt/netapi/hook/browser/log").await;
    assert_eq!(crate::support::data_json(&again)["_saltgate"]["id"], id);
    browser
        .wait_true(
            "Number(document.getElementById('chart').dataset.total) >= 1",
            "the chart counts the hook",
        )
        .await;
    browser.screenshot("ui-delivery-log.png").await;
}

//! `/events` against a real master: the same event read from saltgate and from the real
//! rest_cherrypy is byte-for-byte the same record; a hook posted to saltgate comes back through
//! the master's bus; a master restart is announced and the stream resumes. The formatted views
//! (`/ws?format_events`, `/formatted_events/<token>`) follow a real job and real grains, write a
//! job exactly as the real rest_tornado does, and every kind of stream ends after its token is
//! revoked by `POST /logout`.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::gate::{Gate, blocking};
use crate::support::{SaltApi, SaltSandbox, SaltSandboxBuilder, shared};

/// Blank-line separated records of an SSE body.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Sse {
    async fn open(url: String, token: Option<&str>) -> Self {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Self {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next record; `None` when nothing came in time.
    async fn record(&mut self, within: Duration) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let record = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return Some(record);
            }
            let chunk = tokio::time::timeout(within, self.body.next())
                .await
                .ok()?
                .expect("the stream ended")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The rest of the body once it ends; `None` when it did not end in time.
    async fn rest(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.body.next()).await.ok()? {
                Some(chunk) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return Some(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// The first record whose `tag:` line is `tag` (other bus traffic is skipped), without a
    /// leading `retry:` line.
    async fn until_tag(&mut self, tag: &str, within: Duration) -> String {
        self.try_until_tag(tag, within)
            .await
            .unwrap_or_else(|| panic!("no {tag} event within {within:?}"))
    }

    async fn try_until_tag(&mut self, tag: &str, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        let line = format!("tag: {tag}\n");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let record = self.record(left).await?;
            let record = record
                .strip_prefix("retry: 400\n")
                .map(str::to_owned)
                .unwrap_or(record);
            if record.starts_with(&line) {
                return Some(record);
            }
        }
    }
}

#[tokio::test]
async fn events_match_the_real_salt_api_and_carry_hooks_through_the_master() {
    let sandbox = blocking(|| {
        SaltSandbox::builder()
            .with_salt_api(SaltApi::RestCherrypy)
            .start()
    })
    .await;
    let sandbox = Arc::new(sandbox);
    let gate = Gate::start(&sandbox, "", &[], |_| {}).await;
    let token = gate
        .salt()
        .channel
        .mk_token("file", "saltdev", "saltdev")
        .await
        .unwrap()
        .token;
    // Unknown and malformed tokens are refused with a JSON body; the master is asked only for
    // well-formed ones.
    for bad in ["00ff00ff00ff", "not-hex"] {
        let resp = reqwest::Client::new()
            .get(gate.url("/events"))
            .header("x-auth-token", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap()["code"],
            "unauthorized"
        );
    }
    let mut ours = Sse::open(gate.url("/events"), Some(&token)).await;
    let mut theirs = Sse::open(
        format!("http://127.0.0.1:{}/events", sandbox.salt_api_port()),
        Some(&token),
    )
    .await;
    // salt-api subscribes lazily, when its worker first reads: probe until it sees events.
    let mut subscribed = false;
    for _ in 0..20 {
        let s = Arc::clone(&sandbox);
        blocking(move || s.send_event("saltgate/e2e/probe", &json!({}))).await;
        if theirs
            .try_until_tag("saltgate/e2e/probe", Duration::from_secs(1))
            .await
            .is_some()
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the real salt-api never streamed a probe event");

    let data = json!({"text": "é ü \" \\ \n", "n": [1, 2.5, true, null], "nested": {"k": {}}});
    let s = Arc::clone(&sandbox);
    blocking(move || s.send_event("saltgate/e2e/compare", &data)).await;
    let a = ours
        .until_tag("saltgate/e2e/compare", Duration::from_secs(20))
        .await;
    let b = theirs
        .until_tag("saltgate/e2e/compare", Duration::from_secs(20))
        .await;
    assert_eq!(a, b, "saltgate's record differs from salt-api's");

    let resp = reqwest::Client::new()
        .post(gate.url("/hook/e2e/streams"))
        .header("content-type", "application/json")
        .body(r#"{"ref": "main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let a = ours
        .until_tag("salt/netapi/hook/e2e/streams", Duration::from_secs(20))
        .await;
    let b = theirs
        .until_tag("salt/netapi/hook/e2e/streams", Duration::from_secs(20))
        .await;
    assert_eq!(a, b, "the hook event as the master relayed it");
    assert!(a.contains(r#""post": {"ref": "main"}"#), "{a}");
}

#[tokio::test]
async fn master_restart_is_announced_and_the_stream_resumes() {
    let sandbox = blocking(|| SaltSandbox::builder().start()).await;
    let sandbox = Arc::new(sandbox);
    let gate = Gate::start(&sandbox, "", &[], |c| {
        c.saltgate.streams_disable_auth = true;
        c.saltgate.stream_keepalive_secs = 1;
    })
    .await;
    let mut sse = Sse::open(gate.url("/events?tag=saltgate/"), None).await;
    let s = Arc::clone(&sandbox);
    blocking(move || s.send_event("saltgate/e2e/before", &json!({}))).await;
    sse.until_tag("saltgate/e2e/before", Duration::from_secs(20))
        .await;

    let s = Arc::clone(&sandbox);
    blocking(move || s.stop_master()).await;
    let notice = sse
        .until_tag("saltgate/stream/bus_disconnected", Duration::from_secs(30))
        .await;
    assert!(notice.contains(r#""tag": "saltgate/stream/bus_disconnected""#));
    let s = Arc::clone(&sandbox);
    blocking(move || s.start_master()).await;
    sse.until_tag("saltgate/stream/bus_connected", Duration::from_secs(60))
        .await;
    blocking(move || sandbox.send_event("saltgate/e2e/after", &json!({"back": true}))).await;
    let after = sse
        .until_tag("saltgate/e2e/after", Duration::from_secs(20))
        .await;
    assert!(after.contains(r#""back": true"#), "{after}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Logs in through saltgate; the session token.
async fn login(gate: &Gate) -> String {
    let resp = reqwest::Client::new()
        .post(gate.url("/login"))
        .json(&json!({"username": "saltdev", "password": "saltdev", "eauth": "file"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["return"][0]["token"].as_str().unwrap().to_owned()
}

/// A sandbox started from `builder`, a saltgate on it, and a session token.
async fn logged_in(builder: SaltSandboxBuilder) -> (SaltSandbox, Gate, String) {
    let sandbox = blocking(move || builder.start()).await;
    let gate = Gate::start(&sandbox, "", &[], |_| {}).await;
    let token = login(&gate).await;
    (sandbox, gate, token)
}

/// Opens a WebSocket (the token in `X-Auth-Token` too) and says `websocket client ready`.
async fn ws_ready(gate: &Gate, path: &str, token: &str) -> Ws {
    let mut req = format!("ws://{}{path}", gate.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-auth-token", token.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    ws
}

/// The next text frame; `None` when the socket ended or nothing came in time.
async fn ws_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The first frame of a formatted view that `pred` accepts, as JSON (rest_tornado's frames end
/// in a blank line, which is checked and removed).
async fn until_view(
    ws: &mut Ws,
    tornado: bool,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = ws_text(ws, left)
            .await
            .unwrap_or_else(|| panic!("no frame with {what} within 60 s"));
        if text == "server received message" {
            continue;
        }
        let json = if tornado {
            text.strip_suffix("\n\n")
                .unwrap_or_else(|| panic!("rest_tornado frames end in a blank line: {text:?}"))
        } else {
            text.as_str()
        };
        let view: Value = serde_json::from_str(json).unwrap();
        assert_ne!(
            view["tag"], "saltgate/stream/grains_failed",
            "grains.items was refused: {view}"
        );
        if pred(&view) {
            return view;
        }
    }
}

/// The jid of a `test.ping` job in a jobs view that is in `state`.
fn ping_job(view: &Value, state: &str) -> Option<String> {
    view["jobs"].as_object()?.iter().find_map(|(jid, job)| {
        (job["fun"] == "test.ping" && job["state"] == state).then(|| jid.clone())
    })
}

#[tokio::test]
async fn formatted_views_follow_a_real_job_and_the_minions_grains() {
    // Presence events every 2 s, so the rest_cherrypy view learns of the minion from them.
    let (sandbox, gate, token) = logged_in(
        SaltSandbox::builder().with_master_config("presence_events: true\nloop_interval: 2"),
    )
    .await;
    let mid = sandbox.minion_id();
    // rest_cherrypy's view learns of the minion from a presence event, lists it, and asks for
    // its grains (a `list` target of the arrivals) with the caller's token.
    let mut cherry = ws_ready(&gate, "/ws?format_events", &token).await;
    let has_grains = |m: &Value| m["grains"]["id"] == mid && m["id"] == mid;
    until_view(&mut cherry, false, "the minion listed", |v| {
        v["minions"] == json!([{"id": mid}])
    })
    .await;
    let view = until_view(&mut cherry, false, "the minion's grains", |v| {
        v["minions"]
            .as_array()
            .is_some_and(|l| l.len() == 1 && has_grains(&l[0]))
    })
    .await;
    assert!(view["minions"][0]["grains"]["os"].is_string(), "{view}");

    // rest_tornado's view runs grains.items on `*` with the caller's token when ready; the
    // returns come through the bus.
    let mut tornado = ws_ready(&gate, &format!("/formatted_events/{token}"), &token).await;
    let view = until_view(&mut tornado, true, "the minion's grains", |v| {
        has_grains(&v["minions"][mid])
    })
    .await;
    assert!(view["minions"][mid]["grains"]["os"].is_string(), "{view}");

    // `local test.ping` through saltgate: both views show the job running, then complete with
    // the minion's return.
    let url = gate.url("/");
    let ping = {
        let token = token.clone();
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("x-auth-token", token)
                .json(&json!({"client": "local", "tgt": mid, "fun": "test.ping"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        })
    };
    for (ws, is_tornado) in [(&mut cherry, false), (&mut tornado, true)] {
        let view = until_view(ws, is_tornado, "test.ping running", |v| {
            ping_job(v, "running").is_some()
        })
        .await;
        let jid = ping_job(&view, "running").unwrap();
        let job = &view["jobs"][&jid];
        assert_eq!(job["jid"], jid.as_str());
        assert_eq!(job["tgt"], mid);
        assert_eq!(job["tgt_type"], "glob");
        assert_eq!(job["minions"], json!({mid: {"success": false}}));
        assert!(job["start_time"].is_string(), "{job}");
        let view = until_view(ws, is_tornado, "test.ping complete", |v| {
            v["jobs"][&jid]["state"] == "complete"
        })
        .await;
        assert_eq!(
            view["jobs"][&jid]["minions"],
            json!({mid: {"success": true, "return": true, "retcode": 0}})
        );
    }
    assert_eq!(ping.await.unwrap(), json!({"return": [{mid: true}]}));
}

#[tokio::test]
async fn streams_end_after_their_token_is_revoked() {
    let sandbox = blocking(shared).await;
    let gate = Gate::start(sandbox, "", &[], |c| c.saltgate.stream_keepalive_secs = 1).await;
    let token = login(&gate).await;
    let mut sse = Sse::open(gate.url("/events"), Some(&token)).await;
    let mut ws = ws_ready(&gate, "/ws", &token).await;
    assert_eq!(
        ws_text(&mut ws, Duration::from_secs(10)).await.as_deref(),
        Some("server received message")
    );
    let formatted = ws_ready(&gate, &format!("/formatted_events/{token}"), &token).await;
    // Each socket is read from now on (a client that stops reading fails on its queued pongs
    // once the server has gone): every text frame until the close, or a timeout.
    let collect = |mut ws: Ws| {
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut seen = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match ws_text(&mut ws, left).await {
                    Some(text) => seen.push(text),
                    None => break,
                }
            }
            (tokio::time::Instant::now() < deadline, seen)
        })
    };
    let sockets = [
        ("/ws", collect(ws), "data: ", "\n\n"),
        ("/formatted_events", collect(formatted), "", "\n\n"),
    ];

    // Logged out through another saltgate: this one learns of it from the master (its token
    // cache keeps an answer for 10 s at most), not from its own logout.
    let other = Gate::start(sandbox, "", &[], |_| {}).await;
    let resp = reqwest::Client::new()
        .post(other.url("/logout"))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The SSE body carries the notice, then ends.
    let body = sse
        .rest(Duration::from_secs(30))
        .await
        .expect("/events did not end after logout");
    assert!(
        body.ends_with("\"tag\": \"saltgate/stream/token_invalid\"}\n\n"),
        "the notice is the last record: {body}"
    );
    // Each socket gets the notice in its framing, then closes.
    for (path, task, prefix, suffix) in sockets {
        let (closed, seen) = task.await.unwrap();
        assert!(closed, "{path} did not close after logout");
        let last = seen.last().map(String::as_str).unwrap_or_default();
        let json = last
            .strip_prefix(prefix)
            .and_then(|t| t.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("{path}: unexpected last frame {last:?}"));
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["tag"], "saltgate/stream/token_invalid", "{path}");
    }
}

/// The JSON text of job `jid` inside a jobs frame, as written (key order included).
fn job_text<'a>(frame: &'a str, jid: &str) -> Option<&'a str> {
    let start = frame.find(&format!("\"{jid}\": {{"))? + jid.len() + 4;
    let (mut depth, mut in_str, mut escaped) = (0_usize, false, false);
    for (i, c) in frame[start..].char_indices() {
        match (in_str, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') | (false, _, '"') => in_str = !in_str,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(&frame[start..=start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text of job `jid` once complete in the next frames of `ws`; `None` if not seen in time.
async fn complete_job(ws: &mut Ws, jid: &str, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws_text(ws, left).await?;
        if let Some(job) = job_text(&frame, jid) {
            if job.ends_with(r#""state": "complete"}"#) {
                return Some(job.to_owned());
            }
        }
    }
}

#[tokio::test]
async fn formatted_events_match_the_real_rest_tornado() {
    let (sandbox, gate, token) = logged_in(
        SaltSandbox::builder()
            .with_salt_api(SaltApi::RestTornado)
            .with_master_config("rest_tornado:\n  websockets: true"),
    )
    .await;
    let mid = sandbox.minion_id();
    let (mut theirs, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/formatted_events/{token}",
        sandbox.salt_api_port()
    ))
    .await
    .unwrap();
    theirs
        .send(Message::text("websocket client ready"))
        .await
        .unwrap();
    let mut ours = ws_ready(&gate, &format!("/formatted_events/{token}"), &token).await;
    // rest_tornado's listener hands an event only to a reader waiting at that moment, so a job
    // it saw only in part is run again.
    for _ in 0..5 {
        let resp: Value = reqwest::Client::new()
            .post(gate.url("/"))
            .header("x-auth-token", &token)
            .json(&json!({"client": "local_async", "tgt": mid, "fun": "test.ping"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jid = resp["return"][0]["jid"].as_str().unwrap().to_owned();
        let Some(expected) = complete_job(&mut theirs, &jid, Duration::from_secs(20)).await else {
            continue;
        };
        if !expected.starts_with(r#"{"jid": "#) {
            // It missed the job's `new` event and shows the bare job.
            continue;
        }
        let got = complete_job(&mut ours, &jid, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("job {jid} never complete in saltgate's view"));
        assert_eq!(got, expected, "saltgate's job differs from rest_tornado's");
        assert!(
            expected.contains(r#""return": true, "retcode": 0"#),
            "{expected}"
        );
        return;
    }
    panic!("rest_tornado never showed a complete test.ping job");
}

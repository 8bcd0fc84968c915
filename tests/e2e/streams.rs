//! `/events` against a real master: the same event read from saltgate and from the real
//! rest_cherrypy is byte-for-byte the same record; a hook posted to saltgate comes back through
//! the master's bus; a master restart is announced and the stream resumes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::gate::{Gate, blocking};
use crate::support::{SaltApi, SaltSandbox};

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

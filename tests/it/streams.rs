//! `/events`, `/ws`, `/all_events`, `/metrics` and the events page, on the built-in bus.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use saltgate::salt::Event;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestApp;

/// The built-in bus has no master to check tokens: streams are opened explicitly.
fn open_streams() -> crate::support::Builder {
    TestApp::builder().with_config(|c| c.saltgate.streams_disable_auth = true)
}

/// A `/events` reader that splits the body into blank-line separated records.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, path: &str) -> (reqwest::header::HeaderMap, Self) {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let headers = resp.headers().clone();
        let body = resp.bytes_stream().boxed();
        (
            headers,
            Self {
                body,
                buf: String::new(),
            },
        )
    }

    /// The next record, or `None` when the body ended.
    async fn record(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let record = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return Some(record);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("no SSE data within 5 s")?
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next record that is an event: `(tag, parsed data line)`.
    async fn event(&mut self) -> (String, Value) {
        loop {
            let record = self.record().await.expect("stream ended");
            if let Some(parsed) = parse_event(&record) {
                return parsed;
            }
        }
    }
}

fn parse_event(record: &str) -> Option<(String, Value)> {
    let mut tag = None;
    let mut data = None;
    for line in record.lines() {
        if let Some(t) = line.strip_prefix("tag: ") {
            tag = Some(t.to_owned());
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(d).unwrap());
        }
    }
    Some((tag?, data?))
}

async fn fire(app: &TestApp, tag: &str) {
    app.state
        .bus
        .fire(Event::new(tag, rmpv::Value::Map(vec![])))
        .await
        .unwrap();
}

#[tokio::test]
async fn sse_streams_a_fired_hook_in_salt_api_framing() {
    let app = open_streams().spawn().await;
    let (headers, mut sse) = Sse::open(&app, "/events").await;
    assert_eq!(headers["content-type"], "text/event-stream;charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let resp = reqwest::Client::new()
        .post(app.url("/hook/ci/build"))
        .header("content-type", "application/json")
        .body(r#"{"ok": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let record = sse.record().await.unwrap();
    // salt-api's first chunk, `retry: 400\n`, has no blank line: it opens the first record.
    let mut lines = record.lines();
    assert_eq!(lines.next(), Some("retry: 400"));
    assert_eq!(lines.next(), Some("tag: salt/netapi/hook/ci/build"));
    let data_line = lines.next().unwrap();
    assert!(
        data_line.starts_with(r#"data: {"data": {"_stamp": ""#),
        "{data_line}"
    );
    assert!(
        data_line.ends_with(r#", "tag": "salt/netapi/hook/ci/build"}"#),
        "{data_line}"
    );
    let (_, data) = parse_event(&record).unwrap();
    assert_eq!(data["data"]["post"], json!({"ok": true}));
    assert_eq!(data["tag"], "salt/netapi/hook/ci/build");
}

#[tokio::test]
async fn sse_tag_filter_keeps_matching_events_only() {
    let app = open_streams().spawn().await;
    let (_, mut sse) = Sse::open(&app, "/events?tag=keep/").await;
    fire(&app, "drop/1").await;
    fire(&app, "keep/1").await;
    let (tag, _) = sse.event().await;
    assert_eq!(tag, "keep/1");
}

/// The server runs on this test's single-threaded runtime, so a burst fired without yielding
/// overflows the tiny queue before the stream can read: the subscriber must be told how many
/// events it missed, and the stream must go on.
#[tokio::test]
async fn lagging_subscriber_is_told_what_it_missed_and_continues() {
    let app = open_streams()
        .with_config(|c| c.saltgate.event_queue = 4)
        .spawn()
        .await;
    let (_, mut sse) = Sse::open(&app, "/events").await;
    const BURST: u64 = 100;
    for i in 0..BURST {
        fire(&app, &format!("burst/{i}")).await;
    }
    fire(&app, "after/burst").await;
    let (mut received, mut missed, mut notices) = (0_u64, 0_u64, 0);
    loop {
        let (tag, data) = sse.event().await;
        match tag.as_str() {
            "saltgate/stream/lagged" => {
                notices += 1;
                missed += data["data"]["missed"].as_u64().unwrap();
            }
            "after/burst" => break,
            t => {
                assert!(t.starts_with("burst/"), "{t}");
                received += 1;
            }
        }
    }
    assert!(notices >= 1, "no lag notice");
    assert_eq!(
        received + missed,
        BURST,
        "every event is delivered or counted"
    );
    // The stream continues after the notice.
    fire(&app, "later").await;
    assert_eq!(sse.event().await.0, "later");
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("saltgate_stream_events_missed_total {missed}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_stream_gets_keep_alive_comments() {
    let app = open_streams()
        .with_config(|c| c.saltgate.stream_keepalive_secs = 1)
        .spawn()
        .await;
    let (_, mut sse) = Sse::open(&app, "/events").await;
    let first = sse.record().await.unwrap();
    assert_eq!(first, "retry: 400\n: keep-alive");
    assert_eq!(sse.record().await.unwrap(), ": keep-alive");
}

#[tokio::test]
async fn streams_refuse_without_credentials_with_a_json_body() {
    // Default config on the built-in bus: no master to check tokens, streams not opened.
    let app = TestApp::builder().spawn().await;
    let client = reqwest::Client::new();
    for path in ["/events", "/metrics", "/ui/deliveries"] {
        let resp = client
            .get(app.url(path))
            .header("x-auth-token", "abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("streams_disable_auth"),
            "{body}"
        );
    }
    let resp = client.get(app.url("/events")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": 401, "code": "unauthorized",
               "message": "No permission -- see authorization schemes"})
    );
    let resp = client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("id=\"login\""));
}

#[tokio::test]
async fn tokens_in_the_query_string_are_refused() {
    let app = open_streams().spawn().await;
    for q in ["token=abc", "salt_token=abc", "colour=red"] {
        let resp = reqwest::get(app.url(&format!("/events?{q}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_query", "{q}");
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let app = open_streams().spawn().await;
    let (_, mut sse) = Sse::open(&app, "/events").await;
    fire(&app, "before/shutdown").await;
    assert_eq!(sse.event().await.0, "before/shutdown");
    // The drain would take 30 s if the stream held the connection open.
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown hung on an open stream");
    assert_eq!(sse.record().await, None, "the body ends cleanly");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `path` and says `websocket client ready`. rest_cherrypy's `/ws` acknowledges it;
/// rest_tornado's routes answer nothing, so the bus is watched until the stream subscribed.
async fn ws_connect(app: &TestApp, path: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", app.addr))
        .await
        .unwrap();
    let before = app.state.bus.status().subscribers;
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    if path.starts_with("/ws") {
        assert_eq!(
            next_text(&mut ws).await,
            "server received message",
            "salt-api's acknowledgement"
        );
    } else {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while app.state.bus.status().subscribers <= before {
            assert!(tokio::time::Instant::now() < deadline, "never subscribed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    ws
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("socket closed")
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn websocket_streams_events_in_each_api_framing() {
    let app = open_streams().spawn().await;
    let mut ws = ws_connect(&app, "/ws").await;
    fire(&app, "ws/one").await;
    assert_eq!(
        next_text(&mut ws).await,
        "data: {\"data\": {}, \"tag\": \"ws/one\"}\n\n"
    );
    let mut tornado = ws_connect(&app, "/all_events/0123abcd").await;
    fire(&app, "ws/two").await;
    assert_eq!(
        next_text(&mut tornado).await,
        "{\"data\": {}, \"tag\": \"ws/two\"}"
    );
    // rest_tornado answers no client message.
    tornado.send(Message::text("hello")).await.unwrap();
    fire(&app, "ws/three").await;
    assert_eq!(
        next_text(&mut tornado).await,
        "{\"data\": {}, \"tag\": \"ws/three\"}"
    );
    // Shutdown closes the socket too.
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown hung on an open socket");
}

#[tokio::test]
async fn websocket_refuses_foreign_origins() {
    let app = open_streams().spawn().await;
    let resp = reqwest::Client::new()
        .get(app.url("/ws"))
        .header("origin", "https://evil.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "origin_not_allowed"
    );
}

/// An origin listed in `cors_origin` (or `*`) may open a stream whose token is in the path;
/// never one that would rest on the session cookie.
#[tokio::test]
async fn websocket_accepts_listed_origins_with_the_token_in_the_path() {
    let upgrade = |app: &TestApp, path: &str, origin: &str| {
        reqwest::Client::new()
            .get(app.url(path))
            .header("origin", origin.to_owned())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    let code = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };
    // Streams open to anyone: a listed origin is as good as our own.
    let open = open_streams()
        .with_config(|c| {
            c.api.cors_origin = Some(saltgate::config::CorsOrigin::One(
                "https://ui.example".into(),
            ))
        })
        .spawn()
        .await;
    let resp = upgrade(&open, "/ws", "https://ui.example").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let resp = upgrade(&open, "/ws", "https://other.example")
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "origin_not_allowed".into())
    );
    // Streams that need a token: the path's, never the cookie's, from a listed origin.
    let authed = TestApp::builder()
        .with_config(|c| c.api.cors_origin = Some(saltgate::config::CorsOrigin::One("*".into())))
        .spawn()
        .await;
    let resp = upgrade(&authed, "/ws", "https://any.example")
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "origin_not_allowed".into())
    );
    for path in [
        "/ws/0123abcd",
        "/all_events/0123abcd",
        "/formatted_events/0123abcd",
    ] {
        let resp = upgrade(&authed, path, "https://any.example").await.unwrap();
        let (status, code) = code(resp).await;
        assert_ne!(code, "origin_not_allowed", "{path}: {status}");
        assert_ne!(status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_hooks_requests_and_bus_state() {
    let app = TestApp::builder()
        .with_config(|c| c.api.stats_disable_auth = true)
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let ok = client.post(app.url("/hook/a")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let bad = client
        .post(app.url("/hook/a"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let _ = client.get(app.url("/nowhere")).send().await.unwrap();
    let resp = client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    for line in [
        "saltgate_hooks_total{outcome=\"accepted\"} 1",
        "saltgate_hooks_total{outcome=\"bad_body\"} 1",
        "saltgate_http_requests_total{route=\"/hook/{*path}\",method=\"POST\",status=\"200\"} 1",
        "saltgate_http_requests_total{route=\"/hook/{*path}\",method=\"POST\",status=\"400\"} 1",
        "saltgate_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "saltgate_http_request_duration_seconds_count{route=\"/hook/{*path}\"} 2",
        "saltgate_bus_connected{kind=\"builtin\"} 1",
        "saltgate_bus_events_fired_total 1",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[tokio::test]
async fn events_page_lists_recent_deliveries_without_secrets() {
    let app = open_streams().spawn().await;
    let client = reqwest::Client::new();
    let page = client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("data-events=\"/events\""), "{html}");
    client
        .post(app.url("/hook/deploy"))
        .header("x-auth-token", "do-not-show")
        .send()
        .await
        .unwrap();
    client
        .post(app.url("/hook/deploy"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    let resp = client.get(app.url("/ui/deliveries")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(!text.contains("do-not-show"));
    let body: Value = serde_json::from_str(&text).unwrap();
    let list = body["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["outcome"], "bad_body");
    assert_eq!(list[0]["status"], 400);
    assert_eq!(list[1]["outcome"], "accepted");
    assert_eq!(list[1]["tag"], "salt/netapi/hook/deploy");
    assert_eq!(list[1]["client_ip"], "127.0.0.1");
    for asset in ["/ui/app.js", "/ui/login.js", "/ui/style.css"] {
        let r = client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn streams_and_page_live_under_root_prefix() {
    let app = open_streams()
        .with_config(|c| {
            c.api.root_prefix = "/api".into();
            c.saltgate.ui_path = "/console".into();
        })
        .spawn()
        .await;
    let (_, mut sse) = Sse::open(&app, "/api/events").await;
    fire(&app, "prefixed").await;
    assert_eq!(sse.event().await.0, "prefixed");
    let html = reqwest::get(app.url("/api/console"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"data-events="/api/events""#), "{html}");
    assert!(html.contains(r#"src="/api/console/app.js""#), "{html}");
    let js = reqwest::get(app.url("/api/console/app.js")).await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
}

/// Fires `tag` with `data` given as JSON.
async fn fire_json(app: &TestApp, tag: &str, data: Value) {
    let data = rmpv::ext::to_value(data).unwrap();
    app.state.bus.fire(Event::new(tag, data)).await.unwrap();
}

/// The next frame of a formatted view, as JSON; the dialect's ending is checked and removed.
async fn next_view(ws: &mut Ws, tornado: bool) -> Value {
    let text = next_text(ws).await;
    let json = if tornado {
        text.strip_suffix("\n\n")
            .unwrap_or_else(|| panic!("rest_tornado frames end in a blank line: {text:?}"))
    } else {
        assert!(!text.ends_with('\n'), "{text:?}");
        text.as_str()
    };
    serde_json::from_str(json).unwrap()
}

const JID: &str = "20260105093012345678";

fn new_job(fun: &str) -> Value {
    json!({"jid": JID, "tgt_type": "glob", "tgt": "*", "user": "saltdev", "fun": fun,
           "arg": [], "minions": ["web1"], "missing": [],
           "_stamp": "2026-01-05T09:30:12.351022"})
}

fn ret(fun: &str, value: Value) -> Value {
    json!({"cmd": "_return", "id": "web1", "success": true, "return": value, "retcode": 0,
           "jid": JID, "fun": fun, "fun_args": [], "user": "saltdev",
           "_stamp": "2026-01-05T09:30:12.512345"})
}

#[tokio::test]
async fn formatted_views_follow_a_job_and_the_minions_in_each_dialect() {
    let app = open_streams().spawn().await;
    let mut cherry = ws_connect(&app, "/ws?format_events").await;
    let mut tornado = ws_connect(&app, "/formatted_events/0123abcd").await;
    // rest_tornado runs grains.items on every minion when the client is ready; on open streams
    // there is no caller token to run it with, and the client is told so.
    let notice = next_view(&mut tornado, true).await;
    assert_eq!(notice["tag"], "saltgate/stream/grains_failed");
    assert_eq!(notice["data"]["tgt"], "*");
    assert_eq!(notice["data"]["reason"], "no_token");

    fire_json(&app, &format!("salt/job/{JID}/new"), new_job("test.ping")).await;
    let running = json!({"jobs": {JID: {"jid": JID, "start_time": "2026-01-05T09:30:12.351022",
        "minions": {"web1": {"success": false}}, "fun": "test.ping", "tgt": "*",
        "tgt_type": "glob", "state": "running"}}});
    assert_eq!(next_view(&mut cherry, false).await, running);
    assert_eq!(next_view(&mut tornado, true).await, running);

    fire_json(
        &app,
        &format!("salt/job/{JID}/ret/web1"),
        ret("test.ping", json!(true)),
    )
    .await;
    for (ws, tornado) in [(&mut cherry, false), (&mut tornado, true)] {
        let view = next_view(ws, tornado).await;
        assert_eq!(view["jobs"][JID]["state"], "complete");
        assert_eq!(
            view["jobs"][JID]["minions"]["web1"],
            json!({"success": true, "return": true, "retcode": 0})
        );
    }

    // Events Salt would crash on are skipped; the views go on.
    fire_json(&app, "salt/job/error", json!({"message": "no"})).await;
    fire_json(
        &app,
        &format!("salt/job/{JID}/ret/web1"),
        json!({"id": "web1"}),
    )
    .await;

    let grains = json!({"id": "web1", "os": "Debian", "num_cpus": 2});
    fire_json(
        &app,
        &format!("salt/job/{JID}/ret/web1"),
        ret("grains.items", grains.clone()),
    )
    .await;
    let view = next_view(&mut cherry, false).await;
    assert!(view.get("jobs").is_some(), "{view}");
    assert_eq!(
        next_view(&mut cherry, false).await,
        json!({"minions": [{"grains": grains, "id": "web1"}]})
    );
    let view = next_view(&mut tornado, true).await;
    assert!(view.get("jobs").is_some(), "{view}");
    assert_eq!(
        next_view(&mut tornado, true).await,
        json!({"minions": {"web1": {"grains": grains, "id": "web1"}}})
    );

    fire_json(
        &app,
        "salt/key",
        json!({"id": "web1", "act": "delete", "result": true, "_stamp": "x"}),
    )
    .await;
    assert_eq!(next_view(&mut cherry, false).await, json!({"minions": []}));
    assert_eq!(next_view(&mut tornado, true).await, json!({"minions": {}}));

    // A minion that arrives in a presence event is added at once; its grains are asked for.
    fire_json(
        &app,
        "salt/presence/present",
        json!({"present": ["db1"], "_stamp": "x"}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_view(&mut cherry, false).await);
    }
    assert!(
        seen.contains(&json!({"minions": [{"id": "db1"}]})),
        "{seen:?}"
    );
    let notice = seen
        .iter()
        .find(|v| v["tag"] == "saltgate/stream/grains_failed")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(notice["data"]["tgt"], json!(["db1"]));
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown hung on a formatted view");
}

#[tokio::test]
async fn formatted_views_tell_of_lag_and_fold_bursts() {
    let app = open_streams()
        .with_config(|c| c.saltgate.event_queue = 4)
        .spawn()
        .await;
    let mut ws = ws_connect(&app, "/ws?format_events").await;
    for i in 0..50 {
        fire_json(
            &app,
            "salt/key",
            json!({"id": format!("m{i}"), "act": "accept", "result": true}),
        )
        .await;
    }
    fire_json(&app, "salt/key", json!({"id": "last", "act": "accept"})).await;
    let mut lagged = false;
    let mut frames = 0;
    loop {
        let view = next_view(&mut ws, false).await;
        frames += 1;
        if view["tag"] == "saltgate/stream/lagged" {
            assert!(view["data"]["missed"].as_u64().unwrap() > 0);
            lagged = true;
        } else if view["minions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "last")
        {
            break;
        }
    }
    assert!(lagged, "no lag notice in the formatted view");
    assert!(frames < 51, "one frame per event: {frames}");
}

#[tokio::test]
async fn format_events_is_read_on_rest_cherrypy_routes_only() {
    let app = open_streams().spawn().await;
    for path in [
        "/all_events/0123abcd?format_events",
        "/formatted_events/0123abcd?colour=red",
    ] {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_query");
    }
    // The flag and a tag filter together.
    let mut ws = ws_connect(&app, "/ws/0123abcd?format_events&tag=salt/key").await;
    fire_json(&app, &format!("salt/job/{JID}/new"), new_job("test.ping")).await;
    fire_json(&app, "salt/key", json!({"id": "m1", "act": "accept"})).await;
    assert_eq!(
        next_view(&mut ws, false).await,
        json!({"minions": [{"id": "m1"}]})
    );
    // Without streams_disable_auth the built-in bus cannot check the token.
    let app = TestApp::builder().spawn().await;
    let resp = reqwest::get(app.url("/formatted_events/0123abcd"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

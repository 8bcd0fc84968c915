//! The Salt wire layer against a real master: auth, local, runner, wheel, the bus, outages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;
use saltgate::salt::bus::ipc::{IpcBus, IpcBusConfig};
use saltgate::salt::channel::{Auth, MasterChannel, PublishRequest, Timeouts};
use saltgate::salt::event::{map_get, text_like};
use saltgate::salt::wire::payload::to_json;
use saltgate::salt::{EventBus, SaltError};

use crate::gate::{Gate, blocking};
use crate::support::salt::{self, MINION_ID, SaltSandbox};

fn channel(sandbox: &SaltSandbox) -> MasterChannel {
    let timeouts = Timeouts {
        auth: Duration::from_secs(5),
        publish: Duration::from_secs(5),
        runner: Duration::from_secs(5),
        wheel: Duration::from_secs(10),
        connect: Duration::from_secs(1),
    };
    MasterChannel::new(
        format!("tcp://127.0.0.1:{}", sandbox.ret_port()),
        4,
        timeouts,
    )
}

async fn token(ch: &MasterChannel, user: &str) -> String {
    ch.mk_token("file", user, user).await.unwrap().token
}

#[tokio::test]
async fn mk_token_and_get_token() {
    let sandbox = blocking(salt::shared).await;
    let ch = channel(sandbox);
    let t = ch.mk_token("file", "saltdev", "saltdev").await.unwrap();
    assert_eq!(t.name, "saltdev");
    assert_eq!(t.eauth, "file");
    assert_eq!(t.token.len(), 64, "Salt tokens are 64 hex characters");
    assert!(t.expire > t.start);
    let err = ch.mk_token("file", "saltdev", "wrong").await.unwrap_err();
    assert!(matches!(err, SaltError::AuthRefused(_)), "{err:?}");
    let back = ch.get_token(&t.token).await.unwrap().unwrap();
    assert_eq!(back, t);
    assert_eq!(ch.get_token("0000").await.unwrap(), None);
    ch.ping().await.unwrap();
}

#[tokio::test]
async fn local_runner_and_wheel() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let salt = gate.salt();
    let auth = Auth::Token(token(&salt.channel, "saltdev").await);

    let ret = salt
        .local_sync(PublishRequest::new(MINION_ID, "test.ping"), &auth, None)
        .await
        .unwrap();
    let returns: serde_json::Map<String, serde_json::Value> = ret
        .returns
        .iter()
        .map(|(m, ev)| (m.clone(), to_json(ev.get("return").unwrap())))
        .collect();
    assert_eq!(
        serde_json::Value::Object(returns),
        serde_json::json!({MINION_ID: true})
    );

    let mut sub = salt.bus.subscribe();
    let published = salt
        .local_async(PublishRequest::new(MINION_ID, "test.ping"), &auth)
        .await
        .unwrap();
    let jid = published.jid.clone().unwrap();
    assert_eq!(jid.len(), 20);
    assert_eq!(published.minions, vec![MINION_ID.to_owned()]);
    let ret_tag = format!("salt/job/{jid}/ret/{MINION_ID}");
    let ev = sub
        .wait_for(Duration::from_secs(15), |e| e.tag == ret_tag)
        .await
        .unwrap();
    assert_eq!(ev.get("return"), Some(&Value::Boolean(true)));

    let run = salt
        .runner_sync(
            "jobs.list_jobs",
            Value::Map(vec![]),
            &auth,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(run.get("success"), Some(&Value::Boolean(true)));
    assert!(
        map_get(run.get("return").unwrap(), &jid).is_some(),
        "jobs.list_jobs lists {jid}"
    );

    let wheel = salt.wheel("key.list_all", vec![], &auth).await.unwrap();
    let minions = map_get(map_get(&wheel, "return").unwrap(), "minions").unwrap();
    let minions: Vec<String> = minions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(text_like)
        .collect();
    assert_eq!(minions, vec![MINION_ID.to_owned()]);
}

#[tokio::test]
async fn limited_user_gets_a_typed_refusal() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let salt = gate.salt();
    let auth = Auth::Token(token(&salt.channel, "limited").await);
    let ok = salt
        .local_sync(PublishRequest::new(MINION_ID, "test.ping"), &auth, None)
        .await;
    assert_eq!(ok.unwrap().returns.len(), 1);
    let err = salt
        .local_sync(PublishRequest::new(MINION_ID, "test.arg"), &auth, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SaltError::NotAuthorized(_)), "{err:?}");
    let err = salt.wheel("key.list_all", vec![], &auth).await.unwrap_err();
    assert!(
        matches!(err, SaltError::AuthRefused(_) | SaltError::NotAuthorized(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn hook_reaches_the_real_reactor() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let id = format!("wire-{}", std::process::id());
    let resp = reqwest::Client::new()
        .post(gate.url("/hook/e2e/wire"))
        .header("content-type", "application/json")
        .header("x-auth-token", "never-on-the-bus")
        .body(serde_json::json!({"id": id, "n": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let written = blocking(move || sandbox.wait_reactor_file(&id, Duration::from_secs(60))).await;
    assert_eq!(written["post"]["n"], 1);
    assert_eq!(written["headers"]["Remote-Addr"], "127.0.0.1");
    assert!(written["headers"].get("X-Auth-Token").is_none());
    assert!(written["_stamp"].is_string());
    // Every supported line (3006.30, 3007.17, 3008.5) wants length-prefixed pushes.
    assert_eq!(gate.state.bus.status().pull_framing, Some("prefixed"));
}

#[tokio::test]
async fn local_waits_for_a_minion_still_running_its_job() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let salt = gate.salt();
    let auth = Auth::Token(token(&salt.channel, "saltdev").await);
    let mut req = PublishRequest::new(MINION_ID, "test.sleep");
    req.arg = vec![Value::from(6)];
    let started = Instant::now();
    // Timeout 2 s < the 6 s job: saltutil.find_job sees it running and the wait goes on.
    let ret = salt
        .local_sync(req, &auth, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(ret.returns.len(), 1, "missing: {:?}", ret.missing);
    assert_eq!(
        ret.returns[MINION_ID].get("return"),
        Some(&Value::Boolean(true))
    );
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test]
async fn a_thousand_hooks_on_32_connections_all_reach_the_master_bus() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    // An independent subscriber on the master's publisher counts what the master republished.
    let (publisher, puller) = gate.state.config.master.bus_endpoints();
    let watcher = IpcBus::start(IpcBusConfig::new(publisher, puller));
    watcher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let mut sub = watcher.subscribe();
    let run = std::process::id();
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, next) = (client.clone(), gate.url("/hook/load/wire"), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 1000 {
                    return errors;
                }
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"run": {run}, "i": {i}}}"#))
                    .send()
                    .await;
                if !matches!(resp, Ok(ref r) if r.status() == 200) {
                    errors += 1;
                }
            }
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    let sent_in = started.elapsed();
    assert_eq!(errors, 0);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 1000 {
        let ev = sub
            .wait_for(Duration::from_secs(20), |e| {
                e.tag == "salt/netapi/hook/load/wire"
            })
            .await
            .unwrap_or_else(|e| panic!("{} of 1000 hooks on the bus: {e}", seen.len()));
        let post = to_json(ev.get("post").unwrap());
        if post["run"] == run {
            seen.insert(post["i"].as_u64().unwrap());
        }
    }
    eprintln!("1000 hooks on 32 connections: {sent_in:?}, all 1000 on the master bus");
}

#[tokio::test]
async fn master_outage_fails_fast_and_recovers_without_restart() {
    let sandbox = Arc::new(blocking(|| SaltSandbox::builder().start()).await);
    // With the spool off (`saltgate.spool.enabled: false`): a hook the bus cannot take is
    // refused. With it on, it is accepted and delivered later (tests/e2e/spool.rs).
    let gate = Gate::start(&sandbox, "", &[], |c| c.spool = None).await;
    let salt = gate.salt().clone();
    let auth = Auth::Token(token(&salt.channel, "saltdev").await);
    let s = Arc::clone(&sandbox);
    blocking(move || s.stop_master()).await;

    // Requests fail with a typed error within their timeout; nothing hangs.
    let started = Instant::now();
    let err = salt.channel.ping().await.unwrap_err();
    assert!(
        matches!(err, SaltError::Unavailable(_) | SaltError::Timeout(_)),
        "{err:?}"
    );
    let err = salt
        .local_sync(PublishRequest::new(MINION_ID, "test.ping"), &auth, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SaltError::Unavailable(_) | SaltError::Timeout(_)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Spool off: a hook while the master is down is refused with 503 and a body, not accepted
    // and lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.state.bus.status().connected {
        assert!(
            Instant::now() < deadline,
            "bus never noticed the master stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = reqwest::Client::new()
        .post(gate.url("/hook/e2e/down"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "salt_unavailable");

    let s = Arc::clone(&sandbox);
    blocking(move || s.start_master()).await;
    gate.wait_bus().await;
    let id = format!("after-restart-{}", std::process::id());
    let mut delivered = false;
    for _ in 0..50 {
        let resp = reqwest::Client::new()
            .post(gate.url("/hook/e2e/restart"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"id": id}).to_string())
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        delivered,
        "hooks never accepted again after the master restarted"
    );
    let (id2, s) = (id.clone(), Arc::clone(&sandbox));
    let written = blocking(move || s.wait_reactor_file(&id2, Duration::from_secs(60))).await;
    assert_eq!(written["post"]["id"], id);
    // The request channel is back too.
    let auth = Auth::Token(token(&salt.channel, "saltdev").await);
    let ret = salt
        .local_sync(PublishRequest::new(MINION_ID, "test.ping"), &auth, None)
        .await;
    assert_eq!(ret.unwrap().returns.len(), 1);
}

#[tokio::test]
async fn credentials_in_master_error_events_never_reach_subscribers() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let salt = gate.salt();
    let mut sub = salt.bus.subscribe();
    let auth = Auth::Eauth {
        eauth: "file".into(),
        username: "limited".into(),
        password: "wrong-password-e2e".into(),
    };
    let mut req = PublishRequest::new(MINION_ID, "test.arg");
    req.jid = saltgate::salt::client::new_jid();
    let err = salt.channel.publish(&req, &auth).await.unwrap_err();
    assert!(matches!(err, SaltError::AuthRefused(_)), "{err:?}");
    // The master echoes the whole load, password included, on salt/job/<jid>/error.
    let tag = format!("salt/job/{}/error", req.jid);
    let ev = sub
        .wait_for(Duration::from_secs(15), |e| e.tag == tag)
        .await
        .unwrap();
    let text = to_json(&ev.data).to_string();
    assert!(
        !text.contains("wrong-password-e2e"),
        "password reached a subscriber: {text}"
    );
    assert!(text.contains("redacted by saltgate"), "{text}");
}

#[tokio::test]
async fn tcp_ipc_mode_bus_delivers_hooks_to_the_reactor() {
    let sandbox = Arc::new(
        blocking(|| {
            SaltSandbox::builder()
                .with_master_config("ipc_mode: tcp\n")
                .start()
        })
        .await,
    );
    let gate = Gate::start(&sandbox, "", &[], |_| {}).await;
    let (publisher, _) = gate.state.config.master.bus_endpoints();
    assert!(publisher.to_string().starts_with("tcp:"), "{publisher}");
    let id = format!("tcp-mode-{}", std::process::id());
    let resp = reqwest::Client::new()
        .post(gate.url("/hook/e2e/tcp"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"id": id}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (s, id2) = (Arc::clone(&sandbox), id.clone());
    let written = blocking(move || s.wait_reactor_file(&id2, Duration::from_secs(60))).await;
    assert_eq!(written["post"]["id"], id);
}

//! Two saltgates sharing one real `redis-server` (`saltgate.shared`): a delivery sent to both
//! fires once, a client's rate limit is one budget across both, and when Redis is killed each
//! `fail` mode does what it says without losing anything answered 2xx; once Redis is back on
//! its port the instances share again.
//!
//! Redis is Debian's `redis-server` (`scripts/test` installs it), started per test on a free
//! loopback port without persistence and killed by pid when the test ends. A machine without
//! it fails these tests; they never skip.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use saltgate::config::shared::FailMode;
use saltgate::salt::{BusItem, Subscription};
use serde_json::Value;

use crate::hook_security::github_headers;
use crate::support::fake_master::FakeMaster;
use crate::support::{TestApp, app_metric, data_json};

#[path = "../shared/redis_server.rs"]
mod redis_server;

use redis_server::Redis;

const GITHUB_RULE: &str = "- path: github\n  auth: none\n  verify: {github: {secret_env: GH}}\n";

/// A saltgate on the built-in bus with the GitHub rule (and `extra` rules), sharing `redis`.
async fn instance(redis: &Redis, fail: FailMode, extra: &str) -> TestApp {
    let shared = redis.config(fail);
    TestApp::builder()
        .with_config(move |c| {
            c.api.stats_disable_auth = true;
            c.shared = Some(shared);
        })
        .with_hooks(&format!("{GITHUB_RULE}{extra}"), &[("GH", "s3cret")])
        .spawn()
        .await
}

/// A signed GitHub delivery `id` of the body `{"id": id}`, posted to `app`.
async fn deliver(
    c: &reqwest::Client,
    app: &TestApp,
    id: &str,
) -> (StatusCode, Option<String>, Value) {
    let body = serde_json::json!({ "id": id }).to_string();
    let mut headers = github_headers(body.as_bytes(), "s3cret");
    headers.insert("x-github-delivery", id.parse().unwrap());
    let resp = c
        .post(app.url("/hook/github"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// Fired here, not a duplicate.
fn accepted(answer: &(StatusCode, Option<String>, Value)) -> bool {
    answer.0 == StatusCode::OK && answer.2 == serde_json::json!({"success": true})
}

/// Answered as a delivery another instance has fired (or is firing: 409 `in_progress`).
fn duplicate(answer: &(StatusCode, Option<String>, Value)) -> bool {
    (answer.0 == StatusCode::OK
        && answer.2 == serde_json::json!({"success": true, "duplicate": true}))
        || (answer.0 == StatusCode::CONFLICT && answer.2["code"] == "delivery_in_progress")
}

/// The ids of the hook events on `sub` so far (each event's `post.id`), once no more come
/// within 100 ms.
async fn fired_ids(sub: &mut Subscription) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(item) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
        match item {
            Some(BusItem::Event(e)) if e.tag.starts_with("salt/netapi/hook/") => {
                ids.push(data_json(&e)["post"]["id"].as_str().unwrap().to_owned());
            }
            Some(BusItem::Event(_)) => {}
            other => panic!("unexpected bus item {other:?}"),
        }
    }
    ids
}

/// How often each id was fired, over both instances' buses.
async fn fired_counts(a: &mut Subscription, b: &mut Subscription) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in fired_ids(a).await.into_iter().chain(fired_ids(b).await) {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Waits (up to 10 s) until `app` finds the shared store answering again.
async fn shared_up(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app_metric(app, "saltgate_shared_up").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the shared store is not found back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One delivery sent to `a`, then the same to `b`: `a` fires it, `b` answers duplicate.
async fn shared_once(c: &reqwest::Client, a: &TestApp, b: &TestApp, id: &str) {
    let first = deliver(c, a, id).await;
    assert!(accepted(&first), "{id} to the first instance: {first:?}");
    let second = deliver(c, b, id).await;
    assert!(
        duplicate(&second),
        "{id} to the second instance: {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_sent_to_both_instances_fires_once() {
    let redis = Redis::start();
    let a = instance(&redis, FailMode::Closed, "").await;
    let b = instance(&redis, FailMode::Closed, "").await;
    let (mut sub_a, mut sub_b) = (a.subscribe(), b.subscribe());
    let c = reqwest::Client::new();
    let mut ids = Vec::new();
    for round in 0..100 {
        // Sequentially, each instance first in turn.
        let id = format!("seq-{round}");
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        shared_once(&c, first, second, &id).await;
        ids.push(id);
        // Concurrently.
        let id = format!("par-{round}");
        let (x, y) = tokio::join!(deliver(&c, &a, &id), deliver(&c, &b, &id));
        assert!(
            (accepted(&x) && duplicate(&y)) || (duplicate(&x) && accepted(&y)),
            "{id}: exactly one instance fires it: {x:?} / {y:?}"
        );
        ids.push(id);
    }
    let counts = fired_counts(&mut sub_a, &mut sub_b).await;
    for id in &ids {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} fired {:?} times",
            counts.get(id)
        );
    }
    assert_eq!(counts.len(), ids.len(), "fired: {counts:?}");
}

#[tokio::test]
async fn a_clients_rate_limit_is_one_budget_across_instances() {
    const BURST: usize = 10;
    let redis = Redis::start();
    let rule =
        format!("- path: limited\n  auth: none\n  rate: {{per_second: 1, burst: {BURST}}}\n");
    let a = instance(&redis, FailMode::Closed, &rule).await;
    let b = instance(&redis, FailMode::Closed, &rule).await;
    let c = reqwest::Client::new();
    let started = Instant::now();
    let mut allowed = [0usize; 2];
    let mut limited = [0usize; 2];
    for i in 0..(3 * BURST) {
        let app = if i % 2 == 0 { &a } else { &b };
        let resp = c
            .post(app.url("/hook/limited"))
            .json(&serde_json::json!({ "n": i }))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::OK => allowed[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(resp.headers().contains_key("retry-after"));
                let json: Value = resp.json().await.unwrap();
                assert_eq!(json["code"], "rate_limited");
                limited[i % 2] += 1;
            }
            other => panic!("request {i}: {other}"),
        }
    }
    // One cell comes back per second: that many more may have passed.
    let refilled = started.elapsed().as_secs() as usize + 1;
    let total = allowed[0] + allowed[1];
    assert!(
        (BURST..=BURST + refilled).contains(&total),
        "{total} allowed over both instances ({allowed:?}), for one budget of {BURST}"
    );
    assert!(
        limited[0] > 0 && limited[1] > 0,
        "both instances refuse once the shared budget is spent: {limited:?}"
    );
}

/// Flood: `n` distinct deliveries, alternately to `a` and `b`, with Redis killed after the
/// first third. Returns each delivery's id and answer.
async fn flood_with_redis_killed(
    c: &reqwest::Client,
    a: &TestApp,
    b: &TestApp,
    redis: &mut Redis,
    n: usize,
    tag: &str,
) -> Vec<(String, (StatusCode, Option<String>, Value))> {
    let mut answers = Vec::new();
    for i in 0..n {
        if i == n / 3 {
            redis.kill();
        }
        let id = format!("{tag}-{i}");
        let app = if i % 2 == 0 { a } else { b };
        let answer = deliver(c, app, &id).await;
        answers.push((id, answer));
    }
    answers
}

#[tokio::test]
async fn redis_killed_under_fail_local_keeps_answering_and_shares_again_when_back() {
    let mut redis = Redis::start();
    let a = instance(&redis, FailMode::Local, "").await;
    let b = instance(&redis, FailMode::Local, "").await;
    let (mut sub_a, mut sub_b) = (a.subscribe(), b.subscribe());
    let c = reqwest::Client::new();
    shared_once(&c, &a, &b, "before").await;
    let answers = flood_with_redis_killed(&c, &a, &b, &mut redis, 150, "local").await;
    for (id, answer) in &answers {
        assert!(
            accepted(answer),
            "{id}: fail: local answers 2xx: {answer:?}"
        );
    }
    let fallbacks = app_metric(&a, "saltgate_shared_fallback_total{op=\"dedup_begin\"}").await
        + app_metric(&b, "saltgate_shared_fallback_total{op=\"dedup_begin\"}").await;
    assert!(fallbacks >= 90.0, "fallbacks counted: {fallbacks}");
    assert_eq!(app_metric(&a, "saltgate_shared_up").await, 0.0);
    // While Redis is away each instance decides alone: its own duplicates still are.
    let again = deliver(&c, &a, "local-0").await;
    assert!(duplicate(&again), "{again:?}");
    let counts = fired_counts(&mut sub_a, &mut sub_b).await;
    for (id, _) in &answers {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} answered 2xx, fired {:?}",
            counts.get(id)
        );
    }
    redis.restart();
    shared_up(&a).await;
    shared_up(&b).await;
    for i in 0..10 {
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        shared_once(&c, first, second, &format!("after-{i}")).await;
    }
    let counts = fired_counts(&mut sub_a, &mut sub_b).await;
    assert_eq!(counts.len(), 10, "fired after Redis came back: {counts:?}");
}

#[tokio::test]
async fn redis_killed_under_fail_closed_answers_503_and_loses_nothing_answered_2xx() {
    let mut redis = Redis::start();
    let a = instance(&redis, FailMode::Closed, "").await;
    let b = instance(&redis, FailMode::Closed, "").await;
    let (mut sub_a, mut sub_b) = (a.subscribe(), b.subscribe());
    let c = reqwest::Client::new();
    let answers = flood_with_redis_killed(&c, &a, &b, &mut redis, 150, "closed").await;
    let counts = fired_counts(&mut sub_a, &mut sub_b).await;
    let mut refused = 0;
    for (i, (id, answer)) in answers.iter().enumerate() {
        if answer.0.is_success() {
            assert!(accepted(answer), "{id}: {answer:?}");
            assert_eq!(
                counts.get(id),
                Some(&1),
                "{id} answered 2xx, fired {:?}",
                counts.get(id)
            );
        } else {
            assert_eq!(
                answer.0,
                StatusCode::SERVICE_UNAVAILABLE,
                "{id}: {answer:?}"
            );
            assert_eq!(answer.1.as_deref(), Some("1"), "{id}: Retry-After");
            assert_eq!(answer.2["code"], "shared_unavailable", "{id}: {answer:?}");
            assert_eq!(counts.get(id), None, "{id} was refused but fired");
            assert!(i >= 50, "{id} refused before Redis was killed");
            refused += 1;
        }
    }
    // The first request after the kill may still have found Redis answering.
    assert!(refused >= 99, "{refused} of 100 refused without Redis");
    let refused_metric = app_metric(&a, "saltgate_shared_refused_total").await
        + app_metric(&b, "saltgate_shared_refused_total").await;
    assert_eq!(refused_metric, refused as f64);
    // The sender's retry, once Redis is back: fired once, shared again.
    redis.restart();
    shared_up(&a).await;
    shared_up(&b).await;
    let retried = &answers[answers.len() - 1].0;
    shared_once(&c, &a, &b, retried).await;
    let counts = fired_counts(&mut sub_a, &mut sub_b).await;
    assert_eq!(counts.get(retried), Some(&1));
}

#[tokio::test]
async fn failed_logins_draw_from_one_budget_across_instances() {
    const BURST: usize = saltgate::security::throttle::DEFAULT_FAILURE_BURST as usize;
    let redis = Redis::start();
    let master = FakeMaster::start(&[("saltdev", "saltdev")]);
    let gate = || {
        let shared = redis.config(FailMode::Closed);
        TestApp::builder()
            .with_master(&master)
            .with_config(move |c| c.shared = Some(shared))
            .spawn()
    };
    let (a, b) = (gate().await, gate().await);
    let c = reqwest::Client::new();
    let login = |app: &TestApp, password: &str| {
        c.post(app.url("/login"))
            .json(
                &serde_json::json!({"username": "saltdev", "password": password, "eauth": "file"}),
            )
            .send()
    };
    let mut refused = [0usize; 2];
    let mut throttled = [0usize; 2];
    for i in 0..(3 * BURST) {
        let app = if i % 2 == 0 { &a } else { &b };
        let resp = login(app, &format!("guess{i}")).await.unwrap();
        match resp.status() {
            StatusCode::UNAUTHORIZED => refused[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(resp.headers().contains_key("retry-after"));
                throttled[i % 2] += 1;
            }
            other => panic!("guess {i}: {other}"),
        }
    }
    let total = refused[0] + refused[1];
    // One failure refills every 10 s: at most one more in the time this takes.
    assert!(
        (BURST..=BURST + 1).contains(&total),
        "{total} guesses checked over both instances ({refused:?}), for one budget of {BURST}"
    );
    assert!(throttled[0] > 0 && throttled[1] > 0, "{throttled:?}");
    assert_eq!(
        master.calls.mk_token(),
        total,
        "throttled guesses reached the master"
    );
}

#[tokio::test]
async fn each_instances_page_names_it_and_lists_its_own_deliveries() {
    let redis = Redis::start();
    let named = |name: &'static str| {
        let shared = redis.config(FailMode::Closed);
        TestApp::builder()
            .with_config(move |c| {
                c.saltgate.streams_disable_auth = true;
                c.saltgate.instance = Some(name.to_owned());
                c.shared = Some(shared);
            })
            .with_hooks(GITHUB_RULE, &[("GH", "s3cret")])
            .spawn()
    };
    let (a, b) = (named("gate-a").await, named("gate-b").await);
    let c = reqwest::Client::new();
    shared_once(&c, &a, &b, "page-1").await;
    for (app, name, outcome) in [(&a, "gate-a", "accepted"), (&b, "gate-b", "duplicate")] {
        let page = c
            .get(app.url("/ui"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("data-instance=\"{name}\"")),
            "{page}"
        );
        let list: Value = c
            .get(app.url("/ui/deliveries"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["instance"], name);
        let deliveries = list["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{name}: {list}");
        assert_eq!(deliveries[0]["outcome"], outcome, "{name}: {list}");
    }
}

/// The pipeline task under concurrency, on the store itself: 400 reservations of 200 keys
/// (each key twice) queued at once get exactly one `Reserved` per key and `InProgress` for the
/// other; once the commits (queued, not awaited) have gone out, every key is `Done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reservations_answer_each_caller_and_commits_land() {
    use saltgate::shared::{DedupState, SharedStore};
    let redis = Redis::start();
    let store = SharedStore::new(&redis.config(FailMode::Closed)).unwrap();
    let begins = (0..400u128).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { (i % 200, store.dedup_begin(i % 200).await) })
    });
    let mut reserved: HashMap<u128, usize> = HashMap::new();
    let mut in_progress = 0;
    for begin in begins {
        match begin.await.unwrap() {
            (key, Ok(DedupState::Reserved(_))) => *reserved.entry(key).or_default() += 1,
            (_, Ok(DedupState::InProgress)) => in_progress += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(reserved.len(), 200, "every key reserved once");
    assert!(reserved.values().all(|&n| n == 1), "{reserved:?}");
    assert_eq!(in_progress, 200);
    for key in 0..200u128 {
        store
            .dedup_commit(key, Duration::from_secs(60))
            .await
            .unwrap();
    }
    // The commits went to the queue; the next pipeline (before any later reservation) sends
    // them, so a reservation made after them sees each key done.
    let deadline = Instant::now() + Duration::from_secs(5);
    for key in 0..200u128 {
        loop {
            match store.dedup_begin(key).await {
                Ok(DedupState::Done) => break,
                Ok(DedupState::InProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => panic!("key {key}: {other:?}"),
            }
        }
    }
    // Each operation in a pipeline is counted, not each pipeline.
    use saltgate::shared::Op;
    assert_eq!(store.stats().answered(Op::DedupCommit), 200);
    assert!(store.stats().answered(Op::DedupBegin) >= 600);
}

/// A `saltgate.shared` on a TLS-only redis-server (`rediss://`): with the server's CA in
/// `tls_ca_file` two instances share one delivery id over TLS; without it the certificate is
/// not trusted (the system's roots do not hold the fixture CA), the store is down and
/// `fail: closed` answers 503 `shared_unavailable`, firing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_shared_with_its_ca_and_refused_without_it() {
    let redis = Redis::start_tls();
    let trusted = move |redis: &Redis| {
        let mut config = redis.config(FailMode::Closed);
        config.tls_ca = Some(Redis::ca_pem());
        config
    };
    let spawn = |config: saltgate::config::shared::SharedConfig| async move {
        TestApp::builder()
            .with_config(move |c| {
                c.api.stats_disable_auth = true;
                c.shared = Some(config);
            })
            .with_hooks(GITHUB_RULE, &[("GH", "s3cret")])
            .spawn()
            .await
    };
    let a = spawn(trusted(&redis)).await;
    let b = spawn(trusted(&redis)).await;
    let c = reqwest::Client::new();
    shared_once(&c, &a, &b, "tls-1").await;
    shared_once(&c, &b, &a, "tls-2").await;

    let untrusted = spawn(redis.config(FailMode::Closed)).await;
    let mut sub = untrusted.subscribe();
    let answer = deliver(&c, &untrusted, "tls-3").await;
    assert_eq!(answer.0, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.2["code"], "shared_unavailable", "{answer:?}");
    assert!(fired_ids(&mut sub).await.is_empty(), "nothing fired");
    assert_eq!(app_metric(&untrusted, "saltgate_shared_up").await, 0.0);
}

/// A reservation whose caller stopped waiting (its client left while Redis was slow) is
/// released by the pipeline once Redis answers, so it does not hold the id "in progress" for
/// 30 s: Redis pauses writes (`CLIENT PAUSE ... WRITE`), the caller gives up after 50 ms, the
/// `SET NX` lands when the pause ends, and the same key can be reserved again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_caller_gave_up_is_released() {
    use saltgate::shared::{DedupState, SharedStore};
    let redis = Redis::start();
    let store = SharedStore::new(&redis.config(FailMode::Closed)).unwrap();
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(50), store.dedup_begin(42)).await;
    assert!(gave_up.is_err(), "answered during the pause: {gave_up:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.dedup_begin(42).await {
            Ok(DedupState::Reserved(_)) => break,
            Ok(DedupState::InProgress) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the abandoned reservation still holds the key: {other:?}"),
        }
    }
}

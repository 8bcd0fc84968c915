//! Salt's master cluster (3007+) on one machine, as the deployment guide describes it: two real
//! masters of one `cluster_id` on 127.0.0.1 and 127.0.0.2 (the same request and publish ports,
//! one `cluster_pki_dir` and one `cachedir`, as Salt's cluster guide requires of shared storage;
//! the minion on the first), one saltgate per master and one real `redis-server` shared by both
//! (`saltgate.shared`). Without the shared `cachedir` the second master has no grains of the
//! minion, and a Reactor's grain-targeted job from it matches no minion.
//!
//! A signed delivery sent through either saltgate, or through both, is fired once, on the bus
//! of the master whose saltgate took it; Salt forwards it to the peer, whose bus carries the
//! copy with `__peer_id` (the master it came from). Both masters' Reactors see it: the guarded
//! `reactor-examples/cluster-github-deploy.sls` applies its state once per delivery, and the
//! same SLS without its guard applies it twice (the Reactor of each master acts), so the count
//! measures the guard.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use saltgate::config::shared::FailMode;
use saltgate::salt::wire::payload::to_json;
use saltgate::salt::{BusItem, EventBus, Subscription};
use saltgate::security::Secret;
use saltgate::security::signature::github;
use serde_json::{Value, json};

use crate::gate::{Gate, blocking};
use crate::support::salt::SaltSandbox;
use crate::support::watch;

use crate::support::redis_server::Redis;

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";
const SECRET: &str = "cluster-s3cret";
const GUARDED: &str = "salt/netapi/hook/cluster/deploy";
const UNGUARDED: &str = "salt/netapi/hook/cluster/unguarded";

const RULES: &str = r#"
- path: cluster/deploy
  auth: none
  verify: {github: {secret_env: CLUSTER_GH}}
- path: cluster/unguarded
  auth: none
  verify: {github: {secret_env: CLUSTER_GH}}
"#;

/// The state both Reactor SLS files apply: one line per run, appended on the minion.
const DEPLOY_SLS: &str = "cluster_deploy_run:\n  cmd.run:\n    - name: \"echo {{ pillar['deploy_sha'] }} >> {{ opts['root_dir'] }}/reactor-out/deploy-runs.log\"\n";

fn example() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reactor-examples/cluster-github-deploy.sls");
    std::fs::read_to_string(path).unwrap()
}

/// The example with its `__peer_id` guard (its first `if` and the matching last `endif`) taken
/// out: what a Reactor SLS written for one master does on a cluster.
fn unguarded(example: &str) -> String {
    let guard = "{%- if '__peer_id' not in data %}\n";
    assert_eq!(example.matches(guard).count(), 1, "the guard line moved");
    let body = example.replacen(guard, "", 1);
    let end = body.trim_end().rfind("{%- endif %}").unwrap();
    format!("{}\n", &body[..end])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sandbox master `me` of the cluster with `peer`, serving the two Reactor SLS files. The
/// first (`second: None`) runs the minion; the second (`second: Some((ret_port, publish_port,
/// cachedir))`) shares the first's ports and `cachedir`. Its `root_dir` is `/`: Salt puts
/// `root_dir` in front of `cachedir` (every path here is absolute already), which would turn
/// the first master's `cachedir` into a path under the second's root.
fn member(
    me: &str,
    peer: &str,
    pki: &str,
    pool_port: u16,
    second: Option<(u16, u16, String)>,
) -> SaltSandbox {
    let example = example();
    let mut yaml = format!(
        "id: '{me}'\ninterface: '{me}'\ncluster_id: saltgate-e2e\ncluster_peers: ['{peer}']\n\
         cluster_pki_dir: '{pki}'\ncluster_pool_port: {pool_port}\n"
    );
    let is_second = second.is_some();
    if let Some((ret, publish, cachedir)) = second {
        yaml.push_str(&format!(
            "ret_port: {ret}\npublish_port: {publish}\ncachedir: '{cachedir}'\nroot_dir: /\n"
        ));
    }
    let mut builder = SaltSandbox::builder()
        .with_master_config(&yaml)
        .with_file("reactor/cluster-github-deploy.sls", &example)
        .with_file("reactor/unguarded-deploy.sls", &unguarded(&example))
        .with_file("deploy.sls", DEPLOY_SLS)
        .with_reactor(GUARDED, &["salt://reactor/cluster-github-deploy.sls"])
        .with_reactor(UNGUARDED, &["salt://reactor/unguarded-deploy.sls"]);
    if is_second {
        builder = builder.without_minion();
    } else {
        builder = builder.with_minion_config("grains: {roles: [web]}\n");
    }
    builder.start()
}

/// A signed GitHub push of `sha` to `refs/heads/main`, delivery `delivery`, to `gate`'s `path`.
async fn push(
    c: &reqwest::Client,
    gate: &Gate,
    path: &str,
    delivery: &str,
    sha: &str,
) -> (StatusCode, Value) {
    let body = json!({"ref": "refs/heads/main", "after": sha}).to_string();
    let mut req = c
        .post(gate.url(&format!("/hook/{path}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery);
    for (k, v) in github::sign(&Secret::new(SECRET.into()).unwrap(), body.as_bytes()) {
        req = req.header(k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn accepted(answer: &(StatusCode, Value)) -> bool {
    answer.0 == StatusCode::OK && answer.1 == json!({"success": true})
}

/// Answered as a delivery the other instance fired (or is firing: 409).
fn duplicate(answer: &(StatusCode, Value)) -> bool {
    (answer.0 == StatusCode::OK && answer.1 == json!({"success": true, "duplicate": true}))
        || (answer.0 == StatusCode::CONFLICT && answer.1["code"] == "delivery_in_progress")
}

/// The data of every event on `sub` whose tag starts with `prefix`, until none has come for
/// `quiet`.
async fn events(sub: &mut Subscription, prefix: &str, quiet: Duration) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Ok(item) = tokio::time::timeout(quiet, sub.recv()).await {
        match item {
            Some(BusItem::Event(e)) if e.tag.starts_with(prefix) => {
                out.push((e.tag.clone(), to_json(&e.data)));
            }
            Some(_) => {}
            None => panic!("the watcher's bus closed"),
        }
    }
    out
}

/// Fires a probe on `from`'s bus until `to_sub` sees it forwarded with `__peer_id == from_id`:
/// the masters have exchanged their keys. Panics after 90 s.
async fn wait_forwarding(from: &Arc<SaltSandbox>, from_id: &str, to_sub: &mut Subscription) {
    let run = std::process::id();
    for i in 0..45 {
        let from = Arc::clone(from);
        let tag = format!("saltgate/e2e/cluster-probe/{run}/{i}");
        let t = tag.clone();
        blocking(move || from.send_event(&t, &json!({"probe": i}))).await;
        let seen = events(to_sub, &tag, Duration::from_secs(2)).await;
        if seen.iter().any(|(_, d)| d["__peer_id"] == from_id) {
            return;
        }
    }
    panic!(
        "{from_id}'s events never reached its peer:\n{}",
        from.master_log_tail(40)
    );
}

/// The lines of the minion's deploy log, once it has at least `n` or 120 s have passed, then
/// after 5 s more (a second run would have come by then).
async fn deploy_runs(log: PathBuf, n: usize) -> Vec<String> {
    blocking(move || {
        let read = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while read().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(5));
        read()
    })
    .await
}

#[tokio::test]
async fn a_master_cluster_fires_each_hook_once_and_the_guard_acts_once() {
    let redis = Redis::start();
    let pool_port = free_port();
    let a = Arc::new(blocking(move || member(A, B, "@ROOT@/cluster-pki", pool_port, None)).await);
    let pki = a.root().join("cluster-pki").to_string_lossy().into_owned();
    let cachedir = a.root().join("cache/master").to_string_lossy().into_owned();
    let second = (a.ret_port(), a.publish_port(), cachedir);
    let b = Arc::new(blocking(move || member(B, A, &pki, pool_port, Some(second))).await);

    let env = [("CLUSTER_GH", SECRET)];
    let (shared_a, shared_b) = (
        redis.config(FailMode::Closed),
        redis.config(FailMode::Closed),
    );
    let gate_a = Gate::start(&a, RULES, &env, move |c| c.shared = Some(shared_a)).await;
    let gate_b = Gate::start(&b, RULES, &env, move |c| c.shared = Some(shared_b)).await;
    let bus_a = watch::master_bus(&gate_a.state.config).await;
    let bus_b = watch::master_bus(&gate_b.state.config).await;
    let (mut sub_a, mut sub_b) = (bus_a.subscribe(), bus_b.subscribe());
    wait_forwarding(&a, A, &mut sub_b).await;
    wait_forwarding(&b, B, &mut sub_a).await;

    let run = std::process::id();
    let c = reqwest::Client::new();
    let sha = |n: u32| format!("sha{run}x{n}");
    let delivery = |n: u32| format!("cluster-{run}-{n}");
    // 1: through A, then its retry through B. 2: through B, then through A.
    let first = push(&c, &gate_a, "cluster/deploy", &delivery(1), &sha(1)).await;
    let retry = push(&c, &gate_b, "cluster/deploy", &delivery(1), &sha(1)).await;
    assert!(
        accepted(&first) && duplicate(&retry),
        "1: {first:?} then {retry:?}"
    );
    let first = push(&c, &gate_b, "cluster/deploy", &delivery(2), &sha(2)).await;
    let retry = push(&c, &gate_a, "cluster/deploy", &delivery(2), &sha(2)).await;
    assert!(
        accepted(&first) && duplicate(&retry),
        "2: {first:?} then {retry:?}"
    );
    // 3: to both at once.
    let (d3, s3) = (delivery(3), sha(3));
    let (to_a, to_b) = tokio::join!(
        push(&c, &gate_a, "cluster/deploy", &d3, &s3),
        push(&c, &gate_b, "cluster/deploy", &d3, &s3),
    );
    assert!(
        (accepted(&to_a) && duplicate(&to_b)) || (accepted(&to_b) && duplicate(&to_a)),
        "3: {to_a:?} and {to_b:?}"
    );
    let third_via = if accepted(&to_a) { A } else { B };
    // 4: the unguarded SLS, through A.
    let unguarded = push(&c, &gate_a, "cluster/unguarded", &delivery(4), &sha(4)).await;
    assert!(accepted(&unguarded), "4: {unguarded:?}");

    // Each delivery: once on the bus of the master that took it, once forwarded to the other.
    let on_a = events(
        &mut sub_a,
        "salt/netapi/hook/cluster/",
        Duration::from_secs(3),
    )
    .await;
    let on_b = events(
        &mut sub_b,
        "salt/netapi/hook/cluster/",
        Duration::from_secs(3),
    )
    .await;
    for (n, via, tag) in [
        (1, A, GUARDED),
        (2, B, GUARDED),
        (3, third_via, GUARDED),
        (4, A, UNGUARDED),
    ] {
        for (bus, id, seen) in [(A, A, &on_a), (B, B, &on_b)] {
            let copies: Vec<&Value> = seen
                .iter()
                .filter(|(_, d)| d["post"]["after"] == sha(n).as_str())
                .map(|(t, d)| {
                    assert_eq!(t, tag, "delivery {n} on {bus}");
                    d
                })
                .collect();
            assert_eq!(copies.len(), 1, "delivery {n} on {bus}'s bus: {copies:?}");
            let want = if id == via { Value::Null } else { json!(via) };
            assert_eq!(
                copies[0].get("__peer_id").cloned().unwrap_or(Value::Null),
                want,
                "delivery {n} (through {via}) on {bus}'s bus"
            );
        }
    }

    // The guarded SLS acted once per delivery; without the guard, once per master.
    let runs = deploy_runs(a.reactor_out_dir().join("deploy-runs.log"), 5).await;
    let count = |n: u32| runs.iter().filter(|l| l.trim() == sha(n)).count();
    let counts: Vec<usize> = (1..=4).map(count).collect();
    assert_eq!(
        counts,
        [1, 1, 1, 2],
        "runs per delivery (1-3 guarded, 4 unguarded): {runs:?}\n{}\n{}",
        a.master_log_tail(30),
        b.master_log_tail(30)
    );
    drop((gate_a, gate_b));
}

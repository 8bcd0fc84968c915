//! Two saltgates in front of one real master, sharing one real `redis-server`
//! (`saltgate.shared`): the same signed GitHub delivery sent to both, one after the other and
//! at once, reaches the master's bus once, counted by id by a subscriber of that bus.

use std::collections::HashMap;
use std::time::Duration;

use saltgate::config::shared::FailMode;
use saltgate::salt::BusItem;

use crate::gate::Gate;
use crate::spool::{ENV, RULE, github_headers};
use crate::support::salt::shared;

use crate::support::redis_server::Redis;

async fn send(c: &reqwest::Client, gate: &Gate, run: &str, i: usize) -> u16 {
    let body = format!(r#"{{"run": "{run}", "i": {i}}}"#);
    let mut req = c.post(gate.url("/hook/spool/shared"));
    for (k, v) in github_headers(body.as_bytes(), &format!("{run}-{i}")) {
        req = req.header(k, v);
    }
    req.body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn one_delivery_through_two_saltgates_reaches_the_master_once() {
    let sandbox = shared();
    let redis = Redis::start();
    let a = Gate::start(sandbox, RULE, &ENV, |c| {
        c.shared = Some(redis.config(FailMode::Closed))
    })
    .await;
    let b = Gate::start(sandbox, RULE, &ENV, |c| {
        c.shared = Some(redis.config(FailMode::Closed))
    })
    .await;
    let mut bus = a.state.bus.subscribe();
    let c = reqwest::Client::new();
    let run = format!("shared-{}", std::process::id());
    let rounds = 40;
    for i in 0..rounds {
        let (sa, sb) = if i % 2 == 0 {
            // One after the other; the next round at once.
            let sa = send(&c, &a, &run, i).await;
            (sa, send(&c, &b, &run, i).await)
        } else {
            tokio::join!(send(&c, &a, &run, i), send(&c, &b, &run, i))
        };
        // Accepted (200, 202 queued), duplicate (200) or in progress on the other (409).
        for s in [sa, sb] {
            assert!(matches!(s, 200 | 202 | 409), "round {i}: {sa} / {sb}");
        }
    }
    // Every round's event on the master's bus exactly once: until all are seen, then 2 s more
    // so that a second copy would have arrived.
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut settling = false;
    loop {
        if !settling && seen.len() == rounds {
            settling = true;
            deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(item)) = tokio::time::timeout(left, bus.recv()).await else {
            break;
        };
        let BusItem::Event(ev) = item else { continue };
        let data = saltgate::salt::to_json(&ev.data);
        if ev.tag == "salt/netapi/hook/spool/shared" && data["post"]["run"] == run.as_str() {
            let i = data["post"]["i"].as_u64().unwrap();
            *seen.entry(i).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), rounds, "rounds on the bus: {seen:?}");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "fired more than once: {repeated:?}");
}

//! The spool's crash and outage rounds against a real master (heavy: `scripts/test` runs the
//! `*chaos::` modules on 3007.17 only). Every hook answered 2xx must be on the master's bus at
//! least once, counted by an independent subscriber; repeats are counted and printed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use crate::gate::{Gate, blocking};
use crate::spool::{Binary, ENV, RULE, Watcher, repeats, signed_hook};
use crate::support::salt::{self, SaltSandbox};

/// Sends signed hooks to `url` from `clients` connections until `stop` is set or the server
/// is gone; returns the ids answered 2xx, and how many of them were `queued`.
fn flood(
    url: String,
    run: u64,
    clients: usize,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<u64>, usize)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let accepted = Arc::new(Mutex::new((Vec::new(), 0usize)));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (client, url, next, stop, accepted) = (
                client.clone(),
                url.clone(),
                next.clone(),
                stop.clone(),
                accepted.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Ok(resp) = signed_hook(&client, &url, run, i, 256).send().await else {
                        return; // killed
                    };
                    if resp.status().is_success() {
                        let queued = resp.status() == 202;
                        let mut a = accepted.lock().unwrap();
                        a.0.push(i);
                        a.1 += usize::from(queued);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *accepted.lock().unwrap())
    })
}

#[tokio::test]
async fn sigkill_at_random_moments_of_a_flood_loses_no_hook_answered_2xx() {
    const ROUNDS: usize = 10;
    let sandbox = blocking(salt::shared).await;
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::configure(sandbox, dir.path());
    let config = binary.load();
    let run = (u64::from(std::process::id()) << 20) | 3;
    let watcher = Watcher::start(&config, "salt/netapi/hook/spool/kill", run);
    watcher.connected().await;
    let next = Arc::new(AtomicU64::new(0));
    let mut accepted = HashSet::new();
    let mut queued = 0;
    let url = format!("{}/hook/spool/kill", binary.base);
    for round in 0..ROUNDS {
        binary.start().await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = flood(url.clone(), run, 16, next.clone(), stop.clone());
        let after = rand::rng().random_range(150..900);
        tokio::time::sleep(Duration::from_millis(after)).await;
        binary.kill();
        stop.store(true, Ordering::Relaxed);
        let (ids, q) = load.await.unwrap();
        eprintln!(
            "round {round}: SIGKILL after {after} ms, {} hooks answered 2xx",
            ids.len()
        );
        queued += q;
        accepted.extend(ids);
    }
    assert!(accepted.len() > 200, "only {} accepted", accepted.len());
    // The last start recovers what the last kill left.
    binary.start().await;
    watcher
        .wait_all(
            &accepted,
            Duration::from_secs(90),
            "after the SIGKILL rounds",
        )
        .await;
    let (ids, extra) = repeats(&watcher.seen(), &accepted);
    eprintln!(
        "{ROUNDS} SIGKILL rounds: {} hooks answered 2xx ({queued} of them 202 queued), all on \
         the master bus; {ids} seen more than once ({extra} extra copies)",
        accepted.len()
    );
    // A repeat is marked: every copy of a hook carries the same delivery id, so a Reactor
    // that must act once can tell (`data._saltgate.id`).
    assert_eq!(watcher.unmarked_repeats(), Vec::<u64>::new());
}

#[tokio::test]
async fn a_master_restart_mid_flood_loses_no_hook_answered_2xx() {
    let sandbox = Arc::new(blocking(|| SaltSandbox::builder().start()).await);
    let gate = Gate::start(&sandbox, RULE, &ENV, |_| {}).await;
    let run = (u64::from(std::process::id()) << 20) | 4;
    let watcher = Watcher::start(&gate.state.config, "salt/netapi/hook/spool/restart", run);
    watcher.connected().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = flood(
        gate.url("/hook/spool/restart"),
        run,
        8,
        Arc::new(AtomicU64::new(0)),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = Arc::clone(&sandbox);
    blocking(move || s.stop_master()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = Arc::clone(&sandbox);
    blocking(move || s.start_master()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ids, queued) = load.await.unwrap();
    let accepted: HashSet<u64> = ids.into_iter().collect();
    assert!(
        queued > 0,
        "no hook was answered queued while the master was down"
    );
    watcher
        .wait_all(
            &accepted,
            Duration::from_secs(60),
            "after the master restart",
        )
        .await;
    let (repeated, extra) = repeats(&watcher.seen(), &accepted);
    let status = gate.state.spool.as_ref().unwrap().status();
    eprintln!(
        "master restart mid-flood: {} hooks answered 2xx ({queued} 202 queued), all on the bus; \
         {repeated} seen more than once ({extra} extra copies); spool: {} re-pushed, {} repeats \
         counted, {} Reactor answers",
        accepted.len(),
        status.repushed,
        status.repeats,
        status.reactor_answers
    );
}

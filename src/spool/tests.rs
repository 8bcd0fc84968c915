//! The spool end to end inside the process: the built-in bus, and the fake master bus of
//! [`crate::salt::bus::ipc::fake`] (which republishes what it reads, as the master does), so
//! echoes, outages and restarts run for real, only faster. The real master: tests/e2e/spool.rs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

use super::*;
use crate::salt::bus::ipc::{Endpoint, IpcBus, IpcBusConfig, fake};
use crate::salt::bus::memory::MemoryBus;
use crate::salt::wire::framing::Framing;
use crate::salt::{BusItem, Subscription};

fn hook(i: u64) -> Event {
    Event::new(
        "salt/netapi/hook/t",
        Value::Map(vec![
            (
                Value::from("_stamp"),
                Value::from("2026-12-02T10:00:00.000000"),
            ),
            (
                Value::from("post"),
                Value::Map(vec![(Value::from("i"), Value::from(i))]),
            ),
        ]),
    )
}

fn who(dedup: Option<u128>) -> Hook {
    Hook {
        path: "t".into(),
        client: "10.0.0.1".parse().unwrap(),
        dedup,
    }
}

fn ipc_bus(dir: &std::path::Path) -> SharedBus {
    let mut c = IpcBusConfig::new(
        Endpoint::Unix(dir.join("master_event_pub.ipc")),
        Endpoint::Unix(dir.join("master_event_pull.ipc")),
    );
    c.probe_timeout = Duration::from_millis(300);
    Arc::new(IpcBus::start(c))
}

/// `post.i` of every hook event seen until `n` distinct ones came, with how often each came.
async fn collect(sub: &mut Subscription, n: usize) -> HashMap<u64, usize> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    while seen.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} hooks on the bus", seen.len()));
        if let Some(BusItem::Event(ev)) = item {
            if ev.tag != "salt/netapi/hook/t" {
                continue;
            }
            assert!(id::event_id(&ev).is_some(), "no delivery id");
            let i = ev
                .get("post")
                .and_then(|p| crate::salt::event::map_get(p, "i"))
                .and_then(Value::as_u64)
                .unwrap();
            *seen.entry(i).or_default() += 1;
        }
    }
    seen
}

async fn settle(spool: &Spool, what: impl Fn(&SpoolStatus) -> bool) -> SpoolStatus {
    for _ in 0..500 {
        let s = spool.status();
        if what(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("spool never settled: {:?}", spool.status());
}

#[tokio::test]
async fn the_built_in_bus_gets_every_hook_once_in_order_with_its_id() {
    let bus: SharedBus = Arc::new(MemoryBus::new(4096));
    let spool = Spool::open(SpoolConfig::new(Storage::Memory), Arc::clone(&bus)).unwrap();
    let mut sub = bus.subscribe();
    // Until the pusher has started, a hook is answered `queued` (it is, for that moment).
    settle(&spool, |s| s.delivering).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let a = spool.accept(hook(i), who(None)).await.unwrap();
        assert!(!a.queued);
        ids.push(a.id);
    }
    let mut order = Vec::new();
    while order.len() < 200 {
        if let Some(BusItem::Event(ev)) = sub.recv().await {
            order.push(id::event_id(&ev).unwrap().1);
        }
    }
    assert_eq!(order, (0..200).collect::<Vec<u64>>(), "arrival order");
    assert_eq!(
        ids[7],
        id::format_id(id::parse_id(ids[0].as_bytes()).unwrap().0, 7)
    );
    let s = settle(&spool, |s| s.pending == 0).await;
    assert_eq!((s.accepted, s.confirmed, s.repushed), (200, 200, 0));
    assert!(s.commits >= 1 && s.commits <= 200, "{}", s.commits);
    let (log, _) = spool
        .list(Query {
            limit: 5,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].state, State::Delivered);
    let (info, event) = spool.get(log[0].seq).await.unwrap().unwrap();
    assert_eq!(info.id, ids[199]);
    assert_eq!(id::event_id(&event), id::parse_id(ids[199].as_bytes()));
}

#[tokio::test]
async fn concurrent_hooks_share_commits() {
    let bus: SharedBus = Arc::new(MemoryBus::new(16));
    let spool = Spool::open(SpoolConfig::new(Storage::Memory), bus).unwrap();
    let mut tasks = Vec::new();
    for i in 0..512 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool.accept(hook(i), who(None)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let s = settle(&spool, |s| s.pending == 0).await;
    assert_eq!(s.accepted, 512);
    assert!(
        s.commits < 512,
        "512 hooks took {} durable commits",
        s.commits
    );
}

#[tokio::test]
async fn the_master_bus_confirms_by_echo_and_an_outage_only_delays() {
    let dir = tempfile::tempdir().unwrap();
    let master = fake::spawn(dir.path(), Framing::Bare, Framing::Prefixed);
    let bus = ipc_bus(dir.path());
    let spool = Spool::open(SpoolConfig::new(Storage::Memory), Arc::clone(&bus)).unwrap();
    let mut sub = bus.subscribe();
    settle(&spool, |s| s.link == "up").await;
    for i in 0..50 {
        spool.accept(hook(i), who(None)).await.unwrap();
    }
    let seen = collect(&mut sub, 50).await;
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let s = settle(&spool, |s| s.pending == 0 && s.confirmed == 50).await;
    assert!(s.repush_after_secs >= pusher::MIN_RTO.as_secs_f64());

    // The master goes away: hooks are accepted, answered queued, and wait.
    master.abort();
    let _ = master.await;
    std::fs::remove_file(dir.path().join("master_event_pub.ipc")).unwrap();
    std::fs::remove_file(dir.path().join("master_event_pull.ipc")).unwrap();
    settle(&spool, |s| s.link == "down").await;
    for i in 50..80 {
        let a = spool.accept(hook(i), who(None)).await.unwrap();
        assert!(a.queued, "hook {i} not answered queued");
    }
    assert_eq!(spool.status().pending, 30);
    assert!(spool.status().oldest_pending_secs.is_some());
    let _master = fake::spawn(dir.path(), Framing::Bare, Framing::Prefixed);
    let seen = collect(&mut sub, 30).await;
    assert_eq!(seen.keys().min(), Some(&50));
    let s = settle(&spool, |s| s.pending == 0).await;
    assert_eq!(s.confirmed, 80);
}

#[tokio::test]
async fn a_full_spool_refuses_with_retry_after_and_keeps_what_it_took() {
    let dir = tempfile::tempdir().unwrap();
    // No master at all: nothing is delivered, everything waits.
    let bus = ipc_bus(dir.path());
    let mut config = SpoolConfig::new(Storage::Memory);
    config.max_bytes = 64 << 10;
    let spool = Spool::open(config, bus).unwrap();
    let mut accepted = 0;
    let refusal = loop {
        match spool.accept(hook(accepted), who(None)).await {
            Ok(a) => {
                assert!(a.queued);
                accepted += 1;
            }
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "never full");
    };
    assert_eq!(refusal, SpoolError::Full(30));
    let s = spool.status();
    assert_eq!(s.pending, accepted);
    assert_eq!(s.refused_full, 1);
    assert!(s.pending_bytes <= 64 << 10);
}

#[tokio::test]
async fn a_reopened_spool_delivers_what_was_pending_and_keeps_its_replay_keys() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(dir.path().join("spool"));
    let sockets = tempfile::tempdir().unwrap();
    {
        let spool =
            Spool::open(SpoolConfig::new(storage.clone()), ipc_bus(sockets.path())).unwrap();
        for i in 0..5 {
            spool
                .accept(hook(i), who(Some(u128::from(i) + 1)))
                .await
                .unwrap();
        }
        assert_eq!(spool.status().pending, 5);
    }
    // The writer lets go of the file once the handle and the pusher are gone.
    let bus: SharedBus = Arc::new(MemoryBus::new(64));
    let mut sub = bus.subscribe();
    let mut reopened = None;
    for _ in 0..100 {
        match Spool::open(SpoolConfig::new(storage.clone()), Arc::clone(&bus)) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let spool = reopened.expect("the spool file was never released");
    let seen = collect(&mut sub, 5).await;
    assert_eq!(seen.len(), 5);
    let s = settle(&spool, |s| s.pending == 0).await;
    assert_eq!(s.recovered, 5);
    let keys = spool.dedup_keys(Duration::from_secs(60), 10);
    let mut hashes: Vec<u128> = keys.iter().map(|k| k.0).collect();
    hashes.sort_unstable();
    assert_eq!(hashes, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn redelivery_fires_the_stored_event_again() {
    let bus: SharedBus = Arc::new(MemoryBus::new(64));
    let spool = Spool::open(SpoolConfig::new(Storage::Memory), Arc::clone(&bus)).unwrap();
    let a = spool.accept(hook(9), who(None)).await.unwrap();
    let seq = id::parse_id(a.id.as_bytes()).unwrap().1;
    settle(&spool, |s| s.pending == 0).await;
    let mut sub = bus.subscribe();
    assert!(spool.redeliver(seq).await.unwrap());
    let seen = collect(&mut sub, 1).await;
    assert_eq!(seen.get(&9), Some(&1));
    let s = settle(&spool, |s| s.pending == 0 && s.redelivered == 1).await;
    assert_eq!(s.confirmed, 2);
    assert!(!spool.redeliver(seq + 100).await.unwrap());
    let (info, _) = spool.get(seq).await.unwrap().unwrap();
    assert_eq!(info.attempts, 2);
}

/// A key accepted twice (it had left the guard in between) has two rows; what is restored is
/// the key once, at its newest acceptance, so the guard's window runs from the later one.
#[tokio::test]
async fn a_key_accepted_twice_is_restored_once_at_its_newest_time() {
    let bus: SharedBus = Arc::new(MemoryBus::new(64));
    let spool = Spool::open(SpoolConfig::new(Storage::Memory), Arc::clone(&bus)).unwrap();
    spool.accept(hook(1), who(Some(7))).await.unwrap();
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    spool.accept(hook(2), who(Some(7))).await.unwrap();
    spool.accept(hook(3), who(Some(8))).await.unwrap();
    let keys = spool.dedup_keys(Duration::from_secs(60), 10);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let seven = keys.iter().find(|k| k.0 == 7).unwrap();
    assert!(
        seven.1 > between,
        "restored at the older acceptance: {keys:?}"
    );
}

/// A crash after hooks were answered from the log and before a checkpoint: the store's file
/// holds some of them in commits that were never made durable, or none; the log holds all.
/// A new process (a copy of the files, as a killed one leaves them) delivers every one, keeps
/// their replay keys, and hands out no sequence number twice.
#[tokio::test]
async fn hooks_answered_from_the_log_survive_a_crash_before_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let storage = Storage::Dir(spool_dir.clone());
    let (store, r) = store::Store::open(&storage, 1 << 20).unwrap();
    let (mut log, old) = wal::Wal::open(&spool_dir, r.spool_id).unwrap();
    assert!(old.is_empty());
    log.begin(r.next_seq).unwrap();
    let rows: Vec<store::Row> = (0..6)
        .map(|i| {
            let mut slotted = id::pack_slotted(hook(i)).unwrap();
            id::fill(&mut slotted.bytes, slotted.id_at, r.spool_id, i);
            store::Row {
                seq: i,
                received_ms: now_ms(),
                path: "t".into(),
                client: "10.0.0.1".into(),
                event: bytes::Bytes::from(slotted.bytes),
                dedup: Some(u128::from(i) + 100),
            }
        })
        .collect();
    // Answered in two groups; the store took the first without an fsync.
    log.append(&rows[..2], 0).unwrap();
    log.append(&rows[2..], 0).unwrap();
    let first = store::Work {
        rows: rows[..2].to_vec(),
        next_seq: 2,
        now_ms: now_ms(),
        ..store::Work::default()
    };
    store.commit(&first, false).unwrap();
    std::mem::forget(store);
    std::mem::forget(log);
    let copy = tempfile::tempdir().unwrap();
    for name in [store::FILE_NAME, "spool.wal.0", "spool.wal.1"] {
        std::fs::copy(spool_dir.join(name), copy.path().join(name)).unwrap();
    }
    let bus: SharedBus = Arc::new(MemoryBus::new(64));
    let mut sub = bus.subscribe();
    let storage = Storage::Dir(copy.path().to_path_buf());
    let spool = Spool::open(SpoolConfig::new(storage.clone()), Arc::clone(&bus)).unwrap();
    let seen = collect(&mut sub, 6).await;
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    settle(&spool, |s| s.pending == 0 && s.delivered == 6).await;
    let mut keys: Vec<u128> = spool
        .dedup_keys(Duration::from_secs(60), 100)
        .iter()
        .map(|k| k.0)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (100..106).collect::<Vec<u128>>());
    // The next hook gets the next number, and the log is written from there on.
    let accepted = spool.accept(hook(6), who(None)).await.unwrap();
    assert_eq!(accepted.id, id::format_id(r.spool_id, 6));
    let (log, _) = spool
        .list(Query {
            limit: 10,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 7);
    // Its echo confirmed before the spool closes: a confirmation still on its way when the
    // spool is dropped is not committed, and the entry would be pending (pushed again) below.
    settle(&spool, |s| s.pending == 0 && s.delivered == 7).await;
    drop(spool);
    // Reopened again (cleanly, this time): nothing is replayed twice.
    let mut again = None;
    for _ in 0..100 {
        match Spool::open(
            SpoolConfig::new(storage.clone()),
            Arc::new(MemoryBus::new(64)),
        ) {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let again = again.expect("the spool file was never released");
    let s = settle(&again, |s| s.pending == 0).await;
    assert_eq!(s.delivered, 7);
    assert_eq!(s.recovered, 0);
}

/// Groups larger than what the log's file has room for are committed to the store durably
/// and answered from there; everything is still delivered in order.
#[tokio::test]
async fn hooks_the_log_has_no_room_for_are_committed_durably_instead() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(dir.path().join("spool"));
    let bus: SharedBus = Arc::new(MemoryBus::new(64));
    let spool = Spool::open(SpoolConfig::new(storage), Arc::clone(&bus)).unwrap();
    // 3 MiB hooks one after the other: two fill a log file, so the files alternate, and
    // checkpoints free them; then one larger than a file.
    let with_body = |i: u64, size: usize| {
        let mut event = hook(i);
        if let Value::Map(entries) = &mut event.data {
            entries.push((Value::from("body"), Value::from("x".repeat(size))));
        }
        event
    };
    for i in 0..11u64 {
        spool
            .accept(with_body(i, 3 << 20), who(None))
            .await
            .unwrap();
    }
    spool
        .accept(with_body(11, 9 << 20), who(None))
        .await
        .unwrap();
    // On the built-in bus an entry is confirmed by its push.
    let s = settle(&spool, |s| s.pending == 0 && s.delivered == 12).await;
    assert_eq!(s.accepted, 12);
    assert!(s.checkpoints >= 1, "{s:?}");
    assert!(s.log_full >= 1, "{s:?}");
    let (log, _) = spool
        .list(Query {
            limit: 20,
            ..Query::default()
        })
        .await
        .unwrap();
    let seqs: Vec<u64> = log.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (0..12).rev().collect::<Vec<u64>>());
}

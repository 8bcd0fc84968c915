//! SIGTERM during a hook flood: every hook answered 200 is on the master's bus, and no hook got
//! 200 without being fired. Runs the real `saltgate` binary against a real master.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saltgate::salt::bus::ipc::{IpcBus, IpcBusConfig};
use saltgate::salt::wire::payload::to_json;
use saltgate::salt::{BusItem, EventBus};

use crate::gate::blocking;
use crate::support::salt;

#[tokio::test]
async fn sigterm_during_a_hook_flood_loses_no_accepted_hook() {
    let sandbox = blocking(salt::shared).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    // The sandbox's master config plus a rest_cherrypy block for this saltgate.
    let mut master = std::fs::read_to_string(sandbox.master_config_file()).unwrap();
    master.push_str(&format!(
        "\nrest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  webhook_disable_auth: true\nsaltgate:\n  bus: master\n  spool:\n    dir: {}\n",
        dir.path().join("spool").display()
    ));
    std::fs::write(dir.path().join("master"), master).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("master"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if c.get(format!("{base}/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "saltgate did not start");

    // An independent subscriber on the master's publisher.
    let cfg =
        saltgate::config::Config::load(&dir.path().join("master"), &Default::default()).unwrap();
    let (publisher, puller) = cfg.master.bus_endpoints();
    let watcher = IpcBus::start(IpcBusConfig::new(publisher, puller));
    watcher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let mut sub = watcher.subscribe();
    let run = std::process::id();
    let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let seen_w = Arc::clone(&seen);
    let counter = tokio::spawn(async move {
        while let Some(item) = sub.recv().await {
            if let BusItem::Event(ev) = item {
                if ev.tag == "salt/netapi/hook/flood" {
                    let post = to_json(ev.get("post").unwrap_or(&rmpv::Value::Nil));
                    if post["run"] == run {
                        if let Some(i) = post["i"].as_u64() {
                            seen_w.lock().unwrap().insert(i);
                        }
                    }
                }
            }
        }
    });

    let accepted = Arc::new(Mutex::new(Vec::<u64>::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, base, accepted, next) = (c.clone(), base.clone(), accepted.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let resp = c
                    .post(format!("{base}/hook/flood"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"run": {run}, "i": {i}}}"#))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => accepted.lock().unwrap().push(i),
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "saltgate exited with {exit}");
    let accepted: HashSet<u64> = accepted.lock().unwrap().iter().copied().collect();
    assert!(
        accepted.len() > 100,
        "only {} hooks accepted before SIGTERM",
        accepted.len()
    );
    // Everything that got 200 must show up on the master's bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<u64> = {
            let seen = seen.lock().unwrap();
            accepted
                .iter()
                .filter(|i| !seen.contains(i))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted hooks never reached the bus, e.g. {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    counter.abort();
    eprintln!(
        "SIGTERM mid-flood: {} hooks accepted, all on the master bus",
        accepted.len()
    );
}

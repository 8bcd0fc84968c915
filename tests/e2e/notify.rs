//! `Type=notify` against a real master: the real `saltgate` binary, started before the master's
//! event bus sockets are in its `sock_dir` (as at boot, when the master comes up after), tells
//! systemd only that it is waiting; READY=1 comes once it is attached to the real bus, and a
//! hook sent right after READY=1 is on the master's bus.

use std::sync::Arc;
use std::time::Duration;

use saltgate::salt::EventBus;
use saltgate::salt::wire::payload::to_json;

use crate::gate::blocking;
use crate::support::{salt, watch};

#[path = "../shared/notify_socket.rs"]
mod notify_socket;

use notify_socket::{NotifySocket, free_port};

/// The next datagram on `socket` within `secs`, waited for off the runtime.
async fn next(socket: &Arc<NotifySocket>, secs: u64) -> Option<String> {
    let socket = Arc::clone(socket);
    blocking(move || socket.recv(Duration::from_secs(secs))).await
}

#[tokio::test]
async fn ready_only_once_attached_to_the_real_master_bus() {
    let sandbox = blocking(salt::shared).await;
    // A sock_dir of saltgate's own inside the sandbox root (root_dir applies to it), empty for
    // now: the master's sockets are linked into it later.
    let sock_dir = sandbox.root().join(format!("nt{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = Arc::new(NotifySocket::bind());
    let port = free_port();
    let mut config = sandbox.master_config().clone();
    config.insert("sock_dir".into(), sock_dir.display().to_string().into());
    let extra: serde_yaml::Mapping = serde_yaml::from_str(&format!(
        "rest_cherrypy: {{host: 127.0.0.1, port: {port}, disable_ssl: true, \
         webhook_disable_auth: true, stats_disable_auth: true}}\nsaltgate: {{bus: master}}\n"
    ))
    .unwrap();
    config.extend(extra);
    let config_file = dir.path().join("master");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(&config_file)
        .env("NOTIFY_SOCKET", socket.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let waiting = next(&socket, 15).await;
    assert_eq!(
        waiting.as_deref(),
        Some(
            format!(
                "STATUS=Listening on 127.0.0.1:{port}; waiting for the Salt master's event bus\n"
            )
            .as_str()
        )
    );
    let early = next(&socket, 2).await;
    assert_eq!(
        early, None,
        "saltgate told systemd something before the bus was there"
    );

    // The master's sockets appear.
    for name in ["master_event_pub.ipc", "master_event_pull.ipc"] {
        std::os::unix::fs::symlink(sandbox.sock_dir().join(name), sock_dir.join(name)).unwrap();
    }
    let ready = next(&socket, 15).await;
    assert_eq!(
        ready.as_deref(),
        Some(
            format!(
                "READY=1\nSTATUS=Serving on 127.0.0.1:{port}; Salt master event bus connected\n"
            )
            .as_str()
        )
    );

    // Ready means attached: /metrics says so, and a hook sent now reaches the master's bus.
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let metrics = c
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("saltgate_bus_connected{kind=\"master\"} 1"),
        "{metrics}"
    );
    let cfg =
        saltgate::config::Config::load(&sandbox.master_config_file(), &Default::default()).unwrap();
    let watcher = watch::master_bus(&cfg).await;
    let mut sub = watcher.subscribe();
    let id = format!("notify-{}", std::process::id());
    let resp = c
        .post(format!("http://127.0.0.1:{port}/hook/e2e/notify"))
        .json(&serde_json::json!({ "id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ev = sub
        .wait_for(Duration::from_secs(10), |e| {
            e.tag == "salt/netapi/hook/e2e/notify"
                && e.get("post")
                    .map(to_json)
                    .is_some_and(|p| p["id"] == id.as_str())
        })
        .await
        .unwrap();
    assert_eq!(ev.tag, "salt/netapi/hook/e2e/notify");
    drop(sub);

    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopping = next(&socket, 15).await;
    assert!(
        stopping
            .as_deref()
            .is_some_and(|s| s.starts_with("STOPPING=1\n")),
        "{stopping:?}"
    );
    let status = blocking(move || child.wait()).await.unwrap();
    assert!(status.success(), "saltgate exited with {status}");
    std::fs::remove_dir_all(&sock_dir).unwrap();
}

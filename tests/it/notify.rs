//! systemd's `Type=notify` protocol, spoken by the real `saltgate` binary to a datagram socket
//! in `$NOTIFY_SOCKET` as systemd would hold it: READY=1 once it serves, RELOADING=1/READY=1 on
//! SIGHUP (which must never end the process), STOPPING=1 on SIGTERM; nothing is READY while the
//! master's event bus is not there. (tests/e2e/notify.rs: the same against a real master.)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../shared/notify_socket.rs"]
mod notify_socket;

use notify_socket::{NotifySocket, free_port};

/// A saltgate child with the receiving end of its notification socket; its stdout (the log,
/// without colour) goes to `log` in its directory.
pub(crate) struct Notified {
    child: Child,
    socket: NotifySocket,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Notified {
    /// Starts `saltgate serve` on a config made of `saltgate_block` (YAML under `saltgate:`).
    fn start(saltgate_block: &str) -> Self {
        Self::start_with(|dir, port| {
            format!(
                "sock_dir: {}\ncachedir: {}\nrest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  \
                 disable_ssl: true\n  webhook_disable_auth: true\nsaltgate:\n{saltgate_block}",
                dir.join("sock").display(),
                dir.join("cache").display(),
            )
        })
    }

    /// Starts `saltgate serve` on the master config `master(dir, port)` returns, written to
    /// `dir/master`; `dir` is the child's own directory, `port` a free one.
    pub(crate) fn start_with(master: impl FnOnce(&std::path::Path, u16) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind();
        let port = free_port();
        std::fs::write(dir.path().join("master"), master(dir.path(), port)).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_saltgate"))
            .args(["serve", "--config"])
            .arg(dir.path().join("master"))
            .env("NOTIFY_SOCKET", socket.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            socket,
            port,
            dir,
        }
    }

    /// The child's directory (its config is `master` there).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Rewrites the child's config file.
    pub(crate) fn write_master(&self, text: &str) {
        std::fs::write(self.dir().join("master"), text).unwrap();
    }

    /// What the child has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("log")).unwrap()
    }

    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.recv(timeout)
    }

    pub(crate) fn expect(&self, what: &str) -> String {
        self.recv(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no datagram from saltgate; expected {what}"))
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("saltgate did not exit within 30 s");
    }

    fn get_root(&self) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}/", self.port))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    }
}

fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[test]
fn ready_reload_and_stop_are_told_to_systemd() {
    let mut gate = Notified::start("  bus: builtin\n");
    let ready = gate.expect("READY=1");
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=Serving on 127.0.0.1:{} (built-in event bus, no Salt master)\n",
            gate.port
        )
    );
    // Ready means serving: the first request after READY=1 is answered.
    assert_eq!(gate.get_root(), 200);

    // systemctl reload: RELOADING=1 with the monotonic time, then READY=1; still serving.
    for _ in 0..2 {
        let before = monotonic_usec();
        gate.signal("-HUP");
        let reloading = gate.expect("RELOADING=1");
        let lines: Vec<&str> = reloading.lines().collect();
        assert_eq!(lines[0], "RELOADING=1", "{reloading}");
        let stamp: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{reloading}"))
            .parse()
            .unwrap();
        assert!(
            stamp >= before && stamp <= monotonic_usec(),
            "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC now ({before})"
        );
        assert_eq!(lines[2], "STATUS=Reloading the configuration");
        assert!(
            gate.expect("READY=1")
                .starts_with("READY=1\nSTATUS=Serving on ")
        );
        assert!(gate.running(), "SIGHUP ended saltgate");
        assert_eq!(gate.get_root(), 200);
    }

    gate.signal("-TERM");
    assert_eq!(
        gate.expect("STOPPING=1"),
        "STOPPING=1\nSTATUS=Shutting down: finishing in-flight requests\n"
    );
    assert!(gate.wait_exit().success());
    assert_eq!(
        gate.recv(Duration::from_millis(300)),
        None,
        "a datagram after STOPPING=1"
    );
}

#[test]
fn not_ready_until_the_master_bus_is_there() {
    // `bus: master` with a sock_dir where no master has its sockets.
    let mut gate = Notified::start("  bus: master\n");
    assert_eq!(
        gate.expect("the waiting status"),
        format!(
            "STATUS=Listening on 127.0.0.1:{}; waiting for the Salt master's event bus\n",
            gate.port
        )
    );
    assert_eq!(
        gate.recv(Duration::from_secs(2)),
        None,
        "told systemd something while waiting"
    );
    // A SIGHUP before READY=1 is no reload to announce, and must not end the process.
    gate.signal("-HUP");
    assert_eq!(gate.recv(Duration::from_millis(500)), None);
    assert!(gate.running(), "SIGHUP during start-up ended saltgate");
    gate.signal("-TERM");
    assert!(gate.expect("STOPPING=1").starts_with("STOPPING=1\n"));
    assert!(gate.wait_exit().success());
}

#[test]
fn without_notify_socket_nothing_changes() {
    // The same binary outside systemd: SIGHUP is still harmless, SIGTERM still drains.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("master");
    std::fs::write(
        &config,
        format!("rest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\nsaltgate:\n  bus: builtin\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "saltgate did not start");
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, pid.as_str()])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended saltgate");
    kill("-TERM");
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("Configuration reloaded (SIGHUP)"), "{log}");
    assert!(log.contains("Shutdown signal received"), "{log}");
}

/// Posts a GitHub-signed hook (signed with `secret`) to `/hook/deploy`; the status.
fn post_signed(port: u16, secret: &[u8], delivery: &str) -> u16 {
    use saltgate::security::secret::Secret;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let headers =
        saltgate::security::signature::github::sign(&Secret::new(secret.to_vec()).unwrap(), body);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/hook/deploy"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .timeout(Duration::from_secs(5))
            .body(body.to_vec());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    })
}

#[test]
fn sighup_rotates_a_secret_and_a_bad_config_is_refused() {
    let rule = |file: &std::path::Path| {
        format!(
            "  bus: builtin\n  hooks:\n    - path: deploy\n      auth: none\n      \
             verify: {{github: {{secret_file: {}}}}}\n",
            file.display()
        )
    };
    let secrets = tempfile::tempdir().unwrap();
    let (old, new) = (secrets.path().join("old"), secrets.path().join("new"));
    std::fs::write(&old, "old-s3cret").unwrap();
    std::fs::write(&new, "new-s3cret").unwrap();
    let gate = Notified::start(&rule(&old));
    gate.expect("READY=1");
    assert_eq!(post_signed(gate.port, b"old-s3cret", "d1"), 200);
    assert_eq!(post_signed(gate.port, b"new-s3cret", "d2"), 401);

    // Rotate: the rule now names the new secret's file. Once READY=1 follows RELOADING=1 the
    // new secret is in force and the retired one is refused.
    let text = std::fs::read_to_string(gate.dir().join("master")).unwrap();
    gate.write_master(&text.replace(&rule(&old), &rule(&new)));
    gate.signal("-HUP");
    assert!(gate.expect("RELOADING=1").starts_with("RELOADING=1\n"));
    assert!(
        gate.expect("READY=1")
            .starts_with("READY=1\nSTATUS=Serving on ")
    );
    assert_eq!(post_signed(gate.port, b"new-s3cret", "d3"), 200);
    assert_eq!(post_signed(gate.port, b"old-s3cret", "d4"), 401);

    // A config that does not load (a secret file that is not there) is refused, said so to
    // systemd, and the running rules stay: the new secret keeps working.
    let broken = secrets.path().join("missing");
    gate.write_master(&text.replace(&rule(&old), &rule(&broken)));
    gate.signal("-HUP");
    gate.expect("RELOADING=1");
    let refused = gate.expect("READY=1");
    assert!(
        refused.contains("STATUS=Reload refused"),
        "no refusal told to systemd: {refused}"
    );
    assert_eq!(post_signed(gate.port, b"new-s3cret", "d5"), 200);
    assert_eq!(post_signed(gate.port, b"old-s3cret", "d6"), 401);
}

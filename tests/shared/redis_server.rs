//! A real `redis-server` for a test (Debian's package, `scripts/test` installs it): started on a
//! free loopback port without persistence, killed by its pid when dropped. Shared by
//! tests/it/shared_redis.rs, tests/e2e/cluster.rs and tests/e2e/shared.rs (`#[path]`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use saltgate::config::shared::{FailMode, SharedConfig};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` of this test: no snapshots, no append-only file, loopback only. Killed
/// (SIGKILL, by its pid) when dropped.
pub(crate) struct Redis {
    port: u16,
    child: Option<Child>,
    /// Serves TLS only (tests/fixtures/tls: `server.crt` for 127.0.0.1, signed by `ca.crt`).
    tls: bool,
}

/// tests/fixtures/tls/`name`.
fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

impl Redis {
    /// Starts one on a free loopback port and waits until it answers `PING`.
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts one that serves TLS only, with the fixture certificate for 127.0.0.1.
    #[allow(dead_code, reason = "used by the it suite only")]
    pub(crate) fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            child: None,
            tls,
        };
        redis.restart();
        redis
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The fixture CA that signed the TLS server's certificate, as PEM.
    #[allow(dead_code, reason = "used by the it suite only")]
    pub(crate) fn ca_pem() -> Vec<u8> {
        std::fs::read(fixture("ca.crt")).unwrap()
    }

    /// `saltgate.shared` for this server. The operation timeout is 2 s, not the 50 ms default:
    /// these tests run beside the whole suite on a couple of busy cores, where a loopback answer
    /// can take longer than 50 ms, and they are about what is shared, not about slowness (a
    /// killed Redis refuses at once whatever the timeout).
    pub(crate) fn config(&self, fail: FailMode) -> SharedConfig {
        let mut config = SharedConfig::new(&self.url(), fail).unwrap();
        config.timeout = Duration::from_secs(2);
        config
    }

    /// Starts it again on the same port (after [`Redis::kill`]).
    pub(crate) fn restart(&mut self) {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: these tests need Debian's redis-server \
             (apt-get install -y redis-server; scripts/test installs it)"
        );
        assert!(self.child.is_none(), "redis-server is running already");
        let mut command = Command::new(REDIS_SERVER);
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &fixture("server.crt")])
                .args(["--tls-key-file", &fixture("server.key")])
                .args(["--tls-ca-cert-file", &fixture("ca.crt")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("redis-server on port {} exited: {status}", self.port);
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} does not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `PING` over a plain socket: `+PONG` (a TLS server: its port accepts connections).
    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// SIGKILL by pid, and reaped: the port is closed when this returns.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

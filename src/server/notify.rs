//! systemd's readiness protocol (`Type=notify`): one datagram per state change, written to the
//! unix datagram socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! What saltgate tells systemd, and when:
//! - `READY=1` once the listener is bound and the event bus is connected ([`announce_ready`]).
//!   Until then `STATUS=` says what it waits for, so `systemctl status` shows it.
//! - `RELOADING=1` (with `MONOTONIC_USEC=`, which `Type=notify-reload` needs) when a SIGHUP
//!   arrives, then `READY=1` when the reload is over, applied or refused; `STATUS=` then says
//!   which ([`super::reload::on_hangup`]).
//! - `STOPPING=1` when the shutdown signal arrives, before the drain.
//! - `STATUS=` whenever the event bus connection goes down or comes back.
//!
//! Written here rather than with a crate: the protocol is one `sendto` of `KEY=VALUE` lines, std
//! has the socket (and abstract addresses), and `unsafe_code` stays forbidden. Without
//! `$NOTIFY_SOCKET` (not started by systemd) every call does nothing. A failed send is logged
//! once at debug level and never stops serving: systemd then times the start out itself.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use crate::salt::SharedBus;

/// The phase systemd has last been told about; later messages must not contradict it.
const STARTING: u8 = 0;
const READY: u8 = 1;
const RELOADING: u8 = 2;
const STOPPING: u8 = 3;

/// Longest `STATUS=` text sent (systemd shows one line of it).
const MAX_STATUS: usize = 200;

/// How often the bus state is looked at while waiting for it at start.
const STARTUP_POLL: Duration = Duration::from_millis(100);

/// How often the bus state is looked at once serving, to keep `STATUS=` current.
const SERVING_POLL: Duration = Duration::from_secs(2);

/// A handle on systemd's notification socket; cheap to clone, a no-op when not under systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
    phase: AtomicU8,
    send_failed: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A notifier for the value of `$NOTIFY_SOCKET` (`None`: not under systemd). An address
    /// saltgate cannot use is logged and gives a disabled notifier.
    pub fn from_socket_var(value: Option<&OsStr>) -> Self {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Self::disabled();
        };
        match open(value) {
            Ok((socket, addr)) => Self {
                inner: Some(Arc::new(Inner {
                    socket,
                    addr,
                    phase: AtomicU8::new(STARTING),
                    send_failed: AtomicBool::new(false),
                })),
            },
            Err(e) => {
                tracing::warn!(
                    notify_socket = %value.to_string_lossy(),
                    error = %e,
                    "NOTIFY_SOCKET is not usable; systemd will not be told when saltgate is ready"
                );
                Self::disabled()
            }
        }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `READY=1` with a status line: start-up or a reload is complete. Not sent once stopping
    /// has been announced. Returns whether it was sent.
    pub fn ready(&self, status: &str) -> bool {
        self.transition(&[STARTING, RELOADING], READY, &["READY=1"], Some(status))
    }

    /// `RELOADING=1` and the monotonic time: a reload has begun. Sent only while ready (a
    /// SIGHUP during start-up or shutdown is not a reload systemd should wait for). Returns
    /// whether it was sent; when it was, [`Self::ready`] must follow.
    pub fn reloading(&self) -> bool {
        let usec = monotonic_usec();
        let stamp = format!("MONOTONIC_USEC={usec}");
        self.transition(
            &[READY],
            RELOADING,
            &["RELOADING=1", &stamp],
            Some("Reloading the configuration"),
        )
    }

    /// `STOPPING=1`: shutdown has begun. Sent once.
    pub fn stopping(&self) {
        self.transition(
            &[STARTING, READY, RELOADING],
            STOPPING,
            &["STOPPING=1"],
            Some("Shutting down: finishing in-flight requests"),
        );
    }

    /// A new status line, in any phase but stopping.
    pub fn status(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        if inner.phase.load(Ordering::Acquire) != STOPPING {
            self.send(&message(&[], Some(status)));
        }
    }

    fn phase(&self) -> Option<u8> {
        self.inner.as_ref().map(|i| i.phase.load(Ordering::Acquire))
    }

    fn transition(&self, from: &[u8], to: u8, lines: &[&str], status: Option<&str>) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let moved = inner
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                from.contains(&p).then_some(to)
            })
            .is_ok();
        if moved {
            self.send(&message(lines, status));
        }
        moved
    }

    fn send(&self, msg: &str) {
        let Some(inner) = &self.inner else { return };
        if let Err(e) = inner.socket.send_to_addr(msg.as_bytes(), &inner.addr) {
            if !inner.send_failed.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %e, "Could not notify systemd");
            }
        }
    }
}

/// The datagram: one `KEY=VALUE` per line, the status made one line and bounded.
fn message(lines: &[&str], status: Option<&str>) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    if let Some(status) = status {
        out.push_str("STATUS=");
        for (n, c) in status.chars().enumerate() {
            if n == MAX_STATUS {
                break;
            }
            out.push(if c.is_control() { ' ' } else { c });
        }
        out.push('\n');
    }
    out
}

/// The socket and address for a `$NOTIFY_SOCKET` value: an absolute path or `@abstract`.
fn open(value: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => abstract_addr(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(value))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or an @abstract name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // A full socket buffer must never stall the runtime: the message is then lost instead.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket addresses exist on Linux only",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC=` with.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(t.tv_nsec).unwrap_or_default();
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// The status line for the bus state.
pub(super) fn serving_status(listening: &str, bus: &SharedBus) -> (bool, String) {
    let status = bus.status();
    let text = match (status.kind, status.connected) {
        ("builtin", _) => format!("Serving on {listening} (built-in event bus, no Salt master)"),
        (_, true) => format!("Serving on {listening}; Salt master event bus connected"),
        (_, false) => {
            format!("Serving on {listening}; Salt master event bus disconnected, reconnecting")
        }
    };
    (status.connected, text)
}

/// Tells systemd `READY=1` once `bus` is connected (the listener is bound before this is
/// called), then keeps `STATUS=` in step with the bus. Runs until the notifier is stopping;
/// returns at once when not under systemd.
pub async fn announce_ready(notifier: Notifier, bus: SharedBus, listening: String) {
    if !notifier.is_enabled() {
        return;
    }
    let mut waiting_said = false;
    loop {
        let (connected, text) = serving_status(&listening, &bus);
        if connected {
            if !notifier.ready(&text) {
                return;
            }
            break;
        }
        if notifier.phase() == Some(STOPPING) {
            return;
        }
        if !waiting_said {
            waiting_said = true;
            notifier.status(&format!(
                "Listening on {listening}; waiting for the Salt master's event bus"
            ));
            tracing::info!(
                "Waiting for the Salt master's event bus before telling systemd saltgate is ready"
            );
        }
        tokio::time::sleep(STARTUP_POLL).await;
    }
    let mut last = true;
    loop {
        tokio::time::sleep(SERVING_POLL).await;
        if notifier.phase() == Some(STOPPING) {
            return;
        }
        let (connected, text) = serving_status(&listening, &bus);
        if connected != last {
            last = connected;
            notifier.status(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_socket_var(Some(path.as_os_str()));
        assert!(n.is_enabled());
        (dir, rx, n)
    }

    fn recv(rx: &UnixDatagram) -> String {
        let mut buf = [0u8; 1024];
        let len = rx.recv(&mut buf).unwrap();
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    fn nothing_queued(rx: &UnixDatagram) {
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1024];
        let got = rx.recv(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "unexpected datagram {got:?}"
        );
        rx.set_nonblocking(false).unwrap();
    }

    #[test]
    fn lifecycle_messages_in_order() {
        let (_dir, rx, n) = listener();
        assert!(!n.reloading(), "no reload before ready");
        assert!(n.ready("Serving on 127.0.0.1:8000"));
        assert_eq!(recv(&rx), "READY=1\nSTATUS=Serving on 127.0.0.1:8000\n");
        assert!(!n.ready("again"), "READY=1 once per start or reload");
        assert!(n.reloading());
        let msg = recv(&rx);
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(lines.next(), Some("STATUS=Reloading the configuration"));
        assert!(n.ready("Serving"));
        assert_eq!(recv(&rx), "READY=1\nSTATUS=Serving\n");
        n.stopping();
        assert_eq!(
            recv(&rx),
            "STOPPING=1\nSTATUS=Shutting down: finishing in-flight requests\n"
        );
        n.stopping();
        assert!(!n.ready("late"), "nothing contradicts STOPPING=1");
        assert!(!n.reloading());
        n.status("late");
        nothing_queued(&rx);
    }

    #[test]
    fn stopping_before_ready_suppresses_ready() {
        let (_dir, rx, n) = listener();
        n.status("waiting");
        assert_eq!(recv(&rx), "STATUS=waiting\n");
        n.stopping();
        assert!(recv(&rx).starts_with("STOPPING=1\n"));
        assert!(!n.ready("too late"));
        nothing_queued(&rx);
    }

    #[test]
    fn status_is_one_bounded_line() {
        let long = "x".repeat(1000);
        assert_eq!(message(&[], Some("a\nREADY=1\rb")), "STATUS=a READY=1 b\n");
        assert_eq!(
            message(&[], Some(&long)).len(),
            "STATUS=\n".len() + MAX_STATUS
        );
    }

    #[test]
    fn abstract_socket_addresses() {
        let name = format!("saltgate-notify-test-{}", std::process::id());
        let addr = abstract_addr(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_socket_var(Some(OsStr::new(&format!("@{name}"))));
        assert!(n.ready("ok"));
        assert_eq!(recv(&rx), "READY=1\nSTATUS=ok\n");
    }

    #[test]
    fn unusable_addresses_disable_it() {
        assert!(!Notifier::from_socket_var(None).is_enabled());
        assert!(!Notifier::from_socket_var(Some(OsStr::new(""))).is_enabled());
        assert!(!Notifier::from_socket_var(Some(OsStr::new("relative/path"))).is_enabled());
        assert!(!Notifier::from_socket_var(Some(OsStr::new("vsock:2:1234"))).is_enabled());
        // A socket that is gone: sends fail quietly, serving goes on.
        let n = Notifier::from_socket_var(Some(OsStr::new("/nonexistent/saltgate/notify")));
        assert!(n.is_enabled());
        assert!(n.ready("nobody listens"));
    }

    #[tokio::test]
    async fn ready_on_the_builtin_bus_at_once() {
        let (_dir, rx, n) = listener();
        let bus: SharedBus = Arc::new(crate::salt::bus::memory::MemoryBus::new(16));
        tokio::spawn(announce_ready(n.clone(), bus, "127.0.0.1:1".into()));
        let msg = tokio::task::spawn_blocking(move || recv(&rx))
            .await
            .unwrap();
        assert_eq!(
            msg,
            "READY=1\nSTATUS=Serving on 127.0.0.1:1 (built-in event bus, no Salt master)\n"
        );
    }

    /// The master's publisher socket appears only after a while: READY=1 waits for it.
    /// (tests/e2e/notify.rs shows the same against a real master.)
    #[tokio::test]
    async fn ready_waits_for_the_master_bus() {
        use crate::salt::bus::ipc::{Endpoint, IpcBus, IpcBusConfig};
        let (dir, rx, n) = listener();
        let publisher = dir.path().join("master_event_pub.ipc");
        let puller = dir.path().join("master_event_pull.ipc");
        let bus: SharedBus = Arc::new(IpcBus::start(IpcBusConfig::new(
            Endpoint::Unix(publisher.clone()),
            Endpoint::Unix(puller),
        )));
        tokio::spawn(announce_ready(
            n.clone(),
            Arc::clone(&bus),
            "127.0.0.1:1".into(),
        ));
        let rx = Arc::new(rx);
        let rx2 = Arc::clone(&rx);
        let first = tokio::task::spawn_blocking(move || recv(&rx2))
            .await
            .unwrap();
        assert_eq!(
            first,
            "STATUS=Listening on 127.0.0.1:1; waiting for the Salt master's event bus\n"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!bus.status().connected);
        let _publisher = tokio::net::UnixListener::bind(&publisher).unwrap();
        let rx2 = Arc::clone(&rx);
        let msg = tokio::task::spawn_blocking(move || recv(&rx2))
            .await
            .unwrap();
        assert_eq!(
            msg,
            "READY=1\nSTATUS=Serving on 127.0.0.1:1; Salt master event bus connected\n"
        );
        assert!(bus.status().connected);
    }
}

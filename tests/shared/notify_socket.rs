//! The receiving end of systemd's notification socket, as systemd holds it for a `Type=notify`
//! service: a unix datagram socket whose path goes into the child's `$NOTIFY_SOCKET`. Shared by
//! tests/it/notify.rs and tests/e2e/notify.rs (`#[path]`).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// A bound notification socket in a temporary directory.
pub(super) struct NotifySocket {
    rx: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub(super) fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Self {
            rx,
            path,
            _dir: dir,
        }
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The next datagram, or `None` when none comes within `timeout`.
    pub(super) fn recv(&self, timeout: Duration) -> Option<String> {
        self.rx.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.rx.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// A loopback port nothing listens on right now, for a child process to bind.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

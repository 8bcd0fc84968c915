//! The ZeroMQ request socket to the master's `ret_port`.
//!
//! Facts from WIRE.md §1.6 that shape this file:
//! - a REQ socket that timed out is unusable (`EFSM`), so it is dropped and a new one made;
//! - requests queued while the master is down run when it comes back, so sockets use
//!   `IMMEDIATE=1` (a send with no live connection fails fast) and `LINGER=0` (nothing is left
//!   queued when a socket is dropped);
//! - replies carry no request id and come back out of order when pipelined, so each socket has at
//!   most one request in flight; concurrency comes from a pool of sockets;
//! - sockets never set `ZMQ_IDENTITY` (the master's `ROUTER_HANDOVER` would hand one socket's
//!   replies to another).
//!
//! `zmq` is blocking, so each request runs on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::salt::error::SaltError;

/// A pool of REQ sockets connected to one endpoint.
pub struct ReqPool {
    ctx: zmq::Context,
    endpoint: String,
    idle: Mutex<Vec<zmq::Socket>>,
    permits: Arc<Semaphore>,
    send_timeout: Duration,
}

impl std::fmt::Debug for ReqPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqPool")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ReqPool {
    /// A pool of at most `size` sockets to `endpoint` (e.g. `tcp://127.0.0.1:4506`).
    pub fn new(endpoint: impl Into<String>, size: usize, send_timeout: Duration) -> Self {
        Self {
            ctx: zmq::Context::new(),
            endpoint: endpoint.into(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            send_timeout,
        }
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request and waits at most `timeout` for its reply (waiting for a free socket
    /// counts against the same budget).
    pub async fn request(
        self: &Arc<Self>,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, SaltError> {
        let started = tokio::time::Instant::now();
        let permit = tokio::time::timeout(timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| SaltError::Timeout(timeout))?
            .map_err(|_| SaltError::Unavailable("request pool closed".into()))?;
        let remaining = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.blocking_request(&payload, remaining)
        })
        .await
        .map_err(|e| SaltError::Unavailable(format!("request task failed: {e}")))?
    }

    fn blocking_request(&self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, SaltError> {
        let socket = match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(socket) => socket,
            None => self.connect()?,
        };
        let recv_ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        socket.set_rcvtimeo(recv_ms).map_err(zmq_err)?;
        match socket.send(payload, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                return Err(SaltError::Unavailable(format!(
                    "no connection to the master's request server at {}",
                    self.endpoint
                )));
            }
            Err(e) => return Err(zmq_err(e)),
        }
        match socket.recv_bytes(0) {
            Ok(reply) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(socket);
                }
                Ok(reply)
            }
            // The socket is dropped here (LINGER 0): a REQ socket that timed out cannot be reused,
            // and nothing of this request may stay queued.
            Err(zmq::Error::EAGAIN) => Err(SaltError::Timeout(timeout)),
            Err(e) => Err(zmq_err(e)),
        }
    }

    fn connect(&self) -> Result<zmq::Socket, SaltError> {
        let socket = self.ctx.socket(zmq::REQ).map_err(zmq_err)?;
        socket.set_linger(0).map_err(zmq_err)?;
        socket.set_immediate(true).map_err(zmq_err)?;
        let send_ms = i32::try_from(self.send_timeout.as_millis()).unwrap_or(i32::MAX);
        socket.set_sndtimeo(send_ms).map_err(zmq_err)?;
        socket.set_reconnect_ivl(100).map_err(zmq_err)?;
        socket.set_reconnect_ivl_max(5000).map_err(zmq_err)?;
        socket.set_tcp_keepalive(1).map_err(zmq_err)?;
        socket.connect(&self.endpoint).map_err(zmq_err)?;
        Ok(socket)
    }
}

fn zmq_err(e: zmq::Error) -> SaltError {
    SaltError::Unavailable(format!("zeromq: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_listening_fails_fast_with_unavailable() {
        // A port that nothing listens on: bind then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = Arc::new(ReqPool::new(
            format!("tcp://127.0.0.1:{port}"),
            2,
            Duration::from_millis(200),
        ));
        let started = std::time::Instant::now();
        let err = pool
            .request(b"x".to_vec(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, SaltError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn silent_server_times_out_and_socket_is_replaced() {
        // A ROUTER that reads requests but never answers the first one, then answers.
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let first = router.recv_multipart(0).unwrap();
            assert_eq!(first.last().unwrap(), b"one");
            let second = router.recv_multipart(0).unwrap();
            assert_eq!(second.last().unwrap(), b"two");
            let mut reply = second.clone();
            *reply.last_mut().unwrap() = b"answer".to_vec();
            router.send_multipart(reply, 0).unwrap();
            // Keep the socket open until the client has read the reply.
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        });
        let pool = Arc::new(ReqPool::new(endpoint, 1, Duration::from_secs(1)));
        let err = pool
            .request(b"one".to_vec(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, SaltError::Timeout(_)));
        // A fresh socket is used: no EFSM.
        let reply = pool
            .request(b"two".to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply, b"answer");
        done_tx.send(()).unwrap();
        server.join().unwrap();
    }
}

//! The master's own event bus: `master_event_pub.ipc` to read, `master_event_pull.ipc` to fire
//! (or the `tcp_master_pub_port` / `tcp_master_pull_port` pair with `ipc_mode: tcp`).
//!
//! Reading: one long-lived connection to the publisher; frames are decoded with per-frame framing
//! detection and a maximum size; every event goes into one bounded broadcast queue for the
//! in-process subscribers. After EOF or an error the reader reconnects with backoff (100 ms
//! doubling to 5 s) and tells subscribers with [`BusItem::Disconnected`] / [`BusItem::Connected`].
//!
//! Firing: one pusher task owns the pull connection and writes queued events in batches. The
//! pull side's framing differs by Salt version and a wrong guess is dropped silently by the
//! master (WIRE.md §2.3), so it is either configured or detected by echo: a probe event is
//! pushed length-prefixed, then bare, and the one that comes back on the publisher wins. The
//! prefixed probe is padded so that its length's last byte is `0xc1`, a byte msgpack never uses:
//! a bare-framing master rejects it outright instead of misreading it as a valid event. The
//! result is kept until the publisher connection drops (the master may have been upgraded).
//!
//! Security: these sockets have no authentication; whoever can connect can read every event and
//! inject any. saltgate must run as the master's user (or group, to read only).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BusItem, BusStatus, DEFAULT_QUEUE_BYTES, EventBus, Subscription, Tap, Tapped, ring};
use crate::salt::error::SaltError;
use crate::salt::event::Event;
use crate::salt::wire::framing::{Decoded, Framing, decode_frame, encode_frame, frame_body};

/// Where one side of the bus listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path (`ipc_mode: ipc`).
    Unix(PathBuf),
    /// A TCP address (`ipc_mode: tcp`).
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// The pull side's framing: detected, or fixed by config (`event_pull_framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFraming {
    /// Detect by echo.
    Auto,
    /// Always this framing.
    Fixed(Framing),
}

/// Settings of the master bus connection.
#[derive(Debug, Clone)]
pub struct IpcBusConfig {
    /// The publisher (events are read here).
    pub publisher: Endpoint,
    /// The puller (events are fired here).
    pub puller: Endpoint,
    /// The pull side's framing.
    pub pull_framing: PullFraming,
    /// The largest frame read from the publisher.
    pub max_frame: usize,
    /// Items each in-process subscriber may have queued before it lags.
    pub subscriber_capacity: usize,
    /// Bytes of events the subscribers' shared queue holds before the slowest lag.
    pub subscriber_bytes: usize,
    /// Events waiting to be written before `fire` answers busy.
    pub fire_queue: usize,
    /// How long to wait for a framing probe's echo.
    pub probe_timeout: Duration,
    /// How long `fire` waits for its event to be written.
    pub fire_timeout: Duration,
}

impl IpcBusConfig {
    /// Defaults for a publisher/puller pair.
    pub fn new(publisher: Endpoint, puller: Endpoint) -> Self {
        Self {
            publisher,
            puller,
            pull_framing: PullFraming::Auto,
            max_frame: 16 << 20,
            subscriber_capacity: 8192,
            subscriber_bytes: DEFAULT_QUEUE_BYTES,
            fire_queue: 65536,
            probe_timeout: Duration::from_millis(1500),
            fire_timeout: Duration::from_secs(10),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
type Conn = Box<dyn Io>;

async fn connect(endpoint: &Endpoint) -> std::io::Result<Conn> {
    match endpoint {
        Endpoint::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicBool,
    /// Bumped on every publisher (re)connection.
    generation: AtomicU64,
    /// 0 unknown, 1 prefixed, 2 bare.
    pub_framing: AtomicU8,
    pull_framing: AtomicU8,
    events_in: AtomicU64,
    events_out: AtomicU64,
    tap: OnceLock<Tap>,
}

impl Shared {
    fn tap(&self, item: Tapped<'_>) {
        if let Some(tap) = self.tap.get() {
            (tap.call)(item);
        }
    }
}

fn framing_code(f: Option<Framing>) -> u8 {
    match f {
        None => 0,
        Some(Framing::Prefixed) => 1,
        Some(Framing::Bare) => 2,
    }
}

fn framing_from(code: u8) -> Option<Framing> {
    match code {
        1 => Some(Framing::Prefixed),
        2 => Some(Framing::Bare),
        _ => None,
    }
}

/// One event, or several in order (the spool's batches), with one answer.
enum Packed {
    One(Vec<u8>),
    Many(Vec<bytes::Bytes>),
}

impl Packed {
    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(v) => v.len(),
        }
    }
}

struct FireRequest {
    packed: Packed,
    ack: oneshot::Sender<Result<(), SaltError>>,
}

/// The master's event bus.
#[derive(Debug)]
pub struct IpcBus {
    tx: ring::Sender,
    fire_tx: mpsc::Sender<FireRequest>,
    shared: Arc<Shared>,
    fire_timeout: Duration,
    stop: CancellationToken,
}

impl Drop for IpcBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl IpcBus {
    /// Starts the reader and the pusher. Must be called inside a tokio runtime. Returns at once;
    /// the connection comes up in the background.
    pub fn start(config: IpcBusConfig) -> Self {
        let tx = ring::Sender::new(config.subscriber_capacity.max(16), config.subscriber_bytes);
        let (fire_tx, fire_rx) = mpsc::channel(config.fire_queue.max(1));
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let reader = Reader {
            config: config.clone(),
            tx: tx.clone(),
            shared: Arc::clone(&shared),
        };
        tokio::spawn(stop.clone().run_until_cancelled_owned(reader.run()));
        let pusher = Pusher {
            config: config.clone(),
            tx: tx.clone(),
            shared: Arc::clone(&shared),
            conn: None,
            framing: None,
            generation: 0,
            probe_seq: 0,
        };
        tokio::spawn(stop.clone().run_until_cancelled_owned(pusher.run(fire_rx)));
        Self {
            tx,
            fire_tx,
            shared,
            fire_timeout: config.fire_timeout,
            stop,
        }
    }

    /// Waits until the publisher connection is up, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), SaltError> {
        let mut sub = self.subscribe();
        if self.shared.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Err(_) => return Err(SaltError::Timeout(timeout)),
                Ok(None) => return Err(SaltError::Unavailable("event bus closed".into())),
                Ok(Some(BusItem::Connected)) => return Ok(()),
                Ok(Some(_)) => {
                    if self.shared.connected.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl EventBus for IpcBus {
    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }

    fn fire(&self, event: Event) -> BoxFuture<'_, Result<(), SaltError>> {
        Box::pin(async move { self.send(Packed::One(event.pack()?)).await })
    }

    fn fire_packed(&self, packed: Vec<bytes::Bytes>) -> BoxFuture<'_, Result<(), SaltError>> {
        Box::pin(self.send(Packed::Many(packed)))
    }

    fn set_tap(&self, tap: Tap) -> bool {
        self.shared.tap.set(tap).is_ok()
    }

    fn status(&self) -> BusStatus {
        BusStatus {
            kind: "master",
            connected: self.shared.connected.load(Ordering::Acquire),
            pull_framing: framing_from(self.shared.pull_framing.load(Ordering::Acquire))
                .map(Framing::as_str),
            events_in: self.shared.events_in.load(Ordering::Relaxed),
            events_out: self.shared.events_out.load(Ordering::Relaxed),
            subscribers: self.tx.receiver_count(),
        }
    }
}

impl IpcBus {
    /// Queues `packed` for the pusher and waits for it to be written.
    async fn send(&self, packed: Packed) -> Result<(), SaltError> {
        let (ack, done) = oneshot::channel();
        self.fire_tx
            .try_send(FireRequest { packed, ack })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    SaltError::BusBusy("the event queue to the master is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    SaltError::Unavailable("the event pusher has stopped".into())
                }
            })?;
        match tokio::time::timeout(self.fire_timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SaltError::Unavailable(
                "the event pusher has stopped".into(),
            )),
            Err(_) => Err(SaltError::Timeout(self.fire_timeout)),
        }
    }
}

struct Reader {
    config: IpcBusConfig,
    tx: ring::Sender,
    shared: Arc<Shared>,
}

impl Reader {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut was_up = true; // log the first failure
        loop {
            match connect(&self.config.publisher).await {
                Ok(conn) => {
                    backoff = Duration::from_millis(100);
                    was_up = true;
                    self.shared.generation.fetch_add(1, Ordering::AcqRel);
                    self.shared.connected.store(true, Ordering::Release);
                    tracing::info!(endpoint = %self.config.publisher, "Connected to the master event bus");
                    self.shared.tap(Tapped::Connected);
                    self.tx.send(BusItem::Connected);
                    let why = self.read_frames(conn).await;
                    self.shared.connected.store(false, Ordering::Release);
                    self.shared.pub_framing.store(0, Ordering::Release);
                    self.shared.tap(Tapped::Disconnected);
                    self.tx.send(BusItem::Disconnected);
                    tracing::warn!(endpoint = %self.config.publisher, reason = %why, "Lost the master event bus; reconnecting");
                }
                Err(e) => {
                    if was_up {
                        tracing::warn!(endpoint = %self.config.publisher, error = %e, "Cannot connect to the master event bus; retrying with backoff");
                        was_up = false;
                    } else {
                        tracing::debug!(endpoint = %self.config.publisher, error = %e, "Master event bus still down");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads until the connection fails; returns why.
    async fn read_frames(&self, mut conn: Conn) -> String {
        let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut start = 0usize;
        loop {
            loop {
                match decode_frame(&buf[start..], self.config.max_frame) {
                    Ok(Decoded::Incomplete) => break,
                    Ok(Decoded::Frame {
                        framing,
                        consumed,
                        start: body,
                    }) => {
                        self.shared
                            .pub_framing
                            .store(framing_code(Some(framing)), Ordering::Release);
                        let frame = &buf[start + body..start + consumed];
                        self.publish(frame);
                        start += consumed;
                    }
                    Err(e) => return e.to_string(),
                }
            }
            if start > 0 {
                buf.drain(..start);
                start = 0;
            }
            if buf.capacity() - buf.len() < 16 << 10 {
                buf.reserve(64 << 10);
            }
            match conn.read_buf(&mut buf).await {
                Ok(0) => return "end of stream".into(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
    }

    fn publish(&self, frame: &[u8]) {
        let tap = self.shared.tap.get();
        let listened = self.tx.receiver_count() > 0;
        if !listened && tap.is_none() {
            // Nobody listens (no stream, no waiting job, no probe, no spool): most of these
            // are the master's echo of our own hooks, and decoding them would only cost CPU.
            self.shared.events_in.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = frame_body(frame).and_then(|body| {
            let tapped = tap.is_some_and(|t| t.wants(&body));
            if !listened && !tapped {
                return Ok((None, false));
            }
            Event::unpack(&body).map(|e| (Some(e), tapped))
        });
        match event {
            Ok((None, _)) => {
                self.shared.events_in.fetch_add(1, Ordering::Relaxed);
            }
            Ok((Some(mut event), tapped)) => {
                if tapped {
                    self.shared.tap(Tapped::Event(&event));
                }
                if !listened {
                    self.shared.events_in.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if event.redact_credentials() {
                    tracing::debug!(tag = %event.tag, "Removed credentials from a master error event");
                }
                self.shared.events_in.fetch_add(1, Ordering::Relaxed);
                self.tx.send(BusItem::Event(Arc::new(event)));
            }
            // Any local root process can write to the bus: skip what cannot be read.
            Err(e) => tracing::warn!(error = %e, "Skipped an unreadable event from the master bus"),
        }
    }
}

struct Pusher {
    config: IpcBusConfig,
    tx: ring::Sender,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    framing: Option<Framing>,
    generation: u64,
    probe_seq: u64,
}

const MAX_BATCH: usize = 512;

impl Pusher {
    async fn run(mut self, mut rx: mpsc::Receiver<FireRequest>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut out = Vec::with_capacity(64 << 10);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut result = self.write_batch(&batch, &mut out).await;
            if result.is_err() && self.conn.is_none() {
                // The connection was stale (e.g. the master restarted): one retry on a new one.
                result = self.write_batch(&batch, &mut out).await;
            }
            match &result {
                Ok(()) => {
                    self.shared.events_out.fetch_add(
                        batch.iter().map(|r| r.packed.len() as u64).sum(),
                        Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = batch.len(), "Could not fire events on the master bus")
                }
            }
            for req in batch.drain(..) {
                let _ = req.ack.send(result.clone());
            }
        }
    }

    async fn write_batch(
        &mut self,
        batch: &[FireRequest],
        out: &mut Vec<u8>,
    ) -> Result<(), SaltError> {
        let framing = self.ready().await?;
        out.clear();
        for req in batch {
            match &req.packed {
                Packed::One(p) => encode_frame(p, framing, out),
                Packed::Many(ps) => {
                    for p in ps {
                        encode_frame(p, framing, out);
                    }
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(SaltError::Unavailable(
                "no connection to the master's event puller".into(),
            ));
        };
        if let Err(e) = conn.write_all(out).await {
            self.conn = None;
            return Err(SaltError::Unavailable(format!(
                "writing to the master's event puller: {e}"
            )));
        }
        Ok(())
    }

    /// Makes sure a live pull connection with a known framing exists.
    async fn ready(&mut self) -> Result<Framing, SaltError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // The publisher reconnected: the master may have restarted or been upgraded.
            self.conn = None;
            self.framing = None;
            self.generation = generation;
        }
        if let Some(conn) = self.conn.as_mut() {
            // The puller never writes to us, so readable means closed.
            let mut probe = [0u8; 1];
            if let Some(r) = conn.read(&mut probe).now_or_never() {
                tracing::debug!(result = ?r.map(|n| n == 0), "Master event puller connection closed");
                self.conn = None;
            }
        }
        if let (Some(_), Some(framing)) = (&self.conn, self.framing) {
            return Ok(framing);
        }
        let framing = match (self.framing, self.config.pull_framing) {
            (Some(f), _) | (None, PullFraming::Fixed(f)) => f,
            (None, PullFraming::Auto) => self.detect().await?,
        };
        if self.conn.is_none() {
            self.conn = Some(self.connect_puller().await?);
        }
        self.framing = Some(framing);
        self.shared
            .pull_framing
            .store(framing_code(Some(framing)), Ordering::Release);
        Ok(framing)
    }

    async fn connect_puller(&self) -> Result<Conn, SaltError> {
        connect(&self.config.puller).await.map_err(|e| {
            SaltError::Unavailable(format!(
                "cannot connect to the master's event puller {}: {e}",
                self.config.puller
            ))
        })
    }

    async fn detect(&mut self) -> Result<Framing, SaltError> {
        if framing_from(self.shared.pub_framing.load(Ordering::Acquire)) == Some(Framing::Prefixed)
        {
            // Only 3006.26+ prefixes the publisher, and those prefix the puller as well.
            return Ok(Framing::Prefixed);
        }
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(SaltError::Unavailable(
                "the master event bus is not connected; cannot detect its framing".into(),
            ));
        }
        for framing in [Framing::Prefixed, Framing::Bare] {
            if self.probe(framing).await? {
                tracing::info!(
                    framing = framing.as_str(),
                    "Detected the master event puller's framing"
                );
                return Ok(framing);
            }
        }
        Err(SaltError::Unavailable(
            "the master did not echo a framing probe; set event_pull_framing".into(),
        ))
    }

    /// Pushes one probe event on a fresh connection; true if it came back on the publisher.
    async fn probe(&mut self, framing: Framing) -> Result<bool, SaltError> {
        self.probe_seq += 1;
        let tag = format!(
            "saltgate/framing-probe/{}/{}",
            std::process::id(),
            self.probe_seq
        );
        let frame = probe_frame(&tag, framing)?;
        let mut sub = Subscription::new(self.tx.subscribe());
        let mut conn = self.connect_puller().await?;
        conn.write_all(&frame)
            .await
            .map_err(|e| SaltError::Unavailable(format!("writing a framing probe: {e}")))?;
        match sub
            .wait_for(self.config.probe_timeout, |e| e.tag == tag)
            .await
        {
            Ok(_) => {
                self.conn = Some(conn);
                Ok(true)
            }
            Err(SaltError::Timeout(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A probe frame; a prefixed one is padded so its length ends in `0xc1` (see the module doc).
fn probe_frame(tag: &str, framing: Framing) -> Result<Vec<u8>, SaltError> {
    for pad in 0..600 {
        let data = rmpv::Value::Map(vec![
            ("probe".into(), rmpv::Value::Boolean(true)),
            ("pad".into(), rmpv::Value::from("p".repeat(pad))),
        ]);
        let packed = Event::new(tag, data).pack()?;
        let mut out = Vec::new();
        encode_frame(&packed, framing, &mut out);
        if framing == Framing::Bare || out[3] == 0xc1 {
            return Ok(out);
        }
    }
    Err(SaltError::Protocol("cannot build a framing probe".into()))
}

/// True if `tag` is one of saltgate's framing probes.
pub fn is_probe_tag(tag: &str) -> bool {
    tag.starts_with("saltgate/framing-probe/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_probe_length_ends_in_c1() {
        let f = probe_frame("saltgate/framing-probe/1/1", Framing::Prefixed).unwrap();
        assert_eq!(f[3], 0xc1);
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
        let long = "x".repeat(300);
        let f = probe_frame(&long, Framing::Prefixed).unwrap();
        assert_eq!(f[3], 0xc1);
    }
}

/// A fake master event bus for fast tests: a publisher and a puller on unix sockets, each with
/// its own framing, republishing what it reads the way the master does (wrong framing is
/// dropped silently, as the real master does).
#[cfg(test)]
pub(crate) mod fake {
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::sync::broadcast;

    use crate::salt::wire::framing::{Framing, encode_frame, frame_body, value_len};

    /// Runs until the returned handle is aborted.
    pub(crate) fn spawn(
        dir: &Path,
        pub_framing: Framing,
        pull_framing: Framing,
    ) -> tokio::task::JoinHandle<()> {
        let publisher = UnixListener::bind(dir.join("master_event_pub.ipc")).unwrap();
        let puller = UnixListener::bind(dir.join("master_event_pull.ipc")).unwrap();
        let (tx, _) = broadcast::channel::<Vec<u8>>(1024);
        let pub_tx = tx.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    Ok((mut s, _)) = publisher.accept() => {
                        let mut rx = pub_tx.subscribe();
                        tasks.spawn(async move {
                            while let Ok(ev) = rx.recv().await {
                                let mut out = Vec::new();
                                encode_frame(&ev, pub_framing, &mut out);
                                if s.write_all(&out).await.is_err() { break; }
                            }
                        });
                    }
                    Ok((s, _)) = puller.accept() => {
                        tasks.spawn(read_pull(s, pull_framing, tx.clone()));
                    }
                }
            }
        })
    }

    async fn read_pull(mut s: UnixStream, framing: Framing, tx: broadcast::Sender<Vec<u8>>) {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            loop {
                let (start, used) = match framing {
                    Framing::Prefixed => {
                        if buf.len() < 4 {
                            break;
                        }
                        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        if buf.len() < 4 + len {
                            break;
                        }
                        (4, 4 + len)
                    }
                    Framing::Bare => {
                        // A bare reader sees a length prefix as garbage and gives up.
                        if !matches!(buf.first(), Some(0x80..=0x8f)) {
                            return;
                        }
                        match value_len(&buf, 0) {
                            Ok(Some(n)) => (0, n),
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                };
                if let Ok(ev) = frame_body(&buf[start..used]) {
                    let _ = tx.send(ev);
                }
                buf.drain(..used);
            }
        }
    }
}

#[cfg(test)]
mod bus_tests {
    use std::time::Duration;

    use super::*;
    use crate::salt::bus::BusItem;

    fn config(dir: &std::path::Path) -> IpcBusConfig {
        let mut c = IpcBusConfig::new(
            Endpoint::Unix(dir.join("master_event_pub.ipc")),
            Endpoint::Unix(dir.join("master_event_pull.ipc")),
        );
        c.probe_timeout = Duration::from_millis(300);
        c
    }

    async fn fire_and_see(pub_framing: Framing, pull_framing: Framing) {
        let dir = tempfile::tempdir().unwrap();
        let master = fake::spawn(dir.path(), pub_framing, pull_framing);
        let bus = IpcBus::start(config(dir.path()));
        bus.wait_connected(Duration::from_secs(5)).await.unwrap();
        let mut sub = bus.subscribe();
        for i in 0..50 {
            bus.fire(Event::new(
                format!("salt/netapi/hook/t/{i}"),
                rmpv::Value::Map(vec![]),
            ))
            .await
            .unwrap();
        }
        for i in 0..50 {
            let want = format!("salt/netapi/hook/t/{i}");
            let ev = sub
                .wait_for(Duration::from_secs(5), |e| !is_probe_tag(&e.tag))
                .await
                .unwrap();
            assert_eq!(ev.tag, want);
        }
        assert_eq!(bus.status().pull_framing, Some(pull_framing.as_str()));
        master.abort();
    }

    #[tokio::test]
    async fn detects_prefixed_puller_behind_bare_publisher() {
        fire_and_see(Framing::Bare, Framing::Prefixed).await;
    }

    #[tokio::test]
    async fn detects_bare_puller() {
        fire_and_see(Framing::Bare, Framing::Bare).await;
    }

    #[tokio::test]
    async fn prefixed_publisher_means_prefixed_puller() {
        fire_and_see(Framing::Prefixed, Framing::Prefixed).await;
    }

    #[tokio::test]
    async fn master_down_fails_fire_and_restart_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let master = fake::spawn(dir.path(), Framing::Bare, Framing::Prefixed);
        let bus = IpcBus::start(config(dir.path()));
        bus.wait_connected(Duration::from_secs(5)).await.unwrap();
        let mut sub = bus.subscribe();
        bus.fire(Event::new("a/1", rmpv::Value::Map(vec![])))
            .await
            .unwrap();
        master.abort();
        let _ = master.await;
        std::fs::remove_file(dir.path().join("master_event_pub.ipc")).unwrap();
        std::fs::remove_file(dir.path().join("master_event_pull.ipc")).unwrap();
        // Drain until the disconnect notice.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .unwrap()
            {
                Some(BusItem::Disconnected) => break,
                Some(_) => {}
                None => panic!("bus closed"),
            }
        }
        let err = bus
            .fire(Event::new("a/2", rmpv::Value::Map(vec![])))
            .await
            .unwrap_err();
        assert!(matches!(err, SaltError::Unavailable(_)), "{err:?}");
        let master = fake::spawn(dir.path(), Framing::Bare, Framing::Prefixed);
        bus.wait_connected(Duration::from_secs(10)).await.unwrap();
        bus.fire(Event::new("a/3", rmpv::Value::Map(vec![])))
            .await
            .unwrap();
        let ev = sub
            .wait_for(Duration::from_secs(5), |e| e.tag == "a/3")
            .await;
        assert!(ev.is_ok(), "{ev:?}");
        master.abort();
    }
}

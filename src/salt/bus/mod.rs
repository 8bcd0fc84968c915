//! Event buses: the master's (IPC or TCP stream sockets) and the built-in in-process one.
//!
//! Both fan events out inside saltgate through one broadcast queue ([`ring`]), bounded in events
//! and in bytes: one subscription to the master, many in-process subscribers. A subscriber that
//! falls behind is told how many events it missed ([`BusItem::Lagged`]); nothing is dropped
//! without the subscriber knowing.
//!
//! Beside the subscribers, a bus has at most one [`Tap`]: a callback the reader calls for every
//! event whose tag starts with one of the tap's prefixes, and on every (dis)connection, before
//! the queue sees them. The spool confirms its deliveries through it. A tap must never block
//! (it runs on the reader, and a reader that stops draining the master's publisher is cut off
//! by the master), so it only hands what it needs to a bounded queue of its own.

pub mod ipc;
pub mod memory;
pub mod ring;

use std::sync::Arc;

use futures::future::BoxFuture;

pub use ring::{Chunked, Published, Received};

use crate::salt::error::SaltError;
use crate::salt::event::Event;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum BusItem {
    /// An event seen on the bus.
    Event(Arc<Event>),
    /// The subscriber fell behind and this many events were skipped for it.
    Lagged(u64),
    /// The connection to the master's bus was lost; events until [`BusItem::Connected`] are lost.
    Disconnected,
    /// The connection to the master's bus is (again) up.
    Connected,
}

/// What a [`Tap`] is shown.
#[derive(Debug, Clone, Copy)]
pub enum Tapped<'a> {
    /// An event read from the bus whose tag starts with one of the tap's prefixes.
    Event(&'a Event),
    /// The connection to the master's bus is (again) up.
    Connected,
    /// The connection to the master's bus was lost.
    Disconnected,
}

/// A bus tap: called on the reader for what [`Tapped`] lists. Must return at once.
#[derive(Clone)]
pub struct Tap {
    /// Tag prefixes of the events shown.
    pub prefixes: &'static [&'static str],
    /// The callback.
    pub call: Arc<dyn Fn(Tapped<'_>) + Send + Sync>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// Whether a packed event (`tag + "\n\n" + msgpack`) is one the tap wants.
    pub fn wants(&self, packed: &[u8]) -> bool {
        self.prefixes
            .iter()
            .any(|p| packed.starts_with(p.as_bytes()))
    }
}

/// A snapshot of a bus's state, for logs, `/stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusStatus {
    /// `master` or `builtin`.
    pub kind: &'static str,
    /// Whether events can be read right now.
    pub connected: bool,
    /// The pull-side framing in use, once known.
    pub pull_framing: Option<&'static str>,
    /// Events received from the bus since start.
    pub events_in: u64,
    /// Events fired by saltgate since start.
    pub events_out: u64,
    /// Current in-process subscribers.
    pub subscribers: usize,
}

/// An event bus: subscribe to everything on it, fire events onto it.
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// A new subscription that sees every event from now on.
    fn subscribe(&self) -> Subscription;
    /// Hands an event to the bus. `Ok` means the bytes were written to the master's socket (or
    /// broadcast, on the built-in bus); an error means the event was not fired.
    fn fire(&self, event: Event) -> BoxFuture<'_, Result<(), SaltError>>;
    /// Hands events already packed (`tag + "\n\n" + msgpack`, as [`Event::pack`] makes them)
    /// to the bus, in order. `Ok` as for [`EventBus::fire`], for all of them.
    fn fire_packed(&self, packed: Vec<bytes::Bytes>) -> BoxFuture<'_, Result<(), SaltError>>;
    /// Current state.
    fn status(&self) -> BusStatus;
    /// Installs the bus's tap (one per bus; a second call is refused with `false`).
    fn set_tap(&self, tap: Tap) -> bool;
    /// Whether a fire that returned `Ok` has already reached every subscriber (the built-in
    /// bus), so that there is no echo to wait for.
    fn fire_is_delivery(&self) -> bool {
        false
    }
}

/// A shared handle to any bus.
pub type SharedBus = Arc<dyn EventBus>;

/// Bytes of events the broadcast queue holds at most by default (`saltgate.event_queue_bytes`).
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// One in-process subscriber's position in the bus's queue.
#[derive(Debug)]
pub struct Subscription {
    rx: ring::Receiver,
}

impl Subscription {
    pub(crate) fn new(rx: ring::Receiver) -> Self {
        Self { rx }
    }

    /// The next item; `None` when the bus is gone.
    pub async fn recv(&mut self) -> Option<BusItem> {
        self.rx.recv().await.map(Received::into_item)
    }

    /// The next item, events with their shared stream rendering; `None` when the bus is gone.
    pub async fn recv_published(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// Waits for the first event whose tag satisfies `pred`, up to `timeout`. Lag and
    /// disconnects are reported as errors, so callers never wait on an event they may have missed.
    pub async fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Arc<Event>, SaltError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let item = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| SaltError::Timeout(timeout))?;
            match item {
                Some(BusItem::Event(ev)) if pred(&ev) => return Ok(ev),
                Some(BusItem::Event(_) | BusItem::Connected) => {}
                Some(BusItem::Lagged(n)) => {
                    return Err(SaltError::BusBusy(format!(
                        "subscriber lagged by {n} events"
                    )));
                }
                Some(BusItem::Disconnected) => {
                    return Err(SaltError::Unavailable("event bus disconnected".into()));
                }
                None => return Err(SaltError::Unavailable("event bus closed".into())),
            }
        }
    }
}

//! The broadcast queue behind every bus: one ring of recent items shared by all in-process
//! subscribers, bounded both in items and in bytes.
//!
//! Each item is kept until every subscriber that existed when it was pushed has read it, or
//! until the ring is over one of its bounds, when the oldest items go first. A subscriber whose
//! next item went that way is told how many it missed ([`BusItem::Lagged`]) and goes on from the
//! oldest item still kept. Counting bytes matters because one stalled reader otherwise pins
//! `capacity` events whatever their size (8,192 events of 1 MiB). Bytes are each event's
//! [`Event::footprint`]: its decoded data and its rendering for the streams, which is made once
//! per event and shared ([`Published::rendered`]).
//!
//! Items are shared (`Arc`), never copied per subscriber. Renderings are [`Chunked`]: a socket
//! that stops reading holds the few chunks queued on it, not the whole event.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::Notify;

use super::BusItem;
use crate::salt::event::Event;

/// The size of a [`Chunked`] chunk.
pub const CHUNK: usize = 16 << 10;

/// Bytes kept as separately allocated chunks of at most [`CHUNK`] bytes, so that whoever holds
/// one chunk (a socket's write queue) does not keep the others alive.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Chunked {
    /// A copy of `bytes`, in chunks.
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            chunks: bytes.chunks(CHUNK).map(Bytes::copy_from_slice).collect(),
            len: bytes.len(),
        }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offset of the first `byte`.
    pub fn position(&self, byte: u8) -> Option<usize> {
        let mut offset = 0;
        for chunk in &self.chunks {
            if let Some(i) = chunk.iter().position(|&b| b == byte) {
                return Some(offset + i);
            }
            offset += chunk.len();
        }
        None
    }

    /// The bytes in `range` (clamped to the length), as shared slices of the chunks, each at
    /// most [`CHUNK`] bytes.
    pub fn slices(&self, range: Range<usize>) -> Vec<Bytes> {
        let (start, end) = (range.start.min(self.len), range.end.min(self.len));
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut offset = 0;
        for chunk in &self.chunks {
            let (from, to) = (offset, offset + chunk.len());
            offset = to;
            if to <= start {
                continue;
            }
            if from >= end {
                break;
            }
            out.push(chunk.slice(start.max(from) - from..end.min(to) - from));
        }
        out
    }
}

/// One event as the streams see it: the event, and its stream rendering, made by the first
/// stream that sends it and shared by all the others.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: Arc<Event>,
    rendered: OnceLock<Chunked>,
}

impl Published {
    /// The event's rendering, made by `render` on first use and shared afterwards. Every caller
    /// must pass the same rendering (there is one per event, salt-api's SSE record, whose parts
    /// serve the other framings).
    pub fn rendered(&self, render: impl FnOnce(&Event) -> Chunked) -> &Chunked {
        self.rendered.get_or_init(|| render(&self.event))
    }
}

/// What a subscriber reads: a bus item, with the shared rendering for events.
#[derive(Debug, Clone)]
pub enum Received {
    /// An event.
    Event(Arc<Published>),
    /// Anything else ([`BusItem::Lagged`], bus state).
    Other(BusItem),
}

impl Received {
    /// As a plain bus item.
    pub fn into_item(self) -> BusItem {
        match self {
            Self::Event(p) => BusItem::Event(Arc::clone(&p.event)),
            Self::Other(item) => item,
        }
    }
}

#[derive(Debug)]
struct Slot {
    item: Received,
    bytes: usize,
    /// Subscribers that have yet to read this slot.
    unread: usize,
}

#[derive(Debug)]
struct State {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sequence number the next pushed item gets.
    tail: u64,
    bytes: usize,
    receivers: usize,
    senders: usize,
}

impl State {
    /// Drops leading items everyone has read.
    fn trim_read(&mut self) {
        while self.slots.front().is_some_and(|s| s.unread == 0) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.bytes -= slot.bytes;
            self.head += 1;
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere while holding
        // the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; clones share the ring. Subscribers see the end once every sender is gone.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// A ring keeping at most `capacity` items and `max_bytes` bytes (the newest item is kept
    /// whatever its size).
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: VecDeque::new(),
                    head: 0,
                    tail: 0,
                    bytes: 0,
                    receivers: 0,
                    senders: 1,
                }),
                notify: Notify::new(),
                capacity: capacity.max(1),
                max_bytes,
            }),
        }
    }

    /// Hands `item` to every current subscriber; nothing is kept when there are none.
    pub fn send(&self, item: BusItem) {
        // Nobody listening: do not even size the event (a walk of its whole data).
        if self.shared.lock().receivers == 0 {
            return;
        }
        let (item, bytes) = match item {
            BusItem::Event(event) => {
                let bytes = event.footprint();
                let published = Published {
                    event,
                    rendered: OnceLock::new(),
                };
                (Received::Event(Arc::new(published)), bytes)
            }
            other => (Received::Other(other), 0),
        };
        {
            let mut state = self.shared.lock();
            if state.receivers == 0 {
                return;
            }
            let unread = state.receivers;
            state.slots.push_back(Slot {
                item,
                bytes,
                unread,
            });
            state.tail += 1;
            state.bytes += bytes;
            while state.slots.len() > self.shared.capacity
                || (state.bytes > self.shared.max_bytes && state.slots.len() > 1)
            {
                state.pop_front();
            }
        }
        self.shared.notify.notify_waiters();
    }

    /// A new subscriber that sees every item from now on.
    pub fn subscribe(&self) -> Receiver {
        let mut state = self.shared.lock();
        state.receivers += 1;
        Receiver {
            shared: Arc::clone(&self.shared),
            next: state.tail,
        }
    }

    /// Current subscribers.
    pub fn receiver_count(&self) -> usize {
        self.shared.lock().receivers
    }

    /// Items and bytes held now.
    pub fn held(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.slots.len(), state.bytes)
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.notify.notify_waiters();
    }
}

/// One subscriber's position in the ring.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    /// Sequence number of the next item to read.
    next: u64,
}

enum Try {
    Item(Received),
    Empty,
    Closed,
}

impl Receiver {
    fn try_recv(&mut self) -> Try {
        let mut state = self.shared.lock();
        if self.next < state.head {
            let missed = state.head - self.next;
            self.next = state.head;
            return Try::Item(Received::Other(BusItem::Lagged(missed)));
        }
        if self.next == state.tail {
            return if state.senders == 0 {
                Try::Closed
            } else {
                Try::Empty
            };
        }
        let index = usize::try_from(self.next - state.head).unwrap_or(usize::MAX);
        let Some(slot) = state.slots.get_mut(index) else {
            return Try::Empty;
        };
        slot.unread = slot.unread.saturating_sub(1);
        let item = slot.item.clone();
        self.next += 1;
        state.trim_read();
        Try::Item(item)
    }

    /// The next item; `None` when every sender is gone and everything was read.
    pub async fn recv(&mut self) -> Option<Received> {
        let shared = Arc::clone(&self.shared);
        loop {
            let notified = shared.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.try_recv() {
                Try::Item(item) => return Some(item),
                Try::Closed => return None,
                Try::Empty => notified.await,
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let head = state.head;
        let from = usize::try_from(self.next.saturating_sub(head)).unwrap_or(usize::MAX);
        for slot in state.slots.iter_mut().skip(from) {
            slot.unread = slot.unread.saturating_sub(1);
        }
        state.receivers = state.receivers.saturating_sub(1);
        state.trim_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tag: &str, size: usize) -> BusItem {
        BusItem::Event(Arc::new(Event::new(
            tag,
            rmpv::Value::from("x".repeat(size)),
        )))
    }

    async fn tag(rx: &mut Receiver) -> String {
        match rx.recv().await {
            Some(Received::Event(p)) => p.event.tag.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn read_items_are_released_and_late_subscribers_start_now() {
        let tx = Sender::new(16, 1 << 20);
        tx.send(event("nobody", 10));
        assert_eq!(tx.held().0, 0, "kept with no subscriber");
        let mut a = tx.subscribe();
        let mut b = tx.subscribe();
        tx.send(event("one", 10));
        assert_eq!(tag(&mut a).await, "one");
        assert_eq!(tx.held().0, 1, "b has not read it");
        assert_eq!(tag(&mut b).await, "one");
        assert_eq!(tx.held(), (0, 0));
        tx.send(event("two", 10));
        let mut c = tx.subscribe();
        tx.send(event("three", 10));
        assert_eq!(tag(&mut c).await, "three");
        drop(a);
        assert_eq!(tag(&mut b).await, "two");
        assert_eq!(tx.held().0, 1);
        drop(b);
        assert_eq!(tx.held(), (0, 0), "dropping a reader releases what it held");
    }

    #[tokio::test]
    async fn a_stalled_reader_holds_at_most_the_byte_budget_and_is_told_what_it_missed() {
        let tx = Sender::new(8192, 100_000);
        let mut stalled = tx.subscribe();
        let mut live = tx.subscribe();
        for i in 0..100 {
            tx.send(event(&format!("e/{i}"), 10_000));
            assert_eq!(tag(&mut live).await, format!("e/{i}"));
            let (_, bytes) = tx.held();
            assert!(bytes <= 100_000, "{bytes}");
        }
        let (items, _) = tx.held();
        let missed = 100 - items as u64;
        assert!(
            matches!(stalled.recv().await, Some(Received::Other(BusItem::Lagged(n))) if n == missed)
        );
        assert_eq!(tag(&mut stalled).await, format!("e/{missed}"));
        // The newest item is kept whatever its size.
        tx.send(event("huge", 1_000_000));
        assert_eq!(tx.held().0, 1);
    }

    #[tokio::test]
    async fn count_bound_and_close() {
        let tx = Sender::new(4, usize::MAX);
        let mut rx = tx.subscribe();
        for i in 0..10 {
            tx.send(event(&format!("t/{i}"), 1));
        }
        assert!(matches!(
            rx.recv().await,
            Some(Received::Other(BusItem::Lagged(6)))
        ));
        assert_eq!(tag(&mut rx).await, "t/6");
        let waiting = tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_rendering_is_made_once_and_shared() {
        let tx = Sender::new(4, usize::MAX);
        let mut a = tx.subscribe();
        let mut b = tx.subscribe();
        tx.send(event("r", 1));
        let (Some(Received::Event(pa)), Some(Received::Event(pb))) =
            (a.recv().await, b.recv().await)
        else {
            panic!("no events");
        };
        let calls = std::cell::Cell::new(0);
        let render = |e: &Event| {
            calls.set(calls.get() + 1);
            Chunked::new(e.tag.as_bytes())
        };
        let ra = pa.rendered(render).slices(0..1);
        let rb = pb.rendered(render).slices(0..1);
        assert_eq!(calls.get(), 1);
        assert_eq!(ra[0].as_ptr(), rb[0].as_ptr(), "one buffer for both");
    }

    #[test]
    fn chunked_slices_cross_chunk_bounds_without_copying() {
        let data: Vec<u8> = (0..(3 * CHUNK + 10)).map(|i| (i % 251) as u8).collect();
        let c = Chunked::new(&data);
        assert_eq!(c.len(), data.len());
        for range in [
            0..data.len(),
            5..CHUNK + 7,
            CHUNK..2 * CHUNK,
            3 * CHUNK + 9..data.len() + 50,
        ] {
            let parts = c.slices(range.clone());
            assert!(parts.iter().all(|p| p.len() <= CHUNK && !p.is_empty()));
            let joined: Vec<u8> = parts.concat();
            let end = range.end.min(data.len());
            assert_eq!(joined, data[range.start..end]);
        }
        assert!(c.slices(10..10).is_empty());
        assert_eq!(
            c.position(data[CHUNK + 3]),
            Some(data.iter().position(|&b| b == data[CHUNK + 3]).unwrap())
        );
        assert_eq!(Chunked::new(b"ab\ncd").position(b'\n'), Some(2));
    }
}

//! The built-in in-process bus: used when no master is configured, and by fast tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;

use super::{BusItem, BusStatus, DEFAULT_QUEUE_BYTES, EventBus, Subscription, Tap, Tapped, ring};
use crate::salt::error::SaltError;
use crate::salt::event::Event;

/// A broadcast bus living inside saltgate.
#[derive(Debug)]
pub struct MemoryBus {
    tx: ring::Sender,
    fired: AtomicU64,
    tap: OnceLock<Tap>,
}

impl MemoryBus {
    /// A bus whose subscribers fall behind by at most `capacity` items (and
    /// [`DEFAULT_QUEUE_BYTES`]) before they lag.
    pub fn new(capacity: usize) -> Self {
        Self::with_bytes(capacity, DEFAULT_QUEUE_BYTES)
    }

    /// A bus whose queue holds at most `capacity` items and `max_bytes` of events.
    pub fn with_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self {
            tx: ring::Sender::new(capacity, max_bytes),
            fired: AtomicU64::new(0),
            tap: OnceLock::new(),
        }
    }

    /// Broadcasts one checked event.
    fn broadcast(&self, mut event: Event) {
        if let Some(tap) = self.tap.get() {
            if tap.prefixes.iter().any(|p| event.tag.starts_with(p)) {
                (tap.call)(Tapped::Event(&event));
            }
        }
        event.redact_credentials();
        self.fired.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: the built-in bus has no Reactor behind it.
        self.tx.send(BusItem::Event(Arc::new(event)));
    }
}

impl EventBus for MemoryBus {
    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }

    fn fire(&self, event: Event) -> BoxFuture<'_, Result<(), SaltError>> {
        Box::pin(async move {
            // Checked so that the built-in bus refuses what the master would refuse.
            event.pack()?;
            self.broadcast(event);
            Ok(())
        })
    }

    fn fire_packed(&self, packed: Vec<bytes::Bytes>) -> BoxFuture<'_, Result<(), SaltError>> {
        Box::pin(async move {
            if self.tx.receiver_count() == 0 && self.tap.get().is_none() {
                // Nobody would see them: counted, not decoded.
                self.fired.fetch_add(packed.len() as u64, Ordering::Relaxed);
                return Ok(());
            }
            for raw in packed {
                self.broadcast(Event::unpack(&raw)?);
            }
            Ok(())
        })
    }

    fn set_tap(&self, tap: Tap) -> bool {
        self.tap.set(tap).is_ok()
    }

    fn fire_is_delivery(&self) -> bool {
        true
    }

    fn status(&self) -> BusStatus {
        let n = self.fired.load(Ordering::Relaxed);
        BusStatus {
            kind: "builtin",
            connected: true,
            pull_framing: None,
            events_in: n,
            events_out: n,
            subscribers: self.tx.receiver_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_to_every_subscriber_and_reports_lag() {
        let bus = MemoryBus::new(4);
        let mut fast = bus.subscribe();
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.fire(Event::new(format!("t/{i}"), rmpv::Value::Map(vec![])))
                .await
                .unwrap();
            let got = fast
                .wait_for(Duration::from_secs(1), |_| true)
                .await
                .unwrap();
            assert_eq!(got.tag, format!("t/{i}"));
        }
        assert!(matches!(slow.recv().await, Some(BusItem::Lagged(6))));
        assert!(matches!(slow.recv().await, Some(BusItem::Event(e)) if e.tag == "t/6"));
        assert_eq!(bus.status().events_out, 10);
    }

    #[tokio::test]
    async fn wait_for_times_out() {
        let bus = MemoryBus::new(4);
        let mut sub = bus.subscribe();
        let err = sub
            .wait_for(Duration::from_millis(20), |_| true)
            .await
            .unwrap_err();
        assert!(matches!(err, SaltError::Timeout(_)));
    }
}

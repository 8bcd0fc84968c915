//! What a reload swaps (SIGHUP, [`crate::server::reload`]): the hook rule set and the CORS
//! origins, held as one [`Snapshot`] and replaced whole, so a request sees one consistent set
//! and never half of a reload. A handler takes the snapshot once and keeps it for the whole
//! request, so a reload never changes the rules under a request in flight. TLS certificates
//! are swapped by the listeners' own resolvers ([`crate::server::tls`]): they are read per
//! handshake, not per request.

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use super::Snapshot;

/// The snapshot in force.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
}

impl Live {
    /// `first` in force.
    pub fn new(first: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
        }
    }

    /// The snapshot in force now: one atomic load and a reference count.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `next` in force: requests that start from now on see it; those in flight keep the
    /// one they took.
    pub fn store(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
    }
}

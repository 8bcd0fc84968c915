//! [`App`]: the services every capability may use, built once from validated config. Each
//! capability's own state (the hook pipeline's rules and guards, the `/stats` counters, the
//! bound on background wheel calls) lives with the capability, and [`super::AppState`] holds
//! both; handlers take what they need from it through `FromRef`.

use std::sync::Arc;

use super::ApiError;
use super::metrics::Metrics;
use super::tokens::TokenCache;
use crate::config::Config;
use crate::salt::{SaltClients, SharedBus};

/// The shared services.
#[derive(Debug)]
pub struct App {
    /// The validated config.
    pub config: Config,
    /// The event bus hooks fire on.
    pub bus: SharedBus,
    /// The master's clients; `None` on the built-in bus.
    pub salt: Option<SaltClients>,
    /// Credential checks: cached, throttled per client, capped in flight.
    pub tokens: TokenCache,
    /// Counters for `/metrics` and the recent hook deliveries shown on the events page.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down: event streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The durable spool hooks are committed to; `None` when `saltgate.spool.enabled: false`
    /// (or the built-in bus without `saltgate.spool.dir`).
    pub spool: Option<crate::spool::Spool>,
}

impl App {
    /// The master's clients, or 503 on the built-in bus.
    pub fn master(&self) -> Result<&SaltClients, ApiError> {
        self.salt.as_ref().ok_or(ApiError::Unavailable(
            "No Salt master is attached: this saltgate runs on its built-in bus",
        ))
    }
}

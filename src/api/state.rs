//! Shared state of the HTTP edge, built once from validated config.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::salt::channel::Token;
use crate::salt::{SaltClients, SaltError, SharedBus};

/// Everything a handler may need.
#[derive(Debug)]
pub struct App {
    /// The validated config.
    pub config: Config,
    /// The event bus hooks fire on.
    pub bus: SharedBus,
    /// The master's clients; `None` on the built-in bus.
    pub salt: Option<SaltClients>,
    /// Recently validated tokens.
    pub tokens: TokenCache,
    /// Counters for `/metrics` and the recent hook deliveries shown on the events page.
    pub metrics: super::metrics::Metrics,
    /// Cancelled when the server starts shutting down: event streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The hook pipeline's rules, limiter and replay guard.
    pub hooks: crate::api::hook::Hooks,
}

/// The state handle handlers receive.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// A short-lived cache of tokens the master confirmed, so a burst of hooks with the same token
/// costs one `get_token`. Bounded: when full it is cleared (a refill costs one round trip each).
#[derive(Debug)]
pub struct TokenCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, Token)>>,
}

impl TokenCache {
    /// A cache keeping answers for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Validates `token` with the master (or the cache). `Ok(None)`: unknown or expired.
    pub async fn validate(
        &self,
        salt: &SaltClients,
        token: &str,
    ) -> Result<Option<Token>, SaltError> {
        let now_unix = unix_now();
        if let Ok(entries) = self.entries.lock() {
            if let Some((at, t)) = entries.get(token) {
                if at.elapsed() < self.ttl && t.expire > now_unix {
                    return Ok(Some(t.clone()));
                }
            }
        }
        let found = salt.channel.get_token(token).await?;
        let found = found.filter(|t| t.expire > now_unix);
        if let (Some(t), Ok(mut entries)) = (&found, self.entries.lock()) {
            if entries.len() >= self.capacity {
                entries.clear();
            }
            entries.insert(token.to_owned(), (Instant::now(), t.clone()));
        }
        Ok(found)
    }

    /// Forgets a token (after logout).
    pub fn forget(&self, token: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(token);
        }
    }
}

/// Seconds since the epoch, as Salt's token times are.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

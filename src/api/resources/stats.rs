//! `GET /stats`: saltgate's own request counters, in place of rest_cherrypy's `cpstats`. They
//! count only with `collect_stats` (the route exists either way); the route needs the session
//! unless `stats_disable_auth`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::api::auth::{Caller, Unauthenticated};
use crate::api::error::ApiError;
use crate::api::negotiate::{Negotiated, render_body};
use crate::api::state::App;

/// saltgate's request counters (`collect_stats`).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    enabled: bool,
    requests: AtomicU64,
    in_flight: AtomicU64,
    by_class: [AtomicU64; 5],
}

impl Stats {
    /// Counters; they count only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            started: Instant::now(),
            enabled,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            by_class: Default::default(),
        }
    }

    fn snapshot(&self) -> Value {
        let c = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        json!({"saltgate": {
            "version": env!("CARGO_PKG_VERSION"),
            "collect_stats": self.enabled,
            "uptime_secs": self.started.elapsed().as_secs(),
            "requests": {
                "total": self.requests.load(Ordering::Relaxed),
                "in_flight": self.in_flight.load(Ordering::Relaxed),
                "1xx": c(0), "2xx": c(1), "3xx": c(2), "4xx": c(3), "5xx": c(4),
            },
        }})
    }
}

impl Stats {
    /// Counts a request coming in, when `collect_stats` is on; `true` when it was counted, and
    /// then [`Stats::finish`] must follow with its status.
    pub fn begin(&self) -> bool {
        if self.enabled {
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.enabled
    }

    /// Counts a request [`Stats::begin`] counted as answered with `status`.
    pub fn finish(&self, status: StatusCode) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let class = usize::from(status.as_u16() / 100).saturating_sub(1);
        if let Some(slot) = self.by_class.get(class) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `GET /stats`.
pub async fn stats(
    State(app): State<Arc<App>>,
    State(stats): State<Arc<Stats>>,
    Negotiated(format): Negotiated,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    if !app.config.api.stats_disable_auth {
        caller?.confirm(app.master()?).await?;
    }
    Ok(render_body(StatusCode::OK, format, &stats.snapshot()))
}

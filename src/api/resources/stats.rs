//! `GET /stats`: saltgate's own request counters, in place of rest_cherrypy's `cpstats`. They
//! are read from the `/metrics` registry ([`crate::api::metrics::Metrics::request_summary`]:
//! every listener's requests since start) and shown only with `collect_stats` (the route
//! exists either way, with zeros); the route needs the session unless `stats_disable_auth`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::api::auth::{Caller, Unauthenticated};
use crate::api::error::ApiError;
use crate::api::metrics::RequestSummary;
use crate::api::negotiate::{Negotiated, render_body};
use crate::api::state::App;

/// The `/stats` body: the request figures when `collect_stats` is on, zeros otherwise.
fn snapshot(enabled: bool, r: RequestSummary) -> Value {
    let r = if enabled {
        r
    } else {
        RequestSummary {
            total: 0,
            in_flight: 0,
            by_class: [0; 5],
            ..r
        }
    };
    let [c1, c2, c3, c4, c5] = r.by_class;
    json!({"saltgate": {
        "version": env!("CARGO_PKG_VERSION"),
        "collect_stats": enabled,
        "uptime_secs": r.uptime_secs,
        "requests": {
            "total": r.total,
            "in_flight": r.in_flight,
            "1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5,
        },
    }})
}

/// `GET /stats`.
pub async fn stats(
    State(app): State<Arc<App>>,
    Negotiated(format): Negotiated,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    if !app.config.api.stats_disable_auth {
        caller?.confirm(app.master()?).await?;
    }
    let body = snapshot(app.config.api.collect_stats, app.metrics.request_summary());
    Ok(render_body(StatusCode::OK, format, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_only_with_collect_stats() {
        let r = RequestSummary {
            uptime_secs: 5,
            total: 4,
            in_flight: 1,
            by_class: [0, 2, 0, 1, 0],
        };
        let on = snapshot(true, r);
        assert_eq!(on["saltgate"]["requests"]["total"], 4);
        assert_eq!(on["saltgate"]["requests"]["4xx"], 1);
        let off = snapshot(false, r);
        assert_eq!(off["saltgate"]["requests"]["total"], 0);
        assert_eq!(off["saltgate"]["requests"]["2xx"], 0);
        assert_eq!(off["saltgate"]["uptime_secs"], 5);
    }
}

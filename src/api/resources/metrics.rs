//! `GET /metrics`: saltgate's counters ([`crate::api::metrics`]) in the OpenMetrics text format
//! (which Prometheus reads).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;

use crate::api::auth::{Caller, Unauthenticated, authorize_stream};
use crate::api::error::ApiError;
use crate::api::state::App;

/// `GET /metrics`: open when `stats_disable_auth` is set (the same switch as salt-api's
/// `/stats`, the other operator endpoint), else the same token check as the event streams.
pub async fn metrics(
    State(app): State<Arc<App>>,
    caller: Result<Caller, Unauthenticated>,
) -> Result<Response, ApiError> {
    if !app.config.api.stats_disable_auth {
        authorize_stream(&app, caller).await?;
    }
    Ok((
        [(header::CONTENT_TYPE, crate::api::metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response())
}

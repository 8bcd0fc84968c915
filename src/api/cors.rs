//! CORS from an allowlist (`rest_cherrypy: cors_origin`, the key rest_tornado reads).
//!
//! Unset: no CORS headers, so browsers keep the same-origin rule. rest_cherrypy instead echoes
//! *any* `Origin` with `Access-Control-Allow-Credentials: true` (API.md §14.2), which lets every
//! web page a logged-in user visits drive the API. Set: listed origins (or `*`) may call with the
//! `X-Auth-Token` header; credentials (cookies) are never allowed cross-origin, the session
//! cookie is `SameSite=Strict` anyway, and a cookie-authenticated POST from another origin is
//! refused whatever this list says ([`super::csrf`]). Preflights are answered by the layer itself (200, never
//! 500 as on rest_cherrypy's session routes), for any route.

//!
//! The list is reloadable: it is part of [`super::live::Snapshot`], and [`respond`] applies the
//! snapshot's layer to each request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method};
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::live::Live;
use crate::config::CorsOrigin;

/// `cors_origin` and the layer built from it, once per config.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Option<CorsOrigin>,
    layer: Option<CorsLayer>,
}

impl Cors {
    /// CORS for `cors_origin` (`None`: no CORS headers at all).
    pub fn new(origins: Option<&CorsOrigin>) -> Self {
        Self {
            origins: origins.cloned(),
            layer: layer(origins),
        }
    }

    /// Whether `cors_origin` lists `origin` (or is `*`): what the layer allows, for the
    /// WebSocket handshake, which no CORS layer sees.
    pub fn lists(&self, origin: &str) -> bool {
        lists(self.origins.as_ref(), origin)
    }
}

/// The middleware: the snapshot's CORS layer around the rest of the request, or nothing when
/// `cors_origin` is unset.
pub async fn respond(State(live): State<Arc<Live>>, request: Request, next: Next) -> Response {
    let Some(layer) = live.load().cors.layer.clone() else {
        return next.run(request).await;
    };
    match layer.layer(next).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Whether `origins` lists `origin` (or is `*`).
pub fn lists(origins: Option<&CorsOrigin>, origin: &str) -> bool {
    origins.is_some_and(|c| c.origins().iter().any(|o| *o == "*" || *o == origin))
}

/// The CORS layer for `cors_origin`, or `None` when it is unset.
pub fn layer(origins: Option<&CorsOrigin>) -> Option<CorsLayer> {
    let origins = origins?.origins();
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                http::header::CONTENT_TYPE,
                http::header::ACCEPT,
                HeaderName::from_static("x-auth-token"),
                HeaderName::from_static("x-requested-with"),
            ])
            .expose_headers([HeaderName::from_static("x-auth-token")])
            .max_age(Duration::from_secs(1400)),
    )
}

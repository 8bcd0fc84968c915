//! The salt-api modules saltgate serves, one router per dialect, each built from the shared
//! services and capabilities of [`super`]. Everything that differs between dialects is in that
//! dialect's own module; handlers never ask which dialect they serve.
//!
//! - [`Dialect::RestCherrypy`]: the whole API ([`super::router`]): lowstate, sessions, resources,
//!   hooks, streams, the events page.
//! - [`Dialect::RestWsgi`]: [`wsgi`], `POST /` with credentials in every chunk.
//! - [`Dialect::RestTornado`]: [`tornado`], rest_tornado's routes, lowstate and hook event.

pub mod tornado;
pub mod wsgi;

use axum::Router;

use super::AppState;
use crate::config::Dialect;

/// The routes of `dialect`, over the shared `state`.
pub fn router(dialect: Dialect, state: AppState) -> Router {
    match dialect {
        Dialect::RestCherrypy => super::router(state),
        Dialect::RestWsgi => wsgi::router(state),
        Dialect::RestTornado => tornado::router(state),
    }
}

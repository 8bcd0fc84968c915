//! The one error type of the Salt layer.

use std::time::Duration;

/// Everything that can go wrong while talking to a Salt master or an event bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaltError {
    /// The master (request server or event bus) cannot be reached right now.
    #[error("salt master unavailable: {0}")]
    Unavailable(String),
    /// The master did not answer within the bounded time.
    #[error("salt master did not answer within {0:?}")]
    Timeout(Duration),
    /// The master refused the credentials (`AuthenticationError`, bad token, bad password).
    #[error("authentication refused: {0}")]
    AuthRefused(String),
    /// The credentials are valid but do not allow this call (`AuthorizationError`).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// The master answered with an error of its own (a string or an `error` map).
    #[error("salt master error: {0}")]
    Master(String),
    /// Bytes that do not follow Salt's wire protocol.
    #[error("salt protocol error: {0}")]
    Protocol(String),
    /// The event bus cannot take more events right now (queue full or disconnected).
    #[error("event bus busy: {0}")]
    BusBusy(String),
}

impl SaltError {
    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::AuthRefused(_) => "auth_refused",
            Self::NotAuthorized(_) => "not_authorized",
            Self::Master(_) => "master_error",
            Self::Protocol(_) => "protocol",
            Self::BusBusy(_) => "bus_busy",
        }
    }
}

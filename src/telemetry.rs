//! Logging setup. Field names used across the code: `client_ip`, `hook`, `tag`, `status`,
//! `code`, `error`. Secrets never appear in any field.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: text by default, JSON lines with `json`. `RUST_LOG` filters
/// (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

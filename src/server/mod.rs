//! Listeners and serving.

/// Runs saltgate.
pub fn run() {}

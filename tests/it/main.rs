//! Integration tests: saltgate in-process on an ephemeral port, on the built-in bus.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test by panicking"
)]

mod acl;
mod config_files;
mod dialects;
mod files;
mod hook_pipeline;
mod hook_security;
mod hostile_auth;
mod hostile_body;
mod hostile_conn;
mod hostile_edge;
mod hostile_streams;
mod layering;
mod listener;
mod lowstate;
mod monitoring;
mod notify;
mod reload;
mod senders;
mod shared_redis;
mod spool;
mod streams;
mod streams_browser;
mod support;
mod tls;

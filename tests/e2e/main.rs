//! End-to-end tests against a real Salt master + minion + Reactor (and the real salt-api),
//! installed from PyPI (`scripts/salt-venv`, or `SALTGATE_SALT_VENV`). They fail, never skip,
//! when Salt is missing. Pick the Salt line with `SALTGATE_SALT_VERSION` (default 3007.17).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a failed step is a failed test, and the panic message says which"
)]

mod acl;
mod chaos;
mod cluster;
mod gate;
mod hooks;
mod hostile_auth;
mod lowstate;
mod lowstate_diff;
mod notify;
mod reactor_examples;
mod sandbox_selftest;
mod shared;
mod shutdown;
mod spool;
mod streams;
mod support;
mod tornado_diff;
mod wire;
mod wsgi_diff;

//! Support code for the end-to-end tests: a real Salt master, minion, Reactor and (optionally)
//! the real salt-api, installed from PyPI and run in a private temp dir with its own ports.
//!
//! These tests fail, never skip, when Salt cannot be installed or started.

#[path = "../../shared/redis_server.rs"]
#[allow(
    dead_code,
    reason = "kill/restart serve tests/it/shared_redis.rs; the e2e tests keep Redis up"
)]
pub(crate) mod redis_server;
#[allow(
    dead_code,
    reason = "a toolbox: each test binary module uses a different part"
)]
pub(crate) mod salt;
pub(crate) mod watch;

#[allow(unused_imports, reason = "not every test module uses every item")]
pub(crate) use salt::{SaltApi, SaltSandbox, SaltSandboxBuilder, shared};

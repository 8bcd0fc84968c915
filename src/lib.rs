//! saltgate: a hardened, fast drop-in for Salt's `salt-api`.
//!
//! Three layers; dependencies point downward only:
//!
//! ```text
//! server ──> api ──> security   pure checks over bytes, headers and addresses; no axum
//!             │  ├─> spool ──> salt   durable spool: commit, push, confirm by echo; no HTTP
//!             │  └─> salt       Salt's wire protocols, event bus, client semantics; no HTTP
//!             └────> config ──> security, salt, spool
//! ```
//!
//! - [`salt`]: the master's request server (ZeroMQ clear channel), the master's event bus (unix
//!   or TCP stream sockets, msgpack frames), the built-in in-process bus, and the `local`,
//!   `runner` and `wheel` clients with Salt's semantics.
//! - [`security`]: client address resolution, allowlists, rate limits, replay guard, signature
//!   verifiers, redaction.
//! - [`config`]: the Salt master config (plus `master.d/*.conf`), the `rest_cherrypy:` block as is,
//!   and saltgate's own `saltgate:` block, validated into typed values.
//! - [`spool`]: the durable spool every accepted hook is committed to before it is answered,
//!   and delivered from, confirmed by its echo on the master's publisher.
//! - [`api`]: the HTTP routes.
//! - [`server`]: listeners, TLS, connection limits, graceful shutdown.

pub mod api;
pub mod config;
pub mod salt;
pub mod security;
pub mod server;
pub mod shared;
pub mod spool;
pub mod telemetry;

pub use server::run;

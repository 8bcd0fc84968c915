//! The Salt wire layer: everything saltgate says to a Salt master. No HTTP in here.
//!
//! - [`wire`]: event-bus framing, clear-channel payloads, the ZeroMQ request socket.
//! - [`bus`]: the [`bus::EventBus`] trait, the master's IPC bus and the built-in in-process bus.
//! - [`channel`]: [`channel::MasterChannel`], the clear request channel (`mk_token`, `get_token`,
//!   `publish`, `runner`, `wheel`) with bounded timeouts and a socket pool.
//! - [`client`]: `local`, `runner` and `wheel` with Salt's semantics on top of both.

pub mod bus;
pub mod channel;
pub mod client;
pub mod error;
pub mod event;
pub mod value;
pub mod wire;

pub use bus::{BusItem, EventBus, SharedBus, Subscription};
pub use channel::{Auth, MasterChannel};
pub use client::SaltClients;
pub use error::SaltError;
pub use event::Event;
/// Salt's data (msgpack values) to and from JSON, for the layers that speak JSON.
pub use wire::payload::{MAX_KEY_NESTING, from_json, to_json};

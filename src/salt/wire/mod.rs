//! Salt's wire formats: event-bus framing and the clear request channel's payloads.

pub mod framing;
pub mod payload;
pub mod zmq;

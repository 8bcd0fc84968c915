//! The Salt clear channel payloads.

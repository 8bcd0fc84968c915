//! Integration tests: saltgate in-process on an ephemeral port, on the built-in bus.

mod hook_pipeline;
mod listener;
mod support;

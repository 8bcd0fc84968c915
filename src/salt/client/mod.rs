//! Salt's client semantics on top of the request channel and the event bus: the `local`,
//! `runner` and `wheel` clients as salt-api exposes them.
//!
//! Every client subscribes to the bus *before* sending its request, so no return is missed.
//! [`args`] reads a lowstate chunk's arguments as Salt's clients do; [`batch`] holds the batch
//! and subset modes of `local`.

pub mod args;
pub mod batch;
pub mod local;
pub mod runner;
pub mod wheel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::salt::bus::SharedBus;
use crate::salt::channel::MasterChannel;

/// The clients share one channel, one bus and Salt's timeouts.
#[derive(Debug, Clone)]
pub struct SaltClients {
    /// The clear request channel.
    pub channel: MasterChannel,
    /// The master's event bus.
    pub bus: SharedBus,
    /// Salt's `timeout`: how long `local` waits before asking minions whether they still run.
    pub timeout: Duration,
    /// Salt's `gather_job_timeout`: how long minions get to answer `saltutil.find_job`.
    pub gather_job_timeout: Duration,
}

static LAST_JID: AtomicU64 = AtomicU64::new(0);

/// A new job id in Salt's format (`%Y%m%d%H%M%S%f`, 20 digits), unique within this process even
/// when two are made in the same microsecond. Chosen by the client so that the bus can be
/// filtered before the publish and a lost reply can be retried with the same jid.
pub fn new_jid() -> String {
    let now = time::OffsetDateTime::now_utc();
    let micros_of_day = u64::from(now.hour()) * 3_600_000_000
        + u64::from(now.minute()) * 60_000_000
        + u64::from(now.second()) * 1_000_000
        + u64::from(now.microsecond());
    let date = u64::from(now.year().unsigned_abs()) * 10_000
        + u64::from(u8::from(now.month())) * 100
        + u64::from(now.day());
    // A comparable number: date then time of day in microseconds.
    let candidate = date * 100_000_000_000 + micros_of_day;
    let mut last = LAST_JID.load(Ordering::Acquire);
    let value = loop {
        let next = candidate.max(last + 1);
        match LAST_JID.compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let date = value / 100_000_000_000;
    let mut t = value % 100_000_000_000;
    let us = t % 1_000_000;
    t /= 1_000_000;
    let (h, m, s) = (t / 3600, (t / 60) % 60, t % 60);
    format!("{date:08}{h:02}{m:02}{s:02}{us:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_are_salt_shaped_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let jid = new_jid();
            assert_eq!(jid.len(), 20, "{jid}");
            assert!(jid.bytes().all(|b| b.is_ascii_digit()));
            assert!(seen.insert(jid));
        }
    }
}

//! The spool's families on `/metrics` when the spool is on, written from its status snapshot
//! at each scrape.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{COMMIT_BUCKETS, SpoolStatus};
use crate::telemetry::exposition::{ConstCounter, ConstGauge, labelled, single};

/// Writes the spool's families.
pub fn encode(out: &mut DescriptorEncoder<'_>, s: &SpoolStatus) -> fmt::Result {
    let gauges: [(&str, &str, f64); 8] = [
        (
            "saltgate_spool_pending",
            "Accepted hooks not yet confirmed on the bus (the spool's depth).",
            s.pending as f64,
        ),
        (
            "saltgate_spool_oldest_pending_seconds",
            "Age of the oldest hook not yet confirmed (0: none).",
            s.oldest_pending_secs.unwrap_or(0.0),
        ),
        (
            "saltgate_spool_delivered",
            "Delivered hooks kept for the delivery log.",
            s.delivered as f64,
        ),
        (
            "saltgate_spool_inflight",
            "Hooks pushed onto the bus whose echo has not come yet.",
            s.inflight as f64,
        ),
        (
            "saltgate_spool_repush_after_seconds",
            "Current deadline for an echo before a hook is pushed again (from the measured push-to-echo time).",
            s.repush_after_secs,
        ),
        (
            "saltgate_spool_delivering",
            "1 when accepted hooks go straight out, 0 when they are answered queued.",
            f64::from(u8::from(s.delivering)),
        ),
        (
            "saltgate_spool_dedup_keys",
            "Replay keys kept in the spool across restarts.",
            s.dedup_keys as f64,
        ),
        (
            "saltgate_spool_file_bytes",
            "Size of the spool file on disk.",
            s.file_bytes as f64,
        ),
    ];
    for (name, help, value) in gauges {
        single(out, name, help, ConstGauge::new(value))?;
    }
    single(
        out,
        "saltgate_spool_commits_lazy",
        "Commits of the store without an fsync, made durable by the next checkpoint (the hooks in them are in the spool's log already).",
        ConstCounter::new(s.lazy_commits),
    )?;
    single(
        out,
        "saltgate_spool_checkpoint_seconds",
        "Seconds spent in checkpoints of the spool's store.",
        ConstCounter::new(s.checkpoint_seconds),
    )?;
    labelled(
        out,
        "saltgate_spool_bytes",
        "Bytes of spooled hooks by state (the spool's cap counts both).",
        MetricType::Gauge,
        &[
            ("state", "pending", s.pending_bytes),
            ("state", "delivered", s.delivered_bytes),
        ],
    )?;
    let link = ["up", "down", "waiting_for_reactor"]
        .map(|state| ("state", state, u64::from(s.link == state)));
    labelled(
        out,
        "saltgate_spool_link",
        "The spool's view of the bus: 1 for the current state.",
        MetricType::Gauge,
        &link,
    )?;
    let counters: [(&str, &str, u64); 12] = [
        (
            "saltgate_spool_reactor_asks",
            "Requests sent to the master's Reactor (salt/reactors/manage/is_leader) before delivering after a (re)connection.",
            s.reactor_asks,
        ),
        (
            "saltgate_spool_reactor_answers",
            "Answers of the master's Reactor seen on the bus.",
            s.reactor_answers,
        ),
        (
            "saltgate_spool_accepted",
            "Hooks committed to the spool.",
            s.accepted,
        ),
        (
            "saltgate_spool_confirmed",
            "Spooled hooks confirmed by their echo on the bus (on the built-in bus: by their push).",
            s.confirmed,
        ),
        (
            "saltgate_spool_repushed",
            "Pushes of a hook after its first (no echo in time, or the bus went away first).",
            s.repushed,
        ),
        (
            "saltgate_spool_redelivered",
            "Delivered hooks fired again on request.",
            s.redelivered,
        ),
        (
            "saltgate_spool_recovered",
            "Hooks found undelivered when the spool was opened, delivered again.",
            s.recovered,
        ),
        (
            "saltgate_spool_repeats",
            "Echoes of hooks already confirmed: events the bus carried more than once.",
            s.repeats,
        ),
        (
            "saltgate_spool_echoes_dropped",
            "Echoes the bus reader could not hand to the spool (each costs a re-push).",
            s.echoes_dropped,
        ),
        (
            "saltgate_spool_commit_failures",
            "Spool commits that failed (hooks answered 503).",
            s.commit_failures,
        ),
        (
            "saltgate_spool_checkpoints",
            "Durable commits of the spool's store that no hook waited for (what its log holds, made durable there).",
            s.checkpoints,
        ),
        (
            "saltgate_spool_log_full",
            "Groups of hooks the spool's log had no room for, committed to the store durably instead.",
            s.log_full,
        ),
    ];
    for (name, help, value) in counters {
        single(out, name, help, ConstCounter::new(value))?;
    }
    labelled(
        out,
        "saltgate_spool_refused",
        "Hooks refused by the spool: full (503 spool_full) or its queue busy (503 busy).",
        MetricType::Counter,
        &[
            ("reason", "full", s.refused_full),
            ("reason", "busy", s.refused_busy),
        ],
    )?;
    // The snapshot's buckets are cumulative; the encoder wants each bucket's own count, with
    // the overflow bucket last.
    let mut buckets = Vec::with_capacity(COMMIT_BUCKETS.len() + 1);
    let mut below = 0;
    for (&cumulative, bound) in s.commit_buckets.iter().zip(COMMIT_BUCKETS) {
        buckets.push((bound, cumulative.saturating_sub(below)));
        below = below.max(cumulative);
    }
    buckets.push((f64::INFINITY, s.commits.saturating_sub(below)));
    let mut histogram = out.encode_descriptor(
        "saltgate_spool_commit_duration",
        "Durable spool writes hooks waited for: appends to the log, and commits of the store the log had no room for (one fsync each, however many hooks they hold).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    histogram.encode_histogram::<NoLabelSet>(s.commit_seconds, s.commits, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixed(SpoolStatus);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            super::encode(&mut encoder, &self.0)
        }
    }

    fn render(s: SpoolStatus) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(s)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn spool_families_render() {
        let mut s = SpoolStatus {
            pending: 3,
            pending_bytes: 300,
            commits: 2,
            link: "waiting_for_reactor",
            ..SpoolStatus::default()
        };
        s.commit_buckets[4] = 2;
        let out = render(s);
        assert!(out.contains("saltgate_spool_pending 3.0\n"), "{out}");
        assert!(out.contains("saltgate_spool_bytes{state=\"pending\"} 300"));
        assert!(out.contains("saltgate_spool_link{state=\"waiting_for_reactor\"} 1"));
        assert!(out.contains("saltgate_spool_link{state=\"up\"} 0"));
        assert!(out.contains("saltgate_spool_commit_duration_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(out.contains("saltgate_spool_commit_duration_seconds_count 2"));
        assert!(out.contains("saltgate_spool_commit_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("# TYPE saltgate_spool_commits_lazy counter"));
        assert!(out.contains("saltgate_spool_refused_total{reason=\"full\"} 0"));
    }
}

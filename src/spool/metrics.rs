//! The spool's Prometheus families, appended to `/metrics` when the spool is on.

use std::fmt::Write as _;

use super::{COMMIT_BUCKETS, SpoolStatus};

/// Appends the spool's families to `out`.
pub fn render(out: &mut String, s: &SpoolStatus) {
    let gauges: [(&str, &str, f64); 9] = [
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
        (
            "saltgate_spool_commits_lazy_total",
            "Commits without an fsync (confirmations only), made durable by the next durable one.",
            s.lazy_commits as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "saltgate_spool_bytes",
        "gauge",
        "Bytes of spooled hooks by state (the spool's cap counts both).",
    );
    let _ = writeln!(
        out,
        "saltgate_spool_bytes{{state=\"pending\"}} {}\nsaltgate_spool_bytes{{state=\"delivered\"}} {}",
        s.pending_bytes, s.delivered_bytes
    );
    family(
        out,
        "saltgate_spool_link",
        "gauge",
        "The spool's view of the bus: 1 for the current state.",
    );
    for state in ["up", "down", "waiting_for_reactor"] {
        let _ = writeln!(
            out,
            "saltgate_spool_link{{state=\"{state}\"}} {}",
            u8::from(s.link == state)
        );
    }
    let counters: [(&str, &str, u64); 10] = [
        (
            "saltgate_spool_reactor_asks_total",
            "Requests sent to the master's Reactor (salt/reactors/manage/is_leader) before delivering after a (re)connection.",
            s.reactor_asks,
        ),
        (
            "saltgate_spool_reactor_answers_total",
            "Answers of the master's Reactor seen on the bus.",
            s.reactor_answers,
        ),
        (
            "saltgate_spool_accepted_total",
            "Hooks committed to the spool.",
            s.accepted,
        ),
        (
            "saltgate_spool_confirmed_total",
            "Spooled hooks confirmed by their echo on the bus (on the built-in bus: by their push).",
            s.confirmed,
        ),
        (
            "saltgate_spool_repushed_total",
            "Pushes of a hook after its first (no echo in time, or the bus went away first).",
            s.repushed,
        ),
        (
            "saltgate_spool_redelivered_total",
            "Delivered hooks fired again on request.",
            s.redelivered,
        ),
        (
            "saltgate_spool_recovered_total",
            "Hooks found undelivered when the spool was opened, delivered again.",
            s.recovered,
        ),
        (
            "saltgate_spool_repeats_total",
            "Echoes of hooks already confirmed: events the bus carried more than once.",
            s.repeats,
        ),
        (
            "saltgate_spool_echoes_dropped_total",
            "Echoes the bus reader could not hand to the spool (each costs a re-push).",
            s.echoes_dropped,
        ),
        (
            "saltgate_spool_commit_failures_total",
            "Spool commits that failed (hooks answered 503).",
            s.commit_failures,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "saltgate_spool_refused_total",
        "counter",
        "Hooks refused by the spool: full (503 spool_full) or its queue busy (503 busy).",
    );
    let _ = writeln!(
        out,
        "saltgate_spool_refused_total{{reason=\"full\"}} {}\nsaltgate_spool_refused_total{{reason=\"busy\"}} {}",
        s.refused_full, s.refused_busy
    );
    family(
        out,
        "saltgate_spool_commit_duration_seconds",
        "histogram",
        "Durable spool commits (one fsync each, however many hooks they hold).",
    );
    for (count, bound) in s.commit_buckets.iter().zip(COMMIT_BUCKETS) {
        let _ = writeln!(
            out,
            "saltgate_spool_commit_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "saltgate_spool_commit_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
         saltgate_spool_commit_duration_seconds_sum {}\n\
         saltgate_spool_commit_duration_seconds_count {}",
        s.commits, s.commit_seconds, s.commits
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut out = String::new();
        render(&mut out, &s);
        assert!(out.contains("saltgate_spool_pending 3\n"), "{out}");
        assert!(out.contains("saltgate_spool_bytes{state=\"pending\"} 300"));
        assert!(out.contains("saltgate_spool_link{state=\"waiting_for_reactor\"} 1"));
        assert!(out.contains("saltgate_spool_link{state=\"up\"} 0"));
        assert!(out.contains("saltgate_spool_commit_duration_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(out.contains("saltgate_spool_commit_duration_seconds_count 2"));
        assert!(out.contains("# TYPE saltgate_spool_commits_lazy_total counter"));
    }
}

//! saltgate's counters: what `/metrics` shows in the Prometheus text format (0.0.4), and the
//! ring of recent hook deliveries the events page shows; the middleware that counts requests.
//!
//! Hand-written: a handful of counters behind one mutex per family. Every label value comes from
//! a finite set (matched route templates, HTTP methods, status codes, `ApiError` codes), so the
//! series count is bounded whatever clients send. The deliveries ring holds tag, client address,
//! status and time only: never headers or bodies, which may carry secrets.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;

use crate::salt::bus::BusStatus;
use crate::salt::event::{hook_tag, stamp_now};

/// Upper bounds of the request-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Recent deliveries kept for the events page.
const DELIVERIES: usize = 200;

/// Longest tag kept in the deliveries ring (the path is client-chosen).
const MAX_TAG: usize = 256;

/// Which event stream a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /events`.
    Sse,
    /// `/ws`, `/all_events`.
    Ws,
}

/// The process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per matched route: answers by method and status, and the latency histogram. One lock,
    /// and the route's name is allocated once, when the route is first seen.
    routes: Mutex<BTreeMap<String, RouteStats>>,
    /// Hooks by outcome and the recent deliveries, under one lock: every hook takes it once.
    hooks: Mutex<HookLog>,
    sse_subscribers: AtomicI64,
    ws_subscribers: AtomicI64,
    stream_events_sent: AtomicU64,
    stream_events_missed: AtomicU64,
    stream_lag_notices: AtomicU64,
    limits: Mutex<BTreeMap<&'static str, u64>>,
    config_reloads_ok: AtomicU64,
    config_reloads_failed: AtomicU64,
    /// Unix time the config in force was loaded (at start, or by the last reload that worked).
    config_loaded_at: AtomicU64,
    /// The last reload was refused.
    config_reload_failed: AtomicBool,
}

/// What [`Metrics::record_hook`] keeps.
#[derive(Debug, Default)]
struct HookLog {
    by_outcome: BTreeMap<&'static str, u64>,
    recent: VecDeque<Delivery>,
}

#[derive(Debug, Default, Clone)]
struct RouteStats {
    answers: BTreeMap<(&'static str, u16), u64>,
    latency: Histogram,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// One hook delivery as the events page shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// When it was answered (Salt's `_stamp` format, UTC).
    pub time: String,
    /// The tag it fired (or would have fired).
    pub tag: String,
    /// The resolved client address.
    pub client_ip: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `accepted` or the `ApiError` code.
    pub outcome: &'static str,
}

/// Decrements a subscriber gauge when a stream ends, however it ends.
#[derive(Debug)]
pub struct SubscriberGuard {
    metrics: Arc<Metrics>,
    kind: StreamKind,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.metrics
            .gauge(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn gauge(&self, kind: StreamKind) -> &AtomicI64 {
        match kind {
            StreamKind::Sse => &self.sse_subscribers,
            StreamKind::Ws => &self.ws_subscribers,
        }
    }

    /// Counts an event written to a stream subscriber.
    pub fn event_sent(&self) {
        self.stream_events_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lag notice and the events it reports missed.
    pub fn lagged(&self, missed: u64) {
        self.stream_lag_notices.fetch_add(1, Ordering::Relaxed);
        self.stream_events_missed
            .fetch_add(missed, Ordering::Relaxed);
    }

    /// The config in force was loaded now: at start, or by a reload that worked (`reload`).
    pub fn config_loaded(&self, reload: bool) {
        if reload {
            self.config_reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.config_reload_failed.store(false, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.config_loaded_at.store(now, Ordering::Relaxed);
    }

    /// A reload was refused: the config in force stays.
    pub fn config_refused(&self) {
        self.config_reloads_failed.fetch_add(1, Ordering::Relaxed);
        self.config_reload_failed.store(true, Ordering::Relaxed);
    }

    /// Counts a connection refused or closed by a listener limit (`per_client`, `streams`, …).
    pub fn limit_hit(&self, limit: &'static str) {
        *self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(limit)
            .or_default() += 1;
    }

    /// The recent deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.hooks
            .lock()
            .map(|h| h.recent.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    fn observe_request(&self, route: &str, method: &'static str, status: u16, secs: f64) {
        let Ok(mut m) = self.routes.lock() else {
            return;
        };
        let r = match m.get_mut(route) {
            Some(r) => r,
            None => m.entry(route.to_owned()).or_default(),
        };
        *r.answers.entry((method, status)).or_default() += 1;
        let h = &mut r.latency;
        for (slot, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *slot += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The exposition text.
    pub fn render(&self, bus: &BusStatus) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "saltgate_http_requests_total",
            "counter",
            "HTTP requests answered, by matched route, method and status.",
        );
        let routes = self.routes.lock().map(|m| m.clone()).unwrap_or_default();
        for (route, r) in &routes {
            let route = escape(route);
            for ((method, status), n) in &r.answers {
                let _ = writeln!(
                    out,
                    "saltgate_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        family(
            &mut out,
            "saltgate_http_request_duration_seconds",
            "histogram",
            "Time to the response head, by matched route (streams: time to the stream's start).",
        );
        {
            for (route, r) in &routes {
                let h = &r.latency;
                let route = escape(route);
                for (count, bound) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        out,
                        "saltgate_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "saltgate_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                     saltgate_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                     saltgate_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        family(
            &mut out,
            "saltgate_hooks_total",
            "counter",
            "Hook deliveries by outcome: accepted, or the error code answered (salt_unavailable: the bus or master could not take it).",
        );
        if let Ok(h) = self.hooks.lock() {
            for (outcome, n) in h.by_outcome.iter() {
                let _ = writeln!(out, "saltgate_hooks_total{{outcome=\"{outcome}\"}} {n}");
            }
        }
        family(
            &mut out,
            "saltgate_bus_connected",
            "gauge",
            "1 when the event bus can be read, else 0.",
        );
        let _ = writeln!(
            out,
            "saltgate_bus_connected{{kind=\"{}\"}} {}",
            bus.kind,
            u8::from(bus.connected)
        );
        family(
            &mut out,
            "saltgate_bus_events_received_total",
            "counter",
            "Events read from the bus.",
        );
        let _ = writeln!(out, "saltgate_bus_events_received_total {}", bus.events_in);
        family(
            &mut out,
            "saltgate_bus_events_fired_total",
            "counter",
            "Events fired onto the bus by saltgate.",
        );
        let _ = writeln!(out, "saltgate_bus_events_fired_total {}", bus.events_out);
        family(
            &mut out,
            "saltgate_bus_subscribers",
            "gauge",
            "In-process bus subscriptions (streams and waiting requests).",
        );
        let _ = writeln!(out, "saltgate_bus_subscribers {}", bus.subscribers);
        family(
            &mut out,
            "saltgate_stream_subscribers",
            "gauge",
            "Open event streams by kind.",
        );
        let _ = writeln!(
            out,
            "saltgate_stream_subscribers{{kind=\"sse\"}} {}\nsaltgate_stream_subscribers{{kind=\"ws\"}} {}",
            self.sse_subscribers.load(Ordering::Relaxed),
            self.ws_subscribers.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "saltgate_stream_events_sent_total",
            "counter",
            "Events written to stream subscribers.",
        );
        let _ = writeln!(
            out,
            "saltgate_stream_events_sent_total {}",
            self.stream_events_sent.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "saltgate_stream_events_missed_total",
            "counter",
            "Events stream subscribers missed because they fell behind (each was told).",
        );
        let _ = writeln!(
            out,
            "saltgate_stream_events_missed_total {}",
            self.stream_events_missed.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "saltgate_stream_lag_notices_total",
            "counter",
            "Lag notices sent to stream subscribers.",
        );
        let _ = writeln!(
            out,
            "saltgate_stream_lag_notices_total {}",
            self.stream_lag_notices.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "saltgate_connection_limits_total",
            "counter",
            "Connections or requests refused or cut off by a listener budget or deadline.",
        );
        for (limit, n) in self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "saltgate_connection_limits_total{{limit=\"{limit}\"}} {n}"
            );
        }
        family(
            &mut out,
            "saltgate_config_reloads_total",
            "counter",
            "Reloads (SIGHUP) by result: ok, or error (refused; the config in force stays).",
        );
        let _ = writeln!(
            out,
            "saltgate_config_reloads_total{{result=\"ok\"}} {}\nsaltgate_config_reloads_total{{result=\"error\"}} {}",
            self.config_reloads_ok.load(Ordering::Relaxed),
            self.config_reloads_failed.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "saltgate_config_last_reload_successful",
            "gauge",
            "0 when the last reload was refused, else 1.",
        );
        let _ = writeln!(
            out,
            "saltgate_config_last_reload_successful {}",
            u8::from(!self.config_reload_failed.load(Ordering::Relaxed))
        );
        family(
            &mut out,
            "saltgate_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Unix time the config in force was loaded (at start or by the last reload that worked).",
        );
        let _ = writeln!(
            out,
            "saltgate_config_last_reload_success_timestamp_seconds {}",
            self.config_loaded_at.load(Ordering::Relaxed)
        );
        out
    }
}

impl Metrics {
    /// Records a hook's outcome: the counter and the deliveries ring.
    pub fn record_hook(
        &self,
        path: &str,
        client_ip: IpAddr,
        status: StatusCode,
        outcome: &'static str,
    ) {
        let mut tag = hook_tag(path);
        if tag.len() > MAX_TAG {
            let mut cut = MAX_TAG;
            while !tag.is_char_boundary(cut) {
                cut -= 1;
            }
            tag.truncate(cut);
        }
        let delivery = Delivery {
            time: stamp_now(),
            tag,
            client_ip: client_ip.to_string(),
            status: status.as_u16(),
            outcome,
        };
        if let Ok(mut h) = self.hooks.lock() {
            *h.by_outcome.entry(outcome).or_default() += 1;
            if h.recent.len() >= DELIVERIES {
                h.recent.pop_front();
            }
            h.recent.push_back(delivery);
        }
    }

    /// Counts a new stream subscriber until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>, kind: StreamKind) -> SubscriberGuard {
        self.gauge(kind).fetch_add(1, Ordering::Relaxed);
        SubscriberGuard {
            metrics: Arc::clone(self),
            kind,
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `method` label of a request: the standard methods by name, anything else `other` (so a
/// client cannot grow the label set).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Route layer: copies the matched route template onto the response, where [`Metrics::observe_response`] (outside
/// routing, so that unmatched requests are counted too) reads it.
pub async fn label_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(m);
    }
    response
}

impl Metrics {
    /// Counts `response` (to a `method` request started at `started`) by its matched route
    /// (see [`label_route`]), method and status, and times it. Called by [`super::frame`],
    /// outside routing, so unmatched requests are counted too.
    pub fn observe_response(&self, response: &Response, method: &'static str, started: Instant) {
        let route = response
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        self.observe_request(
            route,
            method,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> BusStatus {
        BusStatus {
            kind: "builtin",
            connected: true,
            pull_framing: None,
            events_in: 3,
            events_out: 2,
            subscribers: 1,
        }
    }

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.observe_request("/hook/{*path}", "POST", 200, 0.003);
        m.observe_request("/hook/{*path}", "POST", 200, 2.0);
        m.lagged(7);
        let text = m.render(&status());
        assert!(text.contains(
            "saltgate_http_requests_total{route=\"/hook/{*path}\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "saltgate_http_request_duration_seconds_bucket{route=\"/hook/{*path}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "saltgate_http_request_duration_seconds_bucket{route=\"/hook/{*path}\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("saltgate_bus_connected{kind=\"builtin\"} 1"));
        assert!(text.contains("saltgate_stream_events_missed_total 7"));
        assert!(text.contains("saltgate_bus_events_received_total 3"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

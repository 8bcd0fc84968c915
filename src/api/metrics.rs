//! saltgate's counters, in one `prometheus-client` registry that `/metrics` serves in the
//! OpenMetrics text format; the ring of recent hook deliveries the events page shows; and what
//! `/stats` reports (read from the same registry's request counters).
//!
//! Every label value comes from a finite set (matched route templates, HTTP methods, status
//! codes, `ApiError` codes, listener limits), so the series count is bounded whatever clients
//! send. The bus's and the spool's figures are read from their own status snapshots when
//! scraped (a [`Collector`]). The deliveries ring holds tag, client address, status and time
//! only: never headers or bodies, which may carry secrets.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use crate::salt::SharedBus;
use crate::salt::event::{hook_tag, stamp_now};
use crate::spool::Spool;
use crate::telemetry::exposition::{ConstCounter, ConstGauge, labelled, single};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the request-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Recent deliveries kept for the events page.
const DELIVERIES: usize = 200;

/// Longest tag kept in the deliveries ring (the path is client-chosen).
const MAX_TAG: usize = 256;

/// The status classes `/stats` counts, in order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Which event stream a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /events`.
    Sse,
    /// `/ws`, `/all_events`.
    Ws,
}

/// A request's route label: its matched template (shared with the router, so labelling a
/// request allocates nothing), or `unmatched`.
#[derive(Debug, Clone)]
enum Route {
    Matched(MatchedPath),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(m) => m.as_str(),
            Self::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Registers a family whose one `label` takes only `values`, and returns each series' handle in
/// that order (so counting never looks a series up).
fn fixed<M, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [M; N]
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Clone
        + Default
        + fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family = Family::<[(&'static str, &'static str); 1], M>::default();
    let handles = values.map(|value| family.get_or_create(&[(label, value)]).clone());
    registry.register(name, help, family);
    handles
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The process's counters and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    connections: Gauge,
    /// Connections taken and let go, in that order.
    connection_counts: [Counter; 2],
    /// `saltgate_http_responses_total` by class, in [`CLASSES`] order.
    classes: [Counter; 5],
    hooks: Family<OutcomeLabel, Counter>,
    recent: Mutex<VecDeque<Delivery>>,
    /// Open streams, SSE then WebSocket.
    subscribers: [Gauge; 2],
    stream_events_sent: Counter,
    stream_events_missed: Counter,
    stream_lag_notices: Counter,
    limits: Family<LimitLabel, Counter>,
    /// Reloads that worked, then refused ones.
    reloads: [Counter; 2],
    /// 0 when the last reload was refused, else 1.
    reload_successful: Gauge,
    /// Unix time the config in force was loaded (at start, or by the last reload that worked).
    config_loaded_at: Gauge,
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
        self.metrics.gauge(self.kind).dec();
    }
}

impl Metrics {
    /// The counters of a process whose event bus is `bus` and whose spool (if any) is `spool`:
    /// both are read when scraped.
    pub fn new(
        bus: SharedBus,
        spool: Option<Spool>,
        shared: Option<&crate::shared::SharedStore>,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "saltgate_http_requests",
            "HTTP requests answered, by matched route, method and status.",
            requests.clone(),
        );
        let latency: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "saltgate_http_request_duration",
            "Time to the response head, by matched route (streams: time to the stream's start).",
            Unit::Seconds,
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "saltgate_http_requests_in_flight",
            "HTTP requests being answered.",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "saltgate_connections_open",
            "Client connections open, on every listener (streams included).",
            connections.clone(),
        );
        let connection_counts = fixed(
            &mut registry,
            "saltgate_connections",
            "Client connections served (accepted), and ended (closed), on every listener.",
            "event",
            ["accepted", "closed"],
        );
        let classes = fixed(
            &mut registry,
            "saltgate_http_responses",
            "HTTP requests answered, by status class (what /stats reports).",
            "class",
            CLASSES,
        );
        let hooks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "saltgate_hooks",
            "Hook deliveries by outcome: accepted, or the error code answered (salt_unavailable: the bus or master could not take it).",
            hooks.clone(),
        );
        let subscribers = fixed(
            &mut registry,
            "saltgate_stream_subscribers",
            "Open event streams by kind.",
            "kind",
            ["sse", "ws"],
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let stream_events_sent = counter(
            &mut registry,
            "saltgate_stream_events_sent",
            "Events written to stream subscribers.",
        );
        let stream_events_missed = counter(
            &mut registry,
            "saltgate_stream_events_missed",
            "Events stream subscribers missed because they fell behind (each was told).",
        );
        let stream_lag_notices = counter(
            &mut registry,
            "saltgate_stream_lag_notices",
            "Lag notices sent to stream subscribers.",
        );
        let limits = Family::<LimitLabel, Counter>::default();
        registry.register(
            "saltgate_connection_limits",
            "Connections or requests refused or cut off by a listener budget or deadline.",
            limits.clone(),
        );
        let reloads = fixed(
            &mut registry,
            "saltgate_config_reloads",
            "Reloads (SIGHUP) by result: ok, or error (refused; the config in force stays).",
            "result",
            ["ok", "error"],
        );
        let reload_successful = Gauge::default();
        registry.register(
            "saltgate_config_last_reload_successful",
            "0 when the last reload was refused, else 1.",
            reload_successful.clone(),
        );
        let config_loaded_at = Gauge::default();
        registry.register(
            "saltgate_config_last_reload_success_timestamp_seconds",
            "Unix time the config in force was loaded (at start or by the last reload that worked).",
            config_loaded_at.clone(),
        );
        registry.register_collector(Box::new(Snapshots { bus, spool }));
        if let Some(shared) = shared {
            shared.stats().register(&mut registry);
        }
        Self {
            registry,
            started: Instant::now(),
            requests,
            latency,
            in_flight,
            connections,
            connection_counts,
            classes,
            hooks,
            recent: Mutex::new(VecDeque::with_capacity(DELIVERIES)),
            subscribers,
            stream_events_sent,
            stream_events_missed,
            stream_lag_notices,
            limits,
            reloads,
            reload_successful,
            config_loaded_at,
        }
    }

    /// The config in force was loaded now: at start, or by a reload that worked (`reload`).
    pub fn config_loaded(&self, reload: bool) {
        if reload {
            self.reloads[0].inc();
        }
        self.reload_successful.set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        self.config_loaded_at.set(now);
    }

    /// A reload was refused: the config in force stays.
    pub fn config_refused(&self) {
        self.reloads[1].inc();
        self.reload_successful.set(0);
    }

    fn gauge(&self, kind: StreamKind) -> &Gauge {
        match kind {
            StreamKind::Sse => &self.subscribers[0],
            StreamKind::Ws => &self.subscribers[1],
        }
    }

    /// Counts an event written to a stream subscriber.
    pub fn event_sent(&self) {
        self.stream_events_sent.inc();
    }

    /// Counts a lag notice and the events it reports missed.
    pub fn lagged(&self, missed: u64) {
        self.stream_lag_notices.inc();
        self.stream_events_missed.inc_by(missed);
    }

    /// Counts a connection refused or closed by a listener limit (`per_client`, `streams`, …).
    pub fn limit_hit(&self, limit: &'static str) {
        self.limits.get_or_create(&LimitLabel { limit }).inc();
    }

    /// The recent deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The exposition text (OpenMetrics, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail, nor can the collectors (they only format numbers).
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// What `GET /stats` reports about requests: every listener's, since start.
    pub fn request_summary(&self) -> RequestSummary {
        let by_class = self.classes.each_ref().map(Counter::get);
        let in_flight = u64::try_from(self.in_flight.get()).unwrap_or(0);
        RequestSummary {
            uptime_secs: self.started.elapsed().as_secs(),
            total: by_class.iter().sum::<u64>() + in_flight,
            in_flight,
            by_class,
        }
    }

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
        self.hooks.get_or_create(&OutcomeLabel { outcome }).inc();
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= DELIVERIES {
                recent.pop_front();
            }
            recent.push_back(delivery);
        }
    }

    /// Counts a new stream subscriber until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>, kind: StreamKind) -> SubscriberGuard {
        self.gauge(kind).inc();
        SubscriberGuard {
            metrics: Arc::clone(self),
            kind,
        }
    }

    /// Counts a client connection opened (until [`Metrics::connection_closed`]).
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connection_counts[0].inc();
    }

    /// Client connections accepted and closed since start.
    pub fn connections_served(&self) -> (u64, u64) {
        (
            self.connection_counts[0].get(),
            self.connection_counts[1].get(),
        )
    }

    /// Counts a client connection closed.
    pub fn connection_closed(&self) {
        self.connections.dec();
        self.connection_counts[1].inc();
    }

    /// Counts a request coming in (until [`Metrics::observe_response`] counts its answer).
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// Counts `response` (to a `method` request started at `started`, counted by
    /// [`Metrics::request_started`]) by its matched route (see [`label_route`]), method and
    /// status, and times it. Called by [`super::frame`], outside routing, so unmatched requests
    /// are counted too.
    pub fn observe_response(&self, response: &Response, method: &'static str, started: Instant) {
        let route = response
            .extensions()
            .get::<MatchedPath>()
            .map_or(Route::Unmatched, |m| Route::Matched(m.clone()));
        self.observe(
            route,
            method,
            response.status(),
            started.elapsed().as_secs_f64(),
        );
    }

    fn observe(&self, route: Route, method: &'static str, status: StatusCode, secs: f64) {
        self.in_flight.dec();
        let status = status.as_u16();
        if let Some(class) = self.classes.get(usize::from(status / 100).wrapping_sub(1)) {
            class.inc();
        }
        let labels = RequestLabels {
            route,
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: labels.route,
            })
            .observe(secs);
    }
}

/// The request figures `/stats` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSummary {
    /// Seconds since the process started counting.
    pub uptime_secs: u64,
    /// Requests received (answered and in flight).
    pub total: u64,
    /// Requests being answered.
    pub in_flight: u64,
    /// Requests answered, by status class (1xx to 5xx).
    pub by_class: [u64; 5],
}

/// The families read from the bus's and the spool's own status when scraped.
#[derive(Debug)]
struct Snapshots {
    bus: SharedBus,
    spool: Option<Spool>,
}

impl Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let bus = self.bus.status();
        labelled(
            &mut encoder,
            "saltgate_bus_connected",
            "1 when the event bus can be read, else 0.",
            MetricType::Gauge,
            &[("kind", bus.kind, u64::from(bus.connected))],
        )?;
        single(
            &mut encoder,
            "saltgate_bus_events_received",
            "Events read from the bus.",
            ConstCounter::new(bus.events_in),
        )?;
        single(
            &mut encoder,
            "saltgate_bus_events_fired",
            "Events fired onto the bus by saltgate.",
            ConstCounter::new(bus.events_out),
        )?;
        single(
            &mut encoder,
            "saltgate_bus_subscribers",
            "In-process bus subscriptions (streams and waiting requests).",
            ConstGauge::new(bus.subscribers as f64),
        )?;
        if let Some(spool) = &self.spool {
            crate::spool::metrics::encode(&mut encoder, &spool.status())?;
        }
        Ok(())
    }
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

/// Route layer: copies the matched route template onto the response, where
/// [`Metrics::observe_response`] (outside routing, so that unmatched requests are counted too)
/// reads it.
pub async fn label_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(m);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salt::bus::memory::MemoryBus;

    fn metrics() -> Metrics {
        Metrics::new(Arc::new(MemoryBus::with_bytes(8, 1 << 20)), None, None)
    }

    #[test]
    fn renders_counters_and_histogram() {
        let m = metrics();
        for secs in [0.003, 2.0] {
            m.request_started();
            m.observe(Route::Unmatched, "POST", StatusCode::OK, secs);
        }
        m.request_started();
        m.lagged(7);
        m.limit_hit("per_client");
        let text = m.render();
        for line in [
            "saltgate_http_requests_total{route=\"unmatched\",method=\"POST\",status=\"200\"} 2",
            "saltgate_http_request_duration_seconds_bucket{le=\"0.005\",route=\"unmatched\"} 1",
            "saltgate_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"unmatched\"} 2",
            "saltgate_http_request_duration_seconds_count{route=\"unmatched\"} 2",
            "# UNIT saltgate_http_request_duration_seconds seconds",
            "saltgate_http_responses_total{class=\"2xx\"} 2",
            "saltgate_http_requests_in_flight 1",
            "saltgate_bus_connected{kind=\"builtin\"} 1",
            "saltgate_stream_events_missed_total 7",
            "saltgate_connection_limits_total{limit=\"per_client\"} 1",
            "# TYPE saltgate_bus_events_received counter",
            "saltgate_bus_events_received_total 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        let summary = m.request_summary();
        assert_eq!(
            (summary.total, summary.in_flight, summary.by_class),
            (3, 1, [0, 2, 0, 0, 0])
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = metrics();
        m.record_hook(
            "x",
            IpAddr::from([127, 0, 0, 1]),
            StatusCode::OK,
            "a\"b\\c\nd",
        );
        let text = m.render();
        assert!(
            text.contains("saltgate_hooks_total{outcome=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }
}

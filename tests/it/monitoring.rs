//! The shipped Prometheus rules (`monitoring/saltgate.rules.yml`) and Grafana dashboard
//! (`monitoring/saltgate-dashboard.json`) use only what saltgate exports: every `saltgate_*`
//! metric they name is a family of a live `/metrics`, and every label they select, group or
//! label a legend by appears on that family's live samples. (`promtool check rules` / `test
//! rules` run in `scripts/package --check`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use regex::Regex;

use crate::support::TestApp;

/// Metrics the monitoring files may name before saltgate exports them (none today). When one
/// lands this test fails until it leaves this list.
const NOT_YET_EXPORTED: &[&str] = &[];

/// Series Prometheus makes itself for every target.
const FROM_PROMETHEUS: &[&str] = &["up"];

/// Labels Prometheus attaches to every scraped series, and the histogram bucket label.
const TARGET_LABELS: &[&str] = &["instance", "job", "le"];

/// One query of a monitoring file and where it comes from.
struct Query {
    origin: String,
    expr: String,
    /// Labels shown in a legend (`{{outcome}}`).
    legend_labels: Vec<String>,
}

fn monitoring(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("monitoring")
            .join(file),
    )
    .unwrap()
}

fn rule_queries() -> Vec<Query> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&monitoring("saltgate.rules.yml")).unwrap();
    // Annotations name labels as {{ $labels.x }}.
    let label_ref = Regex::new(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)").unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let mut legend_labels = Vec::new();
            for text in rule["annotations"].as_mapping().unwrap().values() {
                for c in label_ref.captures_iter(text.as_str().unwrap()) {
                    legend_labels.push(c[1].to_owned());
                }
            }
            out.push(Query {
                origin: format!("alert {name}"),
                expr: rule["expr"].as_str().unwrap().to_owned(),
                legend_labels,
            });
        }
    }
    assert!(
        out.len() >= 8,
        "the rules file has only {} rules",
        out.len()
    );
    out
}

fn dashboard_queries() -> Vec<Query> {
    let dash: serde_json::Value =
        serde_json::from_str(&monitoring("saltgate-dashboard.json")).unwrap();
    let legend = Regex::new(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}").unwrap();
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id in {title}"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            out.push(Query {
                origin: format!("panel {title}"),
                expr: t["expr"].as_str().unwrap().to_owned(),
                legend_labels: legend
                    .captures_iter(t["legendFormat"].as_str().unwrap_or(""))
                    .map(|c| c[1].to_owned())
                    .collect(),
            });
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            out.push(Query {
                origin: format!("variable {}", var["name"]),
                expr: q.to_owned(),
                legend_labels: Vec::new(),
            });
        }
    }
    assert!(
        out.len() >= 15,
        "the dashboard has only {} queries",
        out.len()
    );
    out
}

/// The families of an exposition (`# TYPE` lines) with the label names seen on their samples.
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            // OpenMetrics names a counter's family without the `_total` its samples (and
            // Prometheus's series) carry.
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            out.insert(name, (kind.to_owned(), BTreeSet::new()));
        }
    }
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)=""#).unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let c = sample
            .captures(line)
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let family = family_of(&c[1], &out).unwrap_or_else(|| panic!("no # TYPE for {line}"));
        let labels = &mut out.get_mut(&family).unwrap().1;
        if let Some(ls) = c.get(2) {
            labels.extend(label.captures_iter(ls.as_str()).map(|l| l[1].to_owned()));
        }
    }
    out
}

/// The family a series name belongs to (histograms: `_bucket`, `_sum`, `_count`).
fn family_of(
    name: &str,
    families: &BTreeMap<String, (String, BTreeSet<String>)>,
) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base)?.0 == "histogram").then(|| base.to_owned())
    })
}

/// A saltgate with traffic behind every family the monitoring files label by: requests with
/// several statuses, hooks accepted and refused, a listener deadline passed.
async fn scrape_live_metrics() -> String {
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_path_buf();
    let app = TestApp::builder()
        .with_config(move |c| {
            c.api.stats_disable_auth = true;
            c.spool = Some(saltgate::spool::SpoolConfig::new(
                saltgate::spool::Storage::Dir(dir),
            ));
            // The shared store's families are registered when `saltgate.shared` is set; the
            // requests below use no shared operation, so nothing needs to listen there.
            c.shared = Some(
                saltgate::config::shared::SharedConfig::new(
                    "redis://127.0.0.1:1/0",
                    saltgate::config::shared::FailMode::Local,
                )
                .unwrap(),
            );
        })
        .with_limits(|l| l.first_byte_timeout = Duration::from_millis(200))
        .with_hooks(
            "- path: signed\n  auth: none\n  verify: {github: {secret_env: GH}}\n",
            &[("GH", "a-secret")],
        )
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let post = |path: &str| {
        c.post(app.url(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    assert_eq!(post("/hook/open").await.unwrap().status(), 200);
    assert_eq!(post("/hook/signed").await.unwrap().status(), 401);
    assert_eq!(
        c.get(app.url("/nowhere")).send().await.unwrap().status(),
        404
    );
    // A connection that never sends a byte is closed at the first-byte deadline.
    let (accepted, closed) = app.connections();
    let idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    app.connections_reach(accepted + 1, closed + 1).await;
    drop(idle);
    let resp = c.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    app.shutdown().await;
    text
}

#[tokio::test]
async fn rules_and_dashboard_name_only_live_metrics_and_labels() {
    let live = families(&scrape_live_metrics().await);
    let name = Regex::new(r"\b(saltgate_[a-zA-Z0-9_]+|up)\b\s*(\{[^}]*\})?").unwrap();
    let selector_label = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    let grouping = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let mut named = BTreeSet::new();
    let mut problems = Vec::new();
    for q in rule_queries().into_iter().chain(dashboard_queries()) {
        // The labels any metric of this query carries, for `by (...)` and legends.
        let mut query_labels: BTreeSet<String> =
            TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        let mut pending = false;
        for c in name.captures_iter(&q.expr) {
            let metric = &c[1];
            if metric == "up" && c.get(2).is_none() {
                continue; // the word, not the series
            }
            named.insert(metric.to_owned());
            if FROM_PROMETHEUS.contains(&metric) || NOT_YET_EXPORTED.contains(&metric) {
                pending |= NOT_YET_EXPORTED.contains(&metric);
                if let Some(sel) = c.get(2) {
                    query_labels.extend(
                        selector_label
                            .captures_iter(sel.as_str())
                            .map(|l| l[1].to_owned()),
                    );
                }
                continue;
            }
            let Some(family) = family_of(metric, &live) else {
                problems.push(format!("{}: {metric} is not in /metrics", q.origin));
                continue;
            };
            let labels = &live[&family].1;
            query_labels.extend(labels.iter().cloned());
            if let Some(sel) = c.get(2) {
                for l in selector_label.captures_iter(sel.as_str()) {
                    let l = &l[1];
                    if !TARGET_LABELS.contains(&l) && !labels.contains(l) {
                        problems.push(format!(
                            "{}: {metric} has no label {l} (live labels: {labels:?})",
                            q.origin
                        ));
                    }
                }
            }
        }
        if pending {
            continue; // labels of a metric not exported yet cannot be checked
        }
        let grouped = grouping
            .captures_iter(&q.expr)
            .flat_map(|c| {
                c[1].split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .chain(q.legend_labels.iter().cloned());
        for l in grouped {
            if !query_labels.contains(&l) {
                problems.push(format!(
                    "{}: label {l} is on none of its metrics ({query_labels:?})",
                    q.origin
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for m in NOT_YET_EXPORTED {
        assert!(
            named.contains(*m),
            "{m} is listed as pending but no rule or panel uses it"
        );
        assert!(
            !live.contains_key(*m),
            "{m} is exported now: take it off NOT_YET_EXPORTED so it is checked"
        );
    }
    // The alerts the operator guide promises are there.
    for m in [
        "saltgate_bus_connected",
        "saltgate_http_requests_total",
        "saltgate_hooks_total",
        "saltgate_stream_events_missed_total",
        "saltgate_spool_pending",
        "saltgate_spool_oldest_pending_seconds",
    ] {
        assert!(named.contains(m), "no rule or panel uses {m}");
    }
}

#[test]
fn exposition_parser_sees_families_and_labels() {
    let text = "# HELP a x\n# TYPE a counter\na_total{route=\"/x\",status=\"200\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 2\nh_count 1\n# EOF\n";
    let f = families(text);
    assert_eq!(
        f["a_total"].1,
        ["route", "status"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(family_of("h_bucket", &f).as_deref(), Some("h"));
    assert_eq!(family_of("a_total_bucket", &f), None);
}

//! Metric families written from a status snapshot at scrape time (the bus's, the spool's),
//! through `prometheus-client`'s encoder, for the [`prometheus_client::collector::Collector`]s
//! of `/metrics`.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
pub use prometheus_client::metrics::counter::ConstCounter;
pub use prometheus_client::metrics::gauge::ConstGauge;

/// Writes an unlabelled family of one sample: a [`ConstGauge`], or a [`ConstCounter`] (its
/// `name` without `_total`: the encoder adds it).
pub fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes a family of `kind` (gauge or counter) with one label: `(label, value, sample)` per
/// series.
pub fn labelled(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(&str, &str, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for &(label, value, sample) in series {
        let labels = [(label, value)];
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(sample).encode(metric)?,
            _ => ConstGauge::new(sample).encode(metric)?,
        }
    }
    Ok(())
}

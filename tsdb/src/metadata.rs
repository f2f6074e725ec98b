//! Metric metadata (TYPE, HELP, unit) as senders declare it in remote_write requests,
//! kept in memory for `/api/v1/metadata` (Prometheus keeps it in memory too). It is
//! rebuilt from the WAL at start-up and refreshed by every request that carries it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use nunchi_codec::remote_write::{MetricMetadata, MetricType};
use serde::Serialize;

/// Distinct declarations kept per metric family; later ones are ignored.
const MAX_PER_METRIC: usize = 8;

/// One declaration, as `/api/v1/metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MetadataEntry {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset`
    /// or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// HELP text.
    pub help: String,
    /// Unit, or empty.
    pub unit: String,
}

/// Declarations by metric family name.
#[derive(Default)]
pub struct MetadataStore {
    by_metric: RwLock<BTreeMap<String, Vec<MetadataEntry>>>,
}

fn kind(t: i32) -> &'static str {
    match MetricType::try_from(t).unwrap_or(MetricType::Unknown) {
        MetricType::Unknown => "unknown",
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Gaugehistogram => "gaugehistogram",
        MetricType::Summary => "summary",
        MetricType::Info => "info",
        MetricType::Stateset => "stateset",
    }
}

impl MetadataStore {
    /// Records the declarations of one request.
    pub fn record(&self, metadata: &[MetricMetadata]) {
        if metadata.is_empty() {
            return;
        }
        let mut m = self.by_metric.write().unwrap_or_else(|e| e.into_inner());
        for d in metadata {
            if d.metric_family_name.is_empty() {
                continue;
            }
            let e = MetadataEntry {
                kind: kind(d.r#type),
                help: d.help.clone(),
                unit: d.unit.clone(),
            };
            let list = m.entry(d.metric_family_name.clone()).or_default();
            if !list.contains(&e) && list.len() < MAX_PER_METRIC {
                list.push(e);
            }
        }
    }

    /// Declarations, for one metric or all, at most `limit` metrics and
    /// `limit_per_metric` entries each (`None`: no limit).
    pub fn get(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
        limit_per_metric: Option<usize>,
    ) -> BTreeMap<String, Vec<MetadataEntry>> {
        let m = self.by_metric.read().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(k, _)| metric.is_none_or(|x| x == k.as_str()))
            .take(limit.unwrap_or(usize::MAX))
            .map(|(k, v)| {
                let n = limit_per_metric.unwrap_or(usize::MAX);
                (k.clone(), v.iter().take(n).cloned().collect())
            })
            .collect()
    }
}

//! Turns `prometheus` crate metric families (the agent's registry: host metrics and
//! self-metrics) into series for remote_write, the way the text exposition would name
//! them: histograms as `_bucket{le}` (with the `+Inf` bucket), `_sum` and `_count`;
//! summaries as `{quantile}`, `_sum` and `_count`. Also their HELP and TYPE as remote_write
//! metadata.

use nunchi_codec::exposition::{Family, FamilyType};
use nunchi_codec::remote_write::{MetricMetadata, MetricType as RwType};
use nunchi_model::{Labels, METRIC_NAME, Series};
use prometheus::proto::{MetricFamily, MetricType};

/// Appends the series of `families` to `out`, each stamped `timestamp_ms` and carrying
/// `extra` labels (which do not override labels the metric already has).
pub fn to_series(
    families: &[MetricFamily],
    extra: &Labels,
    timestamp_ms: i64,
    out: &mut Vec<Series>,
) {
    for mf in families {
        let name = mf.name();
        for m in mf.get_metric() {
            let mut base = extra.clone();
            for lp in m.get_label() {
                base.insert(lp.name(), lp.value());
            }
            let mut push = |suffix: &str, extra_label: Option<(&str, String)>, value: f64| {
                let mut labels = base.clone();
                labels.insert(METRIC_NAME, format!("{name}{suffix}"));
                if let Some((k, v)) = extra_label {
                    labels.insert(k, v);
                }
                out.push(Series::single(labels, timestamp_ms, value));
            };
            match mf.get_field_type() {
                MetricType::COUNTER => push("", None, m.get_counter().get_value()),
                MetricType::GAUGE => push("", None, m.get_gauge().get_value()),
                #[allow(deprecated)] // untyped is kept by the crate for protobuf compatibility
                MetricType::UNTYPED => push("", None, m.get_untyped().get_value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut saw_inf = false;
                    for b in h.get_bucket() {
                        saw_inf |= b.upper_bound() == f64::INFINITY;
                        push(
                            "_bucket",
                            Some(("le", format_float(b.upper_bound()))),
                            b.cumulative_count() as f64,
                        );
                    }
                    if !saw_inf {
                        push(
                            "_bucket",
                            Some(("le", "+Inf".to_owned())),
                            h.get_sample_count() as f64,
                        );
                    }
                    push("_sum", None, h.get_sample_sum());
                    push("_count", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        push(
                            "",
                            Some(("quantile", format_float(q.quantile()))),
                            q.value(),
                        );
                    }
                    push("_sum", None, s.sample_sum());
                    push("_count", None, s.sample_count() as f64);
                }
            }
        }
    }
}

/// Remote-write metadata (HELP, TYPE) for metric families.
pub fn metadata(families: &[MetricFamily]) -> Vec<MetricMetadata> {
    families
        .iter()
        .map(|mf| MetricMetadata {
            r#type: match mf.get_field_type() {
                MetricType::COUNTER => RwType::Counter,
                MetricType::GAUGE => RwType::Gauge,
                MetricType::HISTOGRAM => RwType::Histogram,
                MetricType::SUMMARY => RwType::Summary,
                MetricType::UNTYPED => RwType::Unknown,
            } as i32,
            metric_family_name: mf.name().to_owned(),
            help: mf.help().to_owned(),
            unit: String::new(),
        })
        .collect()
}

/// Remote-write metadata for families parsed from a scraped page.
pub fn scraped_metadata<'a>(families: impl Iterator<Item = &'a Family>) -> Vec<MetricMetadata> {
    families
        .map(|f| MetricMetadata {
            r#type: match f.kind {
                FamilyType::Counter => RwType::Counter,
                FamilyType::Gauge => RwType::Gauge,
                FamilyType::Histogram => RwType::Histogram,
                FamilyType::Summary => RwType::Summary,
                FamilyType::Untyped => RwType::Unknown,
            } as i32,
            metric_family_name: f.name.clone(),
            help: f.help.clone(),
            unit: String::new(),
        })
        .collect()
}

/// Formats a bucket bound or quantile as Prometheus clients do (`+Inf`, `0.5`, `1`).
fn format_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram, HistogramOpts, Registry};

    #[test]
    fn histograms_expand_like_the_text_format() {
        let r = Registry::new();
        let h =
            Histogram::with_opts(HistogramOpts::new("lat_seconds", "x").buckets(vec![0.5, 1.0]))
                .expect("histogram");
        r.register(Box::new(h.clone())).expect("register");
        h.observe(0.7);
        let mut out = Vec::new();
        to_series(
            &r.gather(),
            &Labels::from_pairs([("host", "a")]),
            5,
            &mut out,
        );
        let got: Vec<String> = out
            .iter()
            .map(|s| format!("{} {}", s.labels, s.samples[0].value))
            .collect();
        assert_eq!(
            got,
            [
                "lat_seconds_bucket{host=\"a\", le=\"0.5\"} 0",
                "lat_seconds_bucket{host=\"a\", le=\"1\"} 1",
                "lat_seconds_bucket{host=\"a\", le=\"+Inf\"} 1",
                "lat_seconds_sum{host=\"a\"} 0.7",
                "lat_seconds_count{host=\"a\"} 1",
            ]
        );
    }
}

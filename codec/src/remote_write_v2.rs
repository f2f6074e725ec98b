//! Prometheus remote_write 2.0: the `io.prometheus.write.v2.Request` message, and its
//! conversion into the 1.0 [`WriteRequest`] the rest of a receiver works with.
//!
//! A 2.0 request names every string once, in its `symbols` table (the first entry is the
//! empty string); series, exemplars and metadata refer to them by index. [`into_v1`]
//! resolves those references and refuses, naming the series:
//! - an odd number of label references, or one outside the table (400 in Prometheus);
//! - a label name given twice in one series;
//! - a series with native histograms ([`V2Error::Unsupported`]: the caller answers 415,
//!   so that a sender falls back to 1.0 rather than losing them);
//! - a request whose strings, once every reference is resolved, would take more than
//!   `max_bytes` ([`V2Error::TooLarge`]: one long symbol referred to by a million series
//!   is small on the wire and huge resolved).
//!
//! Start (created) timestamps are accepted and not kept, as Prometheus does unless its
//! created-timestamp feature is on; exemplars are checked, not kept.
//!
//! The messages mirror `prompb/io/prometheus/write/v2/types.proto` field for field, as
//! far as a receiver reads them; histogram fields other than those that show one is there
//! are skipped as unknown.

use prost::Message;

use crate::remote_write::{
    Label, MetricMetadata, MetricType, Sample, TimeSeries, WriteRequest, repeated_label_name,
};

/// The `proto` parameter of a 2.0 request's `Content-Type`.
pub const PROTO: &str = "io.prometheus.write.v2.Request";
/// The `X-Prometheus-Remote-Write-Version` of a 2.0 request.
pub const VERSION: &str = "2.0.0";
/// Response header: float samples written.
pub const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
/// Response header: histogram samples written.
pub const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
/// Response header: exemplars written.
pub const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// `io.prometheus.write.v2.Request`.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// Every string the request uses; `symbols[0]` is `""`.
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// The series.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<V2TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct V2TimeSeries {
    /// Label (name, value) pairs as indexes into `symbols`.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<V2Sample>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    /// Exemplars.
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    /// The family's metadata.
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    /// The series' created timestamp, as senders before 2.0-rc.4 put it (ms; 0 unset).
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Sample`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct V2Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// When the counter this sample belongs to started (ms; 0 unset).
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Label pairs as indexes into `symbols`.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// The value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Metadata {
    /// The family's type, numbered as in 1.0's `MetricType`.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// HELP text, as an index into `symbols` (0: none).
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Unit, as an index into `symbols` (0: none).
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// `io.prometheus.write.v2.Histogram`, as far as telling one is there: its timestamp.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Histogram {
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// Why a 2.0 request could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    /// The bytes are not a valid `io.prometheus.write.v2.Request`.
    #[error("body is not a valid io.prometheus.write.v2.Request protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A series refers to strings that are not there, or names a label twice.
    #[error("{0}")]
    Invalid(String),
    /// The request carries what this receiver does not store yet.
    #[error("{0}")]
    Unsupported(String),
    /// Resolved, the request's strings would take more than the limit.
    #[error("the request's labels and metadata would take more than {limit} bytes resolved")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Decodes an uncompressed 2.0 request.
pub fn decode(raw: &[u8]) -> Result<Request, V2Error> {
    Ok(Request::decode(raw)?)
}

/// Resolves a 2.0 request's references into a 1.0 request whose strings take at most
/// `max_bytes`.
pub fn into_v1(req: Request, max_bytes: usize) -> Result<WriteRequest, V2Error> {
    let symbols = &req.symbols;
    let resolved = std::cell::Cell::new(0usize);
    let symbol = |r: u32, what: &str, series: usize| {
        let s = symbols.get(r as usize).ok_or_else(|| {
            V2Error::Invalid(format!(
                "series {series}: {what} {r} is outside of the symbols table (size {})",
                symbols.len()
            ))
        })?;
        let total = resolved.get().saturating_add(s.len());
        if total > max_bytes {
            return Err(V2Error::TooLarge { limit: max_bytes });
        }
        resolved.set(total);
        Ok(s.clone())
    };
    let mut out = WriteRequest::default();
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        if ts.labels_refs.len() % 2 != 0 {
            return Err(V2Error::Invalid(format!(
                "series {i}: invalid labelRefs length {}",
                ts.labels_refs.len()
            )));
        }
        let mut labels = Vec::with_capacity(ts.labels_refs.len() / 2);
        for pair in ts.labels_refs.chunks_exact(2) {
            labels.push(Label {
                name: symbol(pair[0], "label name ref", i)?,
                value: symbol(pair[1], "label value ref", i)?,
            });
        }
        let name = labels
            .iter()
            .find(|l| l.name == "__name__")
            .map_or(String::new(), |l| l.value.clone());
        if let Some(repeated) = repeated_label_name(&labels) {
            return Err(V2Error::Invalid(format!(
                "series {name:?}: label {repeated:?} is given more than once"
            )));
        }
        if !ts.histograms.is_empty() {
            return Err(V2Error::Unsupported(format!(
                "series {name:?} carries native histograms, which this receiver does not store yet; send them with remote_write 1.0 as classic histograms"
            )));
        }
        for e in &ts.exemplars {
            if e.labels_refs.len() % 2 != 0 {
                return Err(V2Error::Invalid(format!(
                    "series {name:?}: exemplar with invalid labelRefs length {}",
                    e.labels_refs.len()
                )));
            }
            for r in &e.labels_refs {
                symbol(*r, "exemplar label ref", i)?;
            }
        }
        if let Some(m) = ts.metadata
            && (m.r#type != 0 || m.help_ref != 0 || m.unit_ref != 0)
        {
            let r#type = MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown) as i32;
            out.metadata.push(MetricMetadata {
                r#type,
                metric_family_name: name.clone(),
                help: symbol(m.help_ref, "metadata help_ref", i)?,
                unit: symbol(m.unit_ref, "metadata unit_ref", i)?,
            });
        }
        if ts.samples.is_empty() {
            continue;
        }
        out.timeseries.push(TimeSeries {
            labels,
            samples: ts
                .samples
                .iter()
                .map(|s| Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(refs: Vec<u32>) -> Request {
        Request {
            symbols: ["", "__name__", "up", "job", "node", "help me"]
                .map(String::from)
                .to_vec(),
            timeseries: vec![V2TimeSeries {
                labels_refs: refs,
                samples: vec![V2Sample {
                    value: 1.0,
                    timestamp: 1000,
                    start_timestamp: 500,
                }],
                histograms: vec![],
                exemplars: vec![],
                metadata: Some(Metadata {
                    r#type: 2,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                created_timestamp: 0,
            }],
        }
    }

    #[test]
    fn references_resolve_into_labels_samples_and_metadata() {
        let raw = request(vec![1, 2, 3, 4]).encode_to_vec();
        let request = into_v1(decode(&raw).expect("decodes"), 1 << 20).expect("converts");
        let ts = &request.timeseries[0];
        assert_eq!(ts.labels[0].name, "__name__");
        assert_eq!(ts.labels[1].value, "node");
        assert_eq!(ts.samples[0].timestamp, 1000);
        assert_eq!(request.metadata[0].help, "help me");
        assert_eq!(request.metadata[0].metric_family_name, "up");
        assert_eq!(request.metadata[0].r#type, MetricType::Gauge as i32);
    }

    #[test]
    fn bad_references_duplicates_and_histograms_are_refused() {
        for (refs, want) in [
            (vec![1, 2, 3], "invalid labelRefs length 3"),
            (vec![1, 2, 3, 99], "outside of the symbols table (size 6)"),
            (
                vec![1, 2, 3, 4, 3, 2],
                "label \"job\" is given more than once",
            ),
        ] {
            let e = into_v1(request(refs), 1 << 20).expect_err("refused");
            assert!(
                matches!(e, V2Error::Invalid(_)) && e.to_string().contains(want),
                "{e}"
            );
        }
        let mut r = request(vec![1, 2]);
        r.timeseries[0].histograms.push(Histogram { timestamp: 1 });
        assert!(matches!(into_v1(r, 1 << 20), Err(V2Error::Unsupported(_))));
        let mut big = request(vec![1, 2]);
        big.symbols[2] = "x".repeat(1000);
        big.timeseries = vec![big.timeseries[0].clone(); 100];
        assert!(matches!(
            into_v1(big, 50_000),
            Err(V2Error::TooLarge { .. })
        ));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}

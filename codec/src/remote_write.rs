//! Prometheus remote_write 1.0: the `prompb` protobuf messages, snappy block compression,
//! and the request headers the specification requires.
//!
//! The message types mirror `prompb/types.proto` and `prompb/remote.proto` field for field
//! (native histograms and exemplars are not carried: decoding skips them as unknown
//! fields). [`decode`] checks the declared decompressed length against a limit before it
//! allocates, so a small body cannot expand into a large allocation (a "snappy bomb").

use nunchi_model::{Label as ModelLabel, Labels, Sample as ModelSample, Series};
use prost::Message;

/// `Content-Type` of a remote_write request body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of a remote_write request body.
pub const CONTENT_ENCODING: &str = "snappy";
/// The `X-Prometheus-Remote-Write-Version` header name.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
/// The remote_write 1.0 protocol version value.
pub const VERSION: &str = "0.1.0";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series being written.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (HELP, TYPE, unit), sent alongside or on its own.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples in time order.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// The labels, `__name__` included, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct MetricMetadata {
    /// The family's type.
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    /// The family name (without `_bucket`, `_sum`, … suffixes).
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit, if declared.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Untyped.
    Unknown = 0,
    /// Monotonic counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Classic histogram.
    Histogram = 3,
    /// Gauge histogram.
    Gaugehistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info.
    Info = 6,
    /// State set.
    Stateset = 7,
}

/// A label name that `labels` give more than once, if any (labels sorted by name, as
/// senders should send them, are checked without sorting).
pub fn repeated_label_name(labels: &[Label]) -> Option<&str> {
    if labels.windows(2).all(|w| w[0].name < w[1].name) {
        return None;
    }
    let mut names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Why a remote_write body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not valid snappy block data.
    #[error("body is not valid snappy (block format): {0}")]
    Snappy(#[from] snap::Error),
    /// The decompressed size declared by the body exceeds the limit.
    #[error("decompressed body would be {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Declared decompressed size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The decompressed bytes are not a valid `WriteRequest`.
    #[error("body is not a valid prometheus.WriteRequest protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl WriteRequest {
    /// Builds a request from model series (labels are already sorted in the model).
    pub fn from_series<'a>(series: impl IntoIterator<Item = &'a Series>) -> Self {
        let timeseries = series
            .into_iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|x| Sample {
                        value: x.value,
                        timestamp: x.timestamp_ms,
                    })
                    .collect(),
            })
            .collect();
        WriteRequest {
            timeseries,
            metadata: Vec::new(),
        }
    }

    /// Converts into model series. Labels are sorted and de-duplicated if a writer sent
    /// them out of order.
    pub fn into_series(self) -> Vec<Series> {
        self.timeseries
            .into_iter()
            .map(|ts| Series {
                labels: Labels::from_sorted(
                    ts.labels
                        .into_iter()
                        .map(|l| ModelLabel {
                            name: l.name,
                            value: l.value,
                        })
                        .collect(),
                ),
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| ModelSample {
                        timestamp_ms: s.timestamp,
                        value: s.value,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Number of samples in the request.
    pub fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|t| t.samples.len()).sum()
    }
}

/// Encodes a request as a remote_write body: protobuf, then snappy block compression.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    compress(&raw)
}

/// A group of series and the labels to add to each of them, for [`encode_series`].
#[derive(Debug, Clone, Copy)]
pub struct SeriesGroup<'a> {
    /// The series.
    pub series: &'a [Series],
    /// Labels added to every series of the group; a label the series already has wins.
    pub extra: &'a Labels,
}

/// Encodes groups of model series straight into a remote_write body (protobuf, then
/// snappy), merging each group's extra labels in name order, without building an
/// intermediate [`WriteRequest`]. `scratch` is reused between calls to avoid allocation.
pub fn encode_series(groups: &[SeriesGroup<'_>], scratch: &mut Vec<u8>) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    scratch.clear();
    for g in groups {
        for s in g.series {
            let labels_len: usize = merged(&s.labels, g.extra)
                .map(|(n, v)| {
                    let inner = string_field_len(1, n) + string_field_len(2, v);
                    key_len(1) + encoded_len_varint(inner as u64) + inner
                })
                .sum();
            let samples_len: usize = s
                .samples
                .iter()
                .map(|x| {
                    let inner = sample_len(x);
                    key_len(2) + encoded_len_varint(inner as u64) + inner
                })
                .sum();
            encode_key(1, WireType::LengthDelimited, scratch);
            encode_varint((labels_len + samples_len) as u64, scratch);
            for (n, v) in merged(&s.labels, g.extra) {
                let inner = string_field_len(1, n) + string_field_len(2, v);
                encode_key(1, WireType::LengthDelimited, scratch);
                encode_varint(inner as u64, scratch);
                put_string_field(1, n, scratch);
                put_string_field(2, v, scratch);
            }
            for x in &s.samples {
                encode_key(2, WireType::LengthDelimited, scratch);
                encode_varint(sample_len(x) as u64, scratch);
                if x.value.to_bits() != 0 {
                    encode_key(1, WireType::SixtyFourBit, scratch);
                    scratch.extend_from_slice(&x.value.to_le_bytes());
                }
                if x.timestamp_ms != 0 {
                    encode_key(2, WireType::Varint, scratch);
                    encode_varint(x.timestamp_ms as u64, scratch);
                }
            }
        }
    }
    compress(scratch)
}

fn string_field_len(tag: u32, s: &str) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_string_field(tag: u32, s: &str, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

fn sample_len(x: &ModelSample) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    let v = if x.value.to_bits() != 0 {
        key_len(1) + 8
    } else {
        0
    };
    let t = if x.timestamp_ms != 0 {
        key_len(2) + encoded_len_varint(x.timestamp_ms as u64)
    } else {
        0
    };
    v + t
}

/// The union of two sorted label sets in name order; on a shared name, `own` wins.
fn merged<'a>(own: &'a Labels, extra: &'a Labels) -> impl Iterator<Item = (&'a str, &'a str)> {
    let mut a = own.iter().peekable();
    let mut b = extra.iter().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.name.cmp(&y.name) {
            std::cmp::Ordering::Less => a.next().map(|l| (l.name.as_str(), l.value.as_str())),
            std::cmp::Ordering::Greater => b.next().map(|l| (l.name.as_str(), l.value.as_str())),
            std::cmp::Ordering::Equal => {
                b.next();
                a.next().map(|l| (l.name.as_str(), l.value.as_str()))
            }
        },
        (Some(_), None) => a.next().map(|l| (l.name.as_str(), l.value.as_str())),
        (None, Some(_)) => b.next().map(|l| (l.name.as_str(), l.value.as_str())),
        (None, None) => None,
    })
}

/// Snappy block-compresses `raw`.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0; snap::raw::max_compress_len(raw.len())];
    // Compression into a buffer of `max_compress_len` cannot fail for inputs under 4 GiB,
    // which remote_write bodies always are (receivers cap bodies far lower).
    let n = snap::raw::Encoder::new()
        .compress(raw, &mut out)
        .unwrap_or(0);
    out.truncate(n);
    out
}

/// Merges several remote_write bodies into one without decoding them: a protobuf message
/// followed by another of the same type parses as one message holding both's repeated
/// fields, so the decompressed bytes are concatenated and compressed again. Fails like
/// [`decode`] if a body is not snappy or the total would pass `max_decompressed`.
pub fn concat_bodies<B: AsRef<[u8]>>(
    bodies: &[B],
    max_decompressed: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut raw = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for b in bodies {
        let size = snap::raw::decompress_len(b.as_ref())?;
        if raw.len() + size > max_decompressed {
            return Err(DecodeError::TooLarge {
                size: raw.len() + size,
                limit: max_decompressed,
            });
        }
        let start = raw.len();
        raw.resize(start + size, 0);
        let n = decoder.decompress(b.as_ref(), &mut raw[start..])?;
        raw.truncate(start + n);
    }
    Ok(compress(&raw))
}

/// Decodes a remote_write body, refusing one that would decompress past
/// `max_decompressed` bytes.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest, DecodeError> {
    let raw = decompress(body, max_decompressed)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Decompresses a snappy (block format) body, refusing one that would decompress past
/// `max_decompressed` bytes before allocating for it.
pub fn decompress(body: &[u8], max_decompressed: usize) -> Result<Vec<u8>, DecodeError> {
    let size = snap::raw::decompress_len(body)?;
    if size > max_decompressed {
        return Err(DecodeError::TooLarge {
            size,
            limit: max_decompressed,
        });
    }
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![Series {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "node")]),
            samples: vec![
                ModelSample {
                    timestamp_ms: 1000,
                    value: 1.0,
                },
                ModelSample {
                    timestamp_ms: 2000,
                    value: nunchi_model::stale_nan(),
                },
            ],
        }]
    }

    #[test]
    fn round_trip_keeps_labels_values_and_stale_markers() {
        let body = encode(&WriteRequest::from_series(&series()));
        let back = decode(&body, 1 << 20).expect("decodes").into_series();
        assert_eq!(back[0].labels, series()[0].labels);
        assert_eq!(back[0].samples[0], series()[0].samples[0]);
        assert!(nunchi_model::is_stale_nan(back[0].samples[1].value));
    }

    #[test]
    fn direct_encoding_equals_prost_encoding_with_merged_labels() {
        let mut with_host = series();
        with_host[0].labels.insert("host", "h1");
        with_host[0].samples.push(ModelSample {
            timestamp_ms: 0,
            value: 0.0,
        });
        let expected = encode(&WriteRequest::from_series(&with_host));
        let mut scratch = Vec::new();
        let extra = Labels::from_pairs([("host", "h1"), ("job", "ignored")]);
        let mut plain = series();
        plain[0].samples.push(ModelSample {
            timestamp_ms: 0,
            value: 0.0,
        });
        let got = encode_series(
            &[SeriesGroup {
                series: &plain,
                extra: &extra,
            }],
            &mut scratch,
        );
        assert_eq!(got, expected);
        let back = decode(&got, 1 << 20).expect("decodes").into_series();
        assert_eq!(back[0].labels.get("job"), Some("node"));
    }

    #[test]
    fn concatenated_bodies_decode_as_the_union() {
        let a = encode(&WriteRequest::from_series(&series()));
        let mut other = series();
        other[0].labels.insert("job", "other");
        let b = encode(&WriteRequest::from_series(&other));
        let merged = concat_bodies(&[&a, &b], 1 << 20).expect("concat");
        let back = decode(&merged, 1 << 20).expect("decodes").into_series();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].labels, series()[0].labels);
        assert_eq!(back[1].labels, other[0].labels);
        assert!(matches!(
            concat_bodies(&[&a, &b], 10),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn snappy_bomb_is_refused_before_allocation() {
        let raw = vec![0u8; 4 << 20];
        let body = compress(&raw);
        assert!(body.len() < 256 << 10);
        match decode(&body, 1 << 20) {
            Err(DecodeError::TooLarge { size, limit }) => {
                assert_eq!((size, limit), (4 << 20, 1 << 20));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(matches!(
            decode(b"\x05\x00", 1 << 20),
            Err(DecodeError::Snappy(_))
        ));
        let body = compress(b"\x0a\xff\xff");
        assert!(matches!(
            decode(&body, 1 << 20),
            Err(DecodeError::Protobuf(_))
        ));
    }
}

//! The data model every nunchi component shares, in Prometheus' vocabulary.
//!
//! A [`Series`] is identified by its [`Labels`] (including `__name__`) and carries
//! [`Sample`]s. `Labels` are always sorted by name with no duplicate names, which is the
//! order remote_write requires and makes equality and hashing canonical.
//!
//! This crate is pure: no I/O, no async runtime, so the dashboard's wasm build can use it.

mod alert;
pub mod api;
mod labels;
pub mod number;
pub mod time;

pub use alert::{Alert, AlertState, ScaleAction, ScaleRequest, fingerprint};

pub use labels::{
    Label, LabelError, Labels, METRIC_NAME, is_valid_label_name, is_valid_metric_name,
    parse_label_pair,
};

/// Now, in milliseconds since the Unix epoch (0 on a clock set before 1970): the one
/// clock every part of nunchi stamps samples, alerts and log entries with.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The NaN bit pattern Prometheus uses as a staleness marker: a sample with this value says
/// "this series ended here" (it is a NaN, but not the NaN arithmetic produces).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Returns the staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (compared bit for bit: an ordinary NaN is not one).
#[inline]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One value at one instant. Timestamps are milliseconds since the Unix epoch, as in
/// remote_write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value; may be NaN, ±Inf or the staleness marker.
    pub value: f64,
}

/// A labelled stream of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The identity of the series, `__name__` included, sorted by name.
    pub labels: Labels,
    /// Samples in the order they were taken.
    pub samples: Vec<Sample>,
}

impl Series {
    /// A series holding a single sample.
    pub fn single(labels: Labels, timestamp_ms: i64, value: f64) -> Self {
        Series {
            labels,
            samples: vec![Sample {
                timestamp_ms,
                value,
            }],
        }
    }
}

/// Total number of samples across `series`.
pub fn sample_count(series: &[Series]) -> usize {
    series.iter().map(|s| s.samples.len()).sum()
}

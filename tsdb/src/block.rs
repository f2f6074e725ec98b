//! Encoding of persisted chunks: each column (timestamps, values; or the columns of a
//! rollup) compressed with `pco`, which finds the regular scrape interval, the decimal
//! grid of a counter and repeated gauges on its own. Whole columns of hundreds of samples
//! compress to well under a byte per sample.
//!
//! Layout: `version: u8`, `columns: u8`, then per column `len: u32 LE | pco bytes`. The
//! first column is always `i64` timestamps, the rest `f64`. Floats round-trip bit for bit,
//! staleness markers included.
//!
//! A rollup summarises one bucket of `resolution` milliseconds per row: the timestamp and
//! value of the bucket's last sample, and the min, max, sum and count of its ordinary
//! (non-stale) values.

use nunchi_model::{Sample, is_stale_nan};
use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress};

const VERSION: u8 = 1;

/// A chunk that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The bytes are not a chunk this version wrote.
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
}

fn corrupt(e: impl std::fmt::Display) -> BlockError {
    BlockError::Corrupt(e.to_string())
}

/// One bucket of a rollup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollupPoint {
    /// Timestamp of the bucket's last sample.
    pub timestamp_ms: i64,
    /// Value of the bucket's last sample (possibly a staleness marker).
    pub last: f64,
    /// Smallest ordinary value (NaN if none).
    pub min: f64,
    /// Largest ordinary value (NaN if none).
    pub max: f64,
    /// Sum of ordinary values.
    pub sum: f64,
    /// Number of ordinary values.
    pub count: f64,
}

fn push_column(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_columns(ts: &[i64], cols: &[Vec<f64>]) -> Vec<u8> {
    let cfg = ChunkConfig::default();
    let mut out = vec![VERSION, (1 + cols.len()) as u8];
    // pco's errors are about invalid configurations, not data: the default config on
    // any numbers always compresses.
    let enc_i = simple_compress(ts, &cfg).unwrap_or_default();
    push_column(&mut out, &enc_i);
    for c in cols {
        let enc = simple_compress(c, &cfg).unwrap_or_default();
        push_column(&mut out, &enc);
    }
    out
}

struct Columns<'a> {
    rest: &'a [u8],
}

impl<'a> Columns<'a> {
    fn open(bytes: &'a [u8], want: u8) -> Result<Self, BlockError> {
        match bytes {
            [VERSION, n, rest @ ..] if *n == want => Ok(Columns { rest }),
            [v, n, ..] => Err(corrupt(format!("version {v} with {n} columns"))),
            _ => Err(corrupt("truncated header")),
        }
    }

    fn next(&mut self) -> Result<&'a [u8], BlockError> {
        let (len, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated column length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(corrupt("truncated column"));
        }
        let (col, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(col)
    }

    fn i64s(&mut self) -> Result<Vec<i64>, BlockError> {
        let c = self.next()?;
        if c.is_empty() {
            return Ok(Vec::new());
        }
        simple_decompress(c).map_err(corrupt)
    }

    fn f64s(&mut self, n: usize) -> Result<Vec<f64>, BlockError> {
        let c = self.next()?;
        let v: Vec<f64> = if c.is_empty() {
            Vec::new()
        } else {
            simple_decompress(c).map_err(corrupt)?
        };
        if v.len() != n {
            return Err(corrupt(format!(
                "column of {} values, expected {n}",
                v.len()
            )));
        }
        Ok(v)
    }
}

/// Encodes raw samples (sorted by time, unique timestamps).
pub fn encode_raw(samples: &[Sample]) -> Vec<u8> {
    let ts: Vec<i64> = samples.iter().map(|s| s.timestamp_ms).collect();
    let vs: Vec<f64> = samples.iter().map(|s| s.value).collect();
    encode_columns(&ts, &[vs])
}

/// Decodes raw samples, appending those with `mint <= t <= maxt` to `out`.
pub fn decode_raw(
    bytes: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<Sample>,
) -> Result<(), BlockError> {
    let mut c = Columns::open(bytes, 2)?;
    let ts = c.i64s()?;
    let vs = c.f64s(ts.len())?;
    out.extend(
        ts.into_iter()
            .zip(vs)
            .filter(|(t, _)| (mint..=maxt).contains(t))
            .map(|(timestamp_ms, value)| Sample {
                timestamp_ms,
                value,
            }),
    );
    Ok(())
}

/// Summarises sorted samples into buckets of `resolution` ms, aligned to the epoch.
pub fn rollup(samples: &[Sample], resolution: i64) -> Vec<RollupPoint> {
    let mut out: Vec<RollupPoint> = Vec::new();
    let mut bucket = i64::MIN;
    for s in samples {
        let b = s.timestamp_ms.div_euclid(resolution);
        let ordinary = !is_stale_nan(s.value);
        if b != bucket || out.is_empty() {
            bucket = b;
            out.push(RollupPoint {
                timestamp_ms: s.timestamp_ms,
                last: s.value,
                min: f64::NAN,
                max: f64::NAN,
                sum: 0.0,
                count: 0.0,
            });
        }
        if let Some(p) = out.last_mut() {
            p.timestamp_ms = s.timestamp_ms;
            p.last = s.value;
            if ordinary {
                p.min = if p.min.is_nan() {
                    s.value
                } else {
                    p.min.min(s.value)
                };
                p.max = if p.max.is_nan() {
                    s.value
                } else {
                    p.max.max(s.value)
                };
                p.sum += s.value;
                p.count += 1.0;
            }
        }
    }
    out
}

/// Encodes a rollup.
pub fn encode_rollup(points: &[RollupPoint]) -> Vec<u8> {
    let ts: Vec<i64> = points.iter().map(|p| p.timestamp_ms).collect();
    let cols: Vec<Vec<f64>> = [
        |p: &RollupPoint| p.last,
        |p: &RollupPoint| p.min,
        |p: &RollupPoint| p.max,
        |p: &RollupPoint| p.sum,
        |p: &RollupPoint| p.count,
    ]
    .iter()
    .map(|f| points.iter().map(f).collect())
    .collect();
    encode_columns(&ts, &cols)
}

/// Decodes a rollup, appending the points with `mint <= t <= maxt` to `out`.
pub fn decode_rollup(
    bytes: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<RollupPoint>,
) -> Result<(), BlockError> {
    let mut c = Columns::open(bytes, 6)?;
    let ts = c.i64s()?;
    let n = ts.len();
    let last = c.f64s(n)?;
    let min = c.f64s(n)?;
    let max = c.f64s(n)?;
    let sum = c.f64s(n)?;
    let count = c.f64s(n)?;
    for i in 0..n {
        if (mint..=maxt).contains(&ts[i]) {
            out.push(RollupPoint {
                timestamp_ms: ts[i],
                last: last[i],
                min: min[i],
                max: max[i],
                sum: sum[i],
                count: count[i],
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nunchi_model::stale_nan;

    fn s(t: i64, v: f64) -> Sample {
        Sample {
            timestamp_ms: t,
            value: v,
        }
    }

    #[test]
    fn raw_round_trips_bit_for_bit() {
        let input = vec![
            s(1, 1.0),
            s(2, f64::NAN),
            s(3, stale_nan()),
            s(4, -0.0),
            s(5, f64::INFINITY),
            s(7, 1e-300),
        ];
        let bytes = encode_raw(&input);
        let mut out = Vec::new();
        decode_raw(&bytes, i64::MIN, i64::MAX, &mut out).expect("decode");
        let bits = |v: &[Sample]| {
            v.iter()
                .map(|s| (s.timestamp_ms, s.value.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&out), bits(&input));
        out.clear();
        decode_raw(&bytes, 3, 5, &mut out).expect("decode");
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn empty_and_corrupt_chunks() {
        let mut out = Vec::new();
        decode_raw(&encode_raw(&[]), 0, 10, &mut out).expect("empty decodes");
        assert!(out.is_empty());
        assert!(decode_raw(&[1, 2, 9, 0, 0, 0, 1], 0, 1, &mut out).is_err());
        assert!(decode_raw(&[], 0, 1, &mut out).is_err());
    }

    #[test]
    fn steady_scrapes_compress_below_a_byte_per_sample() {
        let mut v = 1000.0;
        let input: Vec<Sample> = (0..1440)
            .map(|i| {
                v += f64::from(i % 13) * 0.01;
                s(
                    1_700_000_000_000 + i64::from(i) * 15_000,
                    (v * 100.0f64).round() / 100.0,
                )
            })
            .collect();
        let bytes = encode_raw(&input);
        assert!(bytes.len() < input.len(), "{} bytes", bytes.len());
    }

    #[test]
    fn rollup_summarises_buckets_and_skips_stale_markers() {
        let input = [s(0, 1.0), s(10, 3.0), s(20, 2.0), s(30, stale_nan())];
        let r = rollup(&input, 20);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].timestamp_ms,
                r[0].last,
                r[0].min,
                r[0].max,
                r[0].sum,
                r[0].count
            ),
            (10, 3.0, 1.0, 3.0, 4.0, 2.0)
        );
        assert_eq!((r[1].timestamp_ms, r[1].count, r[1].sum), (30, 1.0, 2.0));
        assert!(is_stale_nan(r[1].last));
        let mut out = Vec::new();
        decode_rollup(&encode_rollup(&r), 0, 100, &mut out).expect("decode");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], r[0]);
    }
}

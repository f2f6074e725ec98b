//! Generated data for the benches: series shapes, their remote_write bodies, loading them
//! into a system and waiting until it has settled; timing helpers.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::{Labels, Sample, Series};
use nunchi_testkit::{client, http_get};

use super::Lcg;

/// Sample interval of generated series.
pub const STEP_MS: i64 = 15_000;

/// How a generated series moves.
#[derive(Clone, Copy)]
pub enum Shape {
    /// A counter growing by up to `max` per sample.
    Counter { max: u64 },
    /// A gauge wandering around `base` by up to `spread`.
    Gauge { base: f64, spread: u64 },
    /// A constant.
    Constant(f64),
}

pub struct Gen {
    pub labels: Labels,
    pub shape: Shape,
    /// Sample time ranges, `[from, to)`.
    pub spans: Vec<(i64, i64)>,
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// remote_write bodies carrying every generated sample, in time order per series (hour
/// slices outermost), 500 series per request.
pub fn encode(gens: &[Gen], end: i64) -> Vec<bytes::Bytes> {
    let mut rng = Lcg(7);
    let mut values: Vec<f64> = gens
        .iter()
        .map(|g| match g.shape {
            Shape::Counter { .. } => (rng.next() % 100_000) as f64,
            Shape::Gauge { base, .. } => base,
            Shape::Constant(v) => v,
        })
        .collect();
    let start = gens
        .iter()
        .flat_map(|g| g.spans.iter().map(|s| s.0))
        .min()
        .unwrap_or(end);
    let first = start.div_euclid(STEP_MS) * STEP_MS;
    let mut bodies = Vec::new();
    let mut slice = first;
    while slice <= end {
        let slice_end = slice + 3_600_000;
        for chunk in (0..gens.len()).collect::<Vec<_>>().chunks(500) {
            let mut series = Vec::new();
            for &gi in chunk {
                let g = &gens[gi];
                let mut samples = Vec::new();
                let mut t = slice;
                while t < slice_end.min(end + 1) {
                    if g.spans.iter().any(|&(a, b)| t >= a && t < b) {
                        let v = &mut values[gi];
                        match g.shape {
                            Shape::Counter { max } => *v += (rng.next() % (max + 1)) as f64,
                            Shape::Gauge { base, spread } => {
                                *v = base + (rng.next() % (spread + 1)) as f64
                            }
                            Shape::Constant(_) => {}
                        }
                        samples.push(Sample {
                            timestamp_ms: t,
                            value: *v,
                        });
                    }
                    t += STEP_MS;
                }
                if !samples.is_empty() {
                    series.push(Series {
                        labels: g.labels.clone(),
                        samples,
                    });
                }
            }
            if !series.is_empty() {
                bodies.push(bytes::Bytes::from(remote_write::encode(
                    &WriteRequest::from_series(&series),
                )));
            }
        }
        slice = slice_end;
    }
    bodies
}

pub async fn load(url: &str, bodies: &Arc<Vec<bytes::Bytes>>) {
    let c = client();
    for (i, b) in bodies.iter().enumerate() {
        let r = c
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(b.clone())
            .send()
            .await
            .expect("push");
        let status = r.status();
        assert!(
            status.is_success(),
            "{url}: {status} {}",
            r.text().await.unwrap_or_default()
        );
        if (i + 1) % 200 == 0 {
            eprintln!("  {} of {} requests", i + 1, bodies.len());
        }
    }
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the system has put the data where it keeps it for good.
pub async fn settle(p: &super::Peer) {
    match p.name {
        "nunchi" => {
            let r = client()
                .post(format!("{}/api/v1/admin/compact", p.base))
                .send()
                .await
                .expect("compact");
            assert!(r.status().is_success(), "compact failed");
        }
        "victoria-metrics" => {
            let _ = http_get(format!("{}/internal/force_flush", p.base)).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        _ => {
            // Prometheus compacts its head once it spans over 3 h; wait for that to end.
            for _ in 0..120 {
                let text = match http_get(format!("{}/metrics", p.base)).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let span = metric(&text, "prometheus_tsdb_head_max_time")
                    .zip(metric(&text, "prometheus_tsdb_head_min_time"))
                    .map(|(max, min)| max - min);
                if span.is_some_and(|s| s <= 3.0 * 3_600_000.0) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// A GET timed up to the last byte of the answer. The answer is read into one buffer kept
/// across requests and sized from its `Content-Length`, so that what is timed is the
/// system's work and the transfer, not the client's allocation and copying of megabytes
/// (every system is read the same way).
pub async fn timed_get(url: &str) -> (Duration, serde_json::Value) {
    static BUFFER: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    let mut body = std::mem::take(&mut *BUFFER.lock().expect("buffer"));
    body.clear();
    let c = client();
    let start = Instant::now();
    let mut r = c.get(url).send().await.expect("query");
    body.reserve(r.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = r.chunk().await.expect("body") {
        body.extend_from_slice(&chunk);
    }
    let took = start.elapsed();
    let v = serde_json::from_slice(&body).unwrap_or_default();
    *BUFFER.lock().expect("buffer") = body;
    (took, v)
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

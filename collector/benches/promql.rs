//! PromQL range evaluation and answer writing, in process: the dashboard's query over data
//! held as the decoded-block cache holds it, without storage, HTTP or peers (those are in
//! `queries`).
//!
//! `cargo bench -p nunchi-collector --bench promql`
//!
//! Data: 1,000 CPU-seconds counters (125 hosts x 2 CPUs x 4 busy modes), 24 h of samples
//! every 15 s, in shared 6-hour blocks. Two cadences: `regular` (every timestamp on the
//! 15 s grid, as the `queries` bench and a Prometheus with timestamp tolerance write them)
//! and `jittered` (each timestamp up to 40 ms late, as an agent's clock gives them).
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use nunchi_collector::query::{Engine, Querier, QueryLimits, QueryResult, parse};
use nunchi_collector::storage::{Block, Samples, SelectedRollup, SelectedSeries, StorageError};
use nunchi_model::{Labels, Sample};
use promql_parser::label::Matcher;

// As the collector's binary runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY_MS: i64 = 86_400_000;
const INTERVAL_MS: i64 = 15_000;
const BLOCK_MS: i64 = 6 * 3_600_000;
const END: i64 = 1_800_000_000_000;

/// Series held as shared decoded blocks.
struct Blocks {
    series: Vec<(Labels, Vec<Arc<Block>>)>,
}

impl Blocks {
    fn new(jitter_ms: u64) -> Blocks {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let mut series = Vec::new();
        for h in 0..125 {
            for cpu in ["0", "1"] {
                for mode in ["user", "system", "iowait", "irq"] {
                    let labels = Labels::from_pairs([
                        ("__name__", "node_cpu_seconds_total".to_string()),
                        ("cpu", cpu.to_string()),
                        ("instance", format!("dash-{h:03}:9100")),
                        ("job", "dash".to_string()),
                        ("mode", mode.to_string()),
                    ]);
                    let mut v = next(100_000) as f64;
                    let mut blocks = Vec::new();
                    let mut t = END - DAY_MS;
                    while t <= END {
                        let block_end = (t / BLOCK_MS + 1) * BLOCK_MS;
                        let mut samples = Vec::new();
                        while t < block_end && t <= END {
                            v += next(1501) as f64;
                            let late = if jitter_ms > 0 {
                                next(jitter_ms + 1)
                            } else {
                                0
                            };
                            samples.push(Sample {
                                timestamp_ms: t + late as i64,
                                value: v,
                            });
                            t += INTERVAL_MS;
                        }
                        blocks.push(Arc::new(Block::new(samples)));
                    }
                    series.push((labels, blocks));
                }
            }
        }
        Blocks { series }
    }
}

impl Querier for Blocks {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        Ok(self
            .series
            .iter()
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|m| m.is_match(l.get(&m.name).unwrap_or_default()))
            })
            .map(|(labels, blocks)| {
                let mut samples = Samples::default();
                for block in blocks {
                    let b = block.samples();
                    // As storage does: most blocks lie wholly inside the range.
                    let (first, last) = (b[0].timestamp_ms, b[b.len() - 1].timestamp_ms);
                    let lo = if first < mint {
                        b.partition_point(|s| s.timestamp_ms < mint)
                    } else {
                        0
                    };
                    let hi = if last > maxt {
                        b.partition_point(|s| s.timestamp_ms <= maxt)
                    } else {
                        b.len()
                    };
                    samples.push_shared(block, lo..hi.max(lo));
                }
                SelectedSeries {
                    labels: labels.clone(),
                    samples,
                }
            })
            .collect())
    }

    async fn select_rollup(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<SelectedRollup>, StorageError> {
        Ok(Vec::new())
    }

    fn rollup_resolution_ms(&self) -> i64 {
        i64::MAX
    }
}

const QUERIES: [(&str, &str); 2] = [
    (
        "dashboard",
        "sum by (instance) (rate(node_cpu_seconds_total{job=\"dash\",mode!=\"idle\"}[5m]))",
    ),
    (
        "per_series",
        "rate(node_cpu_seconds_total{job=\"dash\",mode!=\"idle\"}[5m])",
    ),
];

fn matrix(r: QueryResult) -> Vec<(Labels, Vec<(i64, f64)>)> {
    match r {
        QueryResult::Matrix(m) => m,
        _ => panic!("not a matrix"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("range_24h_60s_step");
    g.sample_size(20);
    for (cadence, jitter) in [("regular", 0), ("jittered", 40)] {
        let data = Blocks::new(jitter);
        let engine = Engine::new(&data, QueryLimits::default());
        for (name, q) in QUERIES {
            let e = parse(q).expect("parses");
            g.bench_function(format!("{name}_{cadence}"), |b| {
                b.iter(|| {
                    let r = rt.block_on(engine.range(black_box(&e), END - DAY_MS, END, 60_000));
                    matrix(r.expect("evaluates")).len()
                })
            });
        }
    }
    g.finish();
    let data = Blocks::new(0);
    let engine = Engine::new(&data, QueryLimits::default());
    let mut g = c.benchmark_group("answer_write");
    g.sample_size(20);
    for (name, q) in QUERIES {
        let e = parse(q).expect("parses");
        let m = matrix(
            rt.block_on(engine.range(&e, END - DAY_MS, END, 60_000))
                .expect("evaluates"),
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                nunchi_collector::query::value::write_matrix_parts(black_box(&m)).map(|p| p.len())
            })
        });
    }
    g.finish();
}

criterion_group!(promql, benches);
criterion_main!(promql);

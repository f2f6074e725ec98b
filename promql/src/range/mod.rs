//! Series-major evaluation of range queries, for the shapes dashboards send most:
//! selectors, functions of one range window over a range selector, aggregations
//! (`sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar`) of those, unary
//! minus, and arithmetic or comparison with a number. Each series is walked once, with
//! cursors that move forward with the steps, instead of being searched at every step.
//!
//! Anything else (and any `@` modifier) returns `None` and goes to the per-step
//! evaluator. Both paths compute values with the same functions, and the differential
//! tests compare range queries of both kinds with Prometheus.

use std::collections::HashMap;
use std::sync::Arc;

use nunchi_model::{Labels, Sample, is_stale_nan};

use nunchi_tsdb::{Cadence, Samples};
use promql_parser::parser::token::{
    T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_STDDEV, T_STDVAR, T_SUM, TokenId,
};
use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use rayon::prelude::*;

use super::aggregate::{Acc, group_labels};
use super::binary::{apply, drops_name, is_comparison};
use super::bounds::{lookback_first, window_first};
use super::functions::{
    Edges, Extrapolation, extrapolate, extrapolate_exact, extrapolated_rate_scan,
    is_window_function, keeps_name, window_value,
};
use super::load::{Loaded, LoadedSeries, offset_ms};
use super::value::drop_name;

mod aggregate;
mod window;

use aggregate::*;
use window::*;

/// The evaluation times of a range query.
pub(crate) struct Steps {
    pub(crate) start: i64,
    pub(crate) step: i64,
    pub(crate) n: usize,
}

impl Steps {
    fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One result series: its value at each step, `None` where it has none.
pub(crate) struct Track {
    pub(crate) labels: Arc<Labels>,
    pub(crate) values: Vec<Option<f64>>,
}

/// Evaluates `e` at every step, or `None` when `e` is not a shape this path takes.
pub(crate) fn eval(loaded: &Loaded, e: &Expr, steps: &Steps, lookback: i64) -> Option<Vec<Track>> {
    match e {
        Expr::Paren(p) => eval(loaded, &p.expr, steps, lookback),
        Expr::VectorSelector(vs) if vs.at.is_none() => Some(selector(loaded, vs, steps, lookback)),
        Expr::Call(c) if is_window_function(c.func.name) && c.args.args.len() == 1 => {
            match c.args.args[0].as_ref() {
                Expr::MatrixSelector(ms) if ms.vs.at.is_none() => {
                    window_function(loaded, c.func.name, ms, steps)
                }
                _ => None,
            }
        }
        Expr::Aggregate(a) if a.param.is_none() => {
            let op = a.op.id();
            if !matches!(
                op,
                T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP | T_STDDEV | T_STDVAR
            ) {
                return None;
            }
            if let Some(groups) = fused_aggregate(loaded, op, &a.modifier, &a.expr, steps) {
                return Some(groups);
            }
            let inner = eval(loaded, &a.expr, steps, lookback)?;
            Some(aggregate(op, &a.modifier, inner, steps))
        }
        Expr::Unary(u) => {
            let inner = eval(loaded, &u.expr, steps, lookback)?;
            unique(
                inner
                    .into_iter()
                    .map(|t| Track {
                        labels: Arc::new(drop_name(&t.labels)),
                        values: t.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                    })
                    .collect(),
            )
        }
        Expr::Binary(b) if b.modifier.as_ref().is_none_or(|m| m.matching.is_none()) => {
            let op = b.op.id();
            let (vector, number, swap) = match (b.lhs.as_ref(), b.rhs.as_ref()) {
                (v, Expr::NumberLiteral(n)) => (v, n.val, false),
                (Expr::NumberLiteral(n), v) => (v, n.val, true),
                _ => return None,
            };
            let return_bool = b.return_bool();
            let inner = eval(loaded, vector, steps, lookback)?;
            let drop = drops_name(op) || return_bool;
            let cmp = is_comparison(op);
            let tracks = inner
                .into_iter()
                .map(|t| Track {
                    labels: if drop {
                        Arc::new(drop_name(&t.labels))
                    } else {
                        t.labels
                    },
                    values: t
                        .values
                        .into_iter()
                        .map(|v| {
                            let v = v?;
                            scalar_op(op, v, number, swap, cmp, return_bool)
                        })
                        .collect(),
                })
                .collect();
            unique(tracks)
        }
        _ => None,
    }
}

/// A vector element `v` against a number, as the per-step evaluator does it.
fn scalar_op(op: TokenId, v: f64, n: f64, swap: bool, cmp: bool, return_bool: bool) -> Option<f64> {
    let (l, r) = if swap { (n, v) } else { (v, n) };
    let (mut value, keep) = apply(op, l, r);
    if cmp && swap {
        value = v;
    }
    if return_bool {
        return Some(if keep { 1.0 } else { 0.0 });
    }
    keep.then_some(value)
}

/// Refuses (leaves to the per-step path, which reports it) a result where two series have
/// the same labels.
fn unique(tracks: Vec<Track>) -> Option<Vec<Track>> {
    let mut seen = std::collections::HashSet::with_capacity(tracks.len());
    tracks
        .iter()
        .all(|t| seen.insert(t.labels.clone()))
        .then_some(tracks)
}

fn series<'a>(loaded: &'a Loaded, vs: &VectorSelector) -> &'a [LoadedSeries] {
    loaded
        .get(&(vs as *const _ as usize))
        .map_or(&[], Vec::as_slice)
}

fn selector(loaded: &Loaded, vs: &VectorSelector, steps: &Steps, lookback: i64) -> Vec<Track> {
    let off = offset_ms(&vs.offset);
    let mut out = Vec::new();
    let mut joined = Vec::new();
    for s in series(loaded, vs) {
        let samples = contiguous(s, &mut joined);
        let mut j = 0;
        let mut values = Vec::with_capacity(steps.n);
        let mut any = false;
        for i in 0..steps.n {
            let at = steps.at(i) - off;
            while j < samples.len() && samples[j].timestamp_ms <= at {
                j += 1;
            }
            let v = j
                .checked_sub(1)
                .map(|k| samples[k])
                .filter(|x| {
                    x.timestamp_ms >= lookback_first(at, lookback) && !is_stale_nan(x.value)
                })
                .map(|x| x.value);
            any |= v.is_some();
            values.push(v);
        }
        if any {
            out.push(Track {
                labels: s.labels.clone(),
                values,
            });
        }
    }
    out
}

/// A series' samples in one slice: borrowed when storage returned them as one run, else
/// copied into `joined`, which is reused from series to series and so stays in cache.
fn contiguous<'s>(s: &'s LoadedSeries, joined: &'s mut Vec<Sample>) -> &'s [Sample] {
    if let Some(one) = s.runs.as_slice() {
        return one;
    }
    joined.clear();
    for p in s.runs.parts() {
        joined.extend_from_slice(p);
    }
    joined
}

fn window_function(
    loaded: &Loaded,
    name: &str,
    ms: &MatrixSelector,
    steps: &Steps,
) -> Option<Vec<Track>> {
    let w = Window::new(name, ms, steps);
    let all = series(loaded, &ms.vs);
    let samples: usize = all.iter().map(|s| s.runs.len()).sum();
    // Large inputs are split over the cores, each part walked as below; small ones are not
    // worth a thread.
    let parts = parts_for(samples).min(all.len().max(1));
    let out: Vec<Track> = if parts <= 1 {
        w.tracks(all)
    } else {
        let size = all.len().div_ceil(parts);
        all.par_chunks(size)
            .flat_map_iter(|part| w.tracks(part))
            .collect()
    };
    unique(out)
}

/// Below this many input samples a window function runs on one core.
const PARALLEL_MIN_SAMPLES: usize = 200_000;

/// How many parts an input of `samples` is split into, one per core at most.
fn parts_for(samples: usize) -> usize {
    rayon::current_num_threads().min(samples / PARALLEL_MIN_SAMPLES + 1)
}

/// The group of each of `labels` under `modifier`, and the groups' labels in order of
/// first appearance.
fn groups_of<'l>(
    labels: impl Iterator<Item = &'l Labels>,
    modifier: &Option<promql_parser::parser::LabelModifier>,
) -> (Vec<Labels>, Vec<usize>) {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut keys: Vec<Labels> = Vec::new();
    let member_of = labels
        .map(|l| {
            *index
                .entry(group_labels(l, modifier, None))
                .or_insert_with_key(|key| {
                    keys.push(key.clone());
                    keys.len() - 1
                })
        })
        .collect();
    (keys, member_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nunchi_tsdb::Block;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    #[test]
    fn cursors_and_resets_agree_with_a_search_of_the_joined_samples() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            // A counter with irregular gaps and some resets, split into shared and owned runs.
            let mut all = Vec::new();
            let (mut t, mut v) = (g.next(50_000) as i64 - 25_000, 0.0);
            for _ in 0..g.next(400) {
                let gap = if g.next(10) == 0 { 200_000 } else { 20_000 };
                t += 1 + g.next(gap) as i64;
                v = if g.next(30) == 0 {
                    0.0
                } else {
                    v + g.next(100) as f64
                };
                all.push(Sample {
                    timestamp_ms: t,
                    value: v,
                });
            }
            let mut runs = Samples::default();
            let mut rest = all.as_slice();
            while !rest.is_empty() {
                let k = (1 + g.next(80) as usize).min(rest.len());
                if g.next(2) == 0 {
                    let block = Arc::new(Block::new(rest[..k].to_vec()));
                    runs.push_shared(&block, 0..k);
                } else {
                    runs.push(rest[..k].to_vec());
                }
                rest = &rest[k..];
            }
            assert_eq!(runs.len(), all.len());
            let steps = Steps {
                start: g.next(400_000) as i64 - 100_000,
                step: 1 + g.next(60_000) as i64,
                n: 1 + g.next(200) as usize,
            };
            let (off, range) = (g.next(30_000) as i64 - 10_000, 1 + g.next(300_000) as i64);
            let parts: Vec<&[Sample]> = runs.parts().collect();
            let (mut a, mut b) = (Cursor::default(), Cursor::default());
            for i in 0..steps.n {
                let end = steps.at(i) - off;
                a.seek(&parts, end - range);
                b.seek(&parts, end + 1);
                let want_a = all.partition_point(|s| s.timestamp_ms < end - range);
                let want_b = all.partition_point(|s| s.timestamp_ms <= end);
                let why = format!("round {round}, step {i}");
                assert_eq!((a.pos, b.pos), (want_a, want_b), "{why}");
                if want_a < all.len() {
                    assert_eq!(a.sample(&parts), all[want_a], "{why}");
                } else {
                    assert_eq!(a.run, parts.len(), "{why}");
                }
                if want_b > 0 {
                    assert_eq!(b.before(&parts), all[want_b - 1], "{why}");
                }
                let mut got = Vec::new();
                gather(&runs, want_a..want_b.max(want_a), &mut got);
                assert_eq!(got, all[want_a..want_b.max(want_a)], "{why}");
            }
            let mut resets = Vec::new();
            assert!(runs.counter_resets(&mut resets));
            let want: Vec<usize> = (1..all.len())
                .filter(|&j| all[j].value < all[j - 1].value)
                .collect();
            assert_eq!(resets, want, "round {round}");
        }
    }

    /// The parsed `q` and its data: `series` counters of `samples` samples each, 15 s
    /// apart, in shared runs of 480, in groups by the label `g`.
    fn loaded(q: &str, series: u64, samples_each: i64) -> (Expr, Loaded) {
        let e = super::super::parse(q).expect("parses");
        let mut vs = &e;
        let vs = loop {
            vs = match vs {
                Expr::Aggregate(a) => &a.expr,
                Expr::Call(c) => &c.args.args[0],
                Expr::Paren(p) => &p.expr,
                Expr::MatrixSelector(m) => break &m.vs,
                _ => unreachable!("{q}"),
            }
        };
        let mut g = Gen(series * 31 + 7);
        let all = (0..series)
            .map(|k| {
                let (mut v, mut samples) = (0.0, Vec::new());
                for i in 0..samples_each {
                    if g.next(50) == 0 {
                        continue;
                    }
                    v = if g.next(500) == 0 {
                        1.0
                    } else {
                        v + g.next(1000) as f64 / 7.0
                    };
                    samples.push(Sample {
                        timestamp_ms: i * 15_000,
                        value: v,
                    });
                }
                let mut runs = Samples::default();
                for c in samples.chunks(480) {
                    let block = Arc::new(Block::new(c.to_vec()));
                    runs.push_shared(&block, 0..c.len());
                }
                let labels = Labels::from_pairs([
                    ("__name__", "c".to_string()),
                    ("g", (k % 7).to_string()),
                    ("k", k.to_string()),
                ]);
                LoadedSeries::new(labels, runs, None)
            })
            .collect();
        let mut loaded = Loaded::new();
        loaded.insert(vs as *const _ as usize, all);
        (e, loaded)
    }

    #[test]
    fn steps_taken_in_stretches_equal_those_taken_one_by_one() {
        let mut g = Gen(0x51_7cc1_b727_220a);
        let mut stretched = 0;
        for round in 0..400 {
            // A counter of exact cadence with some resets, in blocks with gaps between
            // some of them, and a last run of its own as the head gives.
            let interval = [1_000, 10_000, 15_000][g.next(3) as usize];
            let mut runs = Samples::default();
            let mut all = Vec::new();
            let (mut t, mut v) = (g.next(100_000) as i64, g.next(1_000) as f64);
            for block in 0..1 + g.next(5) {
                let mut samples = Vec::new();
                for _ in 0..1 + g.next(300) {
                    v = if g.next(200) == 0 {
                        g.next(10) as f64
                    } else {
                        v + g.next(1_000) as f64 / 8.0
                    };
                    samples.push(Sample {
                        timestamp_ms: t,
                        value: v,
                    });
                    t += interval;
                }
                all.extend_from_slice(&samples);
                if block > 0 && g.next(4) == 0 {
                    runs.push(samples);
                } else {
                    runs.push_shared(&Arc::new(Block::new(samples.clone())), 0..samples.len());
                }
                if g.next(3) == 0 {
                    t += interval * g.next(40) as i64 + g.next(interval as u64) as i64;
                }
            }
            let steps = Steps {
                start: g.next(400_000) as i64 - 100_000,
                step: if g.next(4) == 0 {
                    1 + g.next(90_000) as i64
                } else {
                    interval * (1 + g.next(8) as i64)
                },
                n: 1 + g.next(400) as usize,
            };
            let range = if g.next(2) == 0 {
                interval * (1 + g.next(30) as i64)
            } else {
                1 + g.next(600_000) as i64
            };
            let off = g.next(60_000) as i64 - 20_000;
            let labels = Labels::from_pairs([("__name__", "c")]);
            let shared = LoadedSeries::new(labels.clone(), runs, None);
            let plain = LoadedSeries::new(labels, Samples::from(all), None);
            for name in ["rate", "increase"] {
                let w = Window {
                    name,
                    off,
                    range,
                    keep: false,
                    counter_rate: true,
                    steps: &steps,
                };
                let (mut got, mut want) = (Vec::new(), Vec::new());
                w.series_values(&shared, &mut Scratch::default(), &mut got);
                w.series_values(&plain, &mut Scratch::default(), &mut want);
                let bits = |v: &[Option<f64>]| -> Vec<Option<u64>> {
                    v.iter().map(|x| x.map(f64::to_bits)).collect()
                };
                assert_eq!(bits(&got), bits(&want), "round {round}, {name}");
                stretched += got.iter().filter(|v| v.is_some()).count();
            }
        }
        assert!(stretched > 10_000);
    }

    #[test]
    fn aggregations_of_window_functions_equal_those_of_their_result_series() {
        // 40 series of 6,000 samples: enough for the parts to be split over cores.
        for q in [
            "sum by (g) (rate(c[5m]))",
            "max without (k) (increase(c[10m] offset 1m))",
            "count by (g) (delta(c[2m]))",
            "min by (g) (rate(c[5m]))",
            "group by (g) ((rate(c[5m])))",
        ] {
            let (e, loaded) = loaded(q, 40, 6_000);
            let Expr::Aggregate(a) = &e else { panic!() };
            let steps = Steps {
                start: 300_000,
                step: 60_000,
                n: 1_500,
            };
            let fused = fused_aggregate(&loaded, a.op.id(), &a.modifier, &a.expr, &steps);
            let inner = eval(&loaded, &a.expr, &steps, 300_000).expect("range path");
            let plain = aggregate(a.op.id(), &a.modifier, inner, &steps);
            let fused = fused.unwrap_or_else(|| panic!("{q}: not fused"));
            assert!(!plain.is_empty(), "{q}");
            assert_eq!(fused.len(), plain.len(), "{q}");
            assert_eq!(fused.len(), 7, "{q}");
            for (f, p) in fused.iter().zip(&plain) {
                assert_eq!(f.labels, p.labels, "{q}");
                let bits = |t: &Track| -> Vec<Option<u64>> {
                    t.values.iter().map(|v| v.map(f64::to_bits)).collect()
                };
                assert_eq!(bits(f), bits(p), "{q}: {}", f.labels);
            }
        }
        // One group over several cores: left to the general path, which splits by series.
        let (e, loaded) = loaded("sum(rate(c[1m]))", 40, 6_000);
        let Expr::Aggregate(a) = &e else { panic!() };
        let steps = Steps {
            start: 0,
            step: 60_000,
            n: 1_500,
        };
        let fused = fused_aggregate(&loaded, a.op.id(), &a.modifier, &a.expr, &steps);
        assert_eq!(fused.is_none(), rayon::current_num_threads() > 1);
    }
}

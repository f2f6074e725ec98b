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
use promql_parser::parser::token::{
    T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_STDDEV, T_STDVAR, T_SUM, TokenId,
};
use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use rayon::prelude::*;

use super::aggregate::{Acc, group_labels};
use super::binary::{apply, drops_name, is_comparison};
use super::functions::{
    Edges, extrapolate, extrapolated_rate_scan, is_window_function, keeps_name, window_value,
};
use super::value::drop_name;
use super::{Loaded, LoadedSeries, offset_ms};

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
                .filter(|x| x.timestamp_ms >= at - lookback && !is_stale_nan(x.value))
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
    let w = Window {
        name,
        off: offset_ms(&ms.vs.offset),
        range: ms.range.as_millis() as i64,
        keep: keeps_name(name),
        counter_rate: matches!(name, "rate" | "increase"),
        steps,
    };
    let all = series(loaded, &ms.vs);
    let samples: usize = all.iter().map(|s| s.runs.len()).sum();
    // Large inputs are split over the cores, each part walked as below; small ones are not
    // worth a thread.
    let parts = rayon::current_num_threads()
        .min(samples / PARALLEL_MIN_SAMPLES + 1)
        .min(all.len().max(1));
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

/// A function of one range window, evaluated at every step.
struct Window<'a> {
    name: &'a str,
    off: i64,
    range: i64,
    keep: bool,
    counter_rate: bool,
    steps: &'a Steps,
}

/// Moves the cursors `a..b` forward to the samples in `(start, end]`.
#[inline]
fn window_bounds(samples: &[Sample], a: &mut usize, b: &mut usize, start: i64, end: i64) {
    while *a < samples.len() && samples[*a].timestamp_ms < start {
        *a += 1;
    }
    *b = (*b).max(*a);
    while *b < samples.len() && samples[*b].timestamp_ms <= end {
        *b += 1;
    }
}

/// Space reused from series to series.
#[derive(Default)]
struct Scratch {
    joined: Vec<Sample>,
    resets: Vec<u32>,
    fresh: Vec<Sample>,
    plain: Vec<(usize, Edges)>,
}

impl Window<'_> {
    /// The result series of `series`, in order, without those with no value at any step.
    fn tracks(&self, series: &[LoadedSeries]) -> Vec<Track> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        for s in series {
            let values = if self.counter_rate {
                self.counter_rates(s, &mut scratch)
            } else {
                self.values(s, &mut scratch)
            };
            if values.iter().any(Option::is_some) {
                out.push(Track {
                    labels: if self.keep {
                        s.labels.clone()
                    } else {
                        Arc::new(drop_name(&s.labels))
                    },
                    values,
                });
            }
        }
        out
    }

    /// `rate` or `increase` at every step. Windows without counter resets (nearly all)
    /// need only their first and last samples and their count: these are gathered first
    /// and extrapolated after, in a pass without branches on the data.
    fn counter_rates(&self, s: &LoadedSeries, x: &mut Scratch) -> Vec<Option<f64>> {
        let (range, steps) = (self.range, self.steps);
        let per_second = self.name == "rate";
        let samples = contiguous(s, &mut x.joined);
        // resets[k]: counter resets among samples 1..=k, so a window's are found in O(1).
        let (mut count, mut prev, mut stale) = (0u32, f64::NAN, false);
        x.resets.clear();
        x.resets.extend(samples.iter().map(|s| {
            count += u32::from(s.value < prev);
            stale |= is_stale_nan(s.value);
            prev = s.value;
            count
        }));
        x.plain.clear();
        let (mut a, mut b) = (0, 0);
        let mut values = Vec::with_capacity(steps.n);
        for i in 0..steps.n {
            let end = steps.at(i) - self.off;
            window_bounds(samples, &mut a, &mut b, end - range, end);
            let window = &samples[a..b];
            let v = if window.len() < 2 {
                None
            } else if stale {
                x.fresh.clear();
                x.fresh
                    .extend(window.iter().filter(|s| !is_stale_nan(s.value)));
                window_value(self.name, &x.fresh, None, end, range)
            } else if x.resets[b - 1] != x.resets[a] {
                extrapolated_rate_scan(window, end - range, end, true, per_second, range, true)
            } else {
                let (first, last) = (window[0], window[window.len() - 1]);
                x.plain.push((
                    i,
                    Edges {
                        first,
                        last,
                        n: window.len(),
                        change: last.value - first.value,
                    },
                ));
                None
            };
            values.push(v);
        }
        for &(i, e) in &x.plain {
            let end = steps.at(i) - self.off;
            values[i] = Some(extrapolate(e, end - range, end, true, per_second, range));
        }
        values
    }

    /// Any other window function at every step.
    fn values(&self, s: &LoadedSeries, x: &mut Scratch) -> Vec<Option<f64>> {
        let (range, steps) = (self.range, self.steps);
        let samples = contiguous(s, &mut x.joined);
        let stale = samples.iter().any(|x| is_stale_nan(x.value));
        let (mut a, mut b) = (0, 0);
        let mut values = Vec::with_capacity(steps.n);
        for i in 0..steps.n {
            let end = steps.at(i) - self.off;
            window_bounds(samples, &mut a, &mut b, end - range, end);
            let raw = &samples[a..b];
            let window: &[Sample] = if stale {
                x.fresh.clear();
                x.fresh
                    .extend(raw.iter().filter(|x| !is_stale_nan(x.value)));
                &x.fresh
            } else {
                raw
            };
            let v = if window.is_empty() {
                None
            } else {
                let rollup = s.rollup.as_deref().map(|r| &r[a..b]);
                window_value(self.name, window, rollup, end, range)
            };
            values.push(v);
        }
        values
    }
}

fn aggregate(
    op: TokenId,
    modifier: &Option<promql_parser::parser::LabelModifier>,
    inner: Vec<Track>,
    steps: &Steps,
) -> Vec<Track> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Track> = Vec::new();
    let member_of: Vec<usize> = inner
        .iter()
        .map(|t| {
            let key = group_labels(&t.labels, modifier, None);
            *index.entry(key.clone()).or_insert_with(|| {
                groups.push(Track {
                    labels: Arc::new(key),
                    values: vec![None; steps.n],
                });
                groups.len() - 1
            })
        })
        .collect();
    if matches!(op, T_SUM | T_COUNT | T_MIN | T_MAX | T_GROUP) {
        // Plain arrays, group by group; per step, values are combined in series order,
        // as the per-step evaluator does.
        let n = steps.n;
        let mut acc = vec![0.0f64; groups.len() * n];
        let mut seen = vec![false; groups.len() * n];
        for (t, &g) in inner.iter().zip(&member_of) {
            let (acc, seen) = (&mut acc[g * n..(g + 1) * n], &mut seen[g * n..(g + 1) * n]);
            for (i, v) in t.values.iter().enumerate() {
                let Some(v) = *v else { continue };
                acc[i] = match op {
                    T_SUM => acc[i] + v,
                    T_COUNT => acc[i] + 1.0,
                    T_GROUP => 1.0,
                    // NaN gives way to any number, as in Prometheus.
                    T_MIN if seen[i] && !(v < acc[i] || acc[i].is_nan()) => acc[i],
                    T_MAX if seen[i] && !(v > acc[i] || acc[i].is_nan()) => acc[i],
                    _ => v,
                };
                seen[i] = true;
            }
        }
        for (g, track) in groups.iter_mut().enumerate() {
            for i in 0..n {
                if seen[g * n + i] {
                    track.values[i] = Some(acc[g * n + i]);
                }
            }
        }
        groups.retain(|g| g.values.iter().any(Option::is_some));
        return groups;
    }
    let mut accs: Vec<Acc> = (0..groups.len()).map(|_| Acc::new()).collect();
    for i in 0..steps.n {
        for a in &mut accs {
            *a = Acc::new();
        }
        for (t, &g) in inner.iter().zip(&member_of) {
            if let Some(v) = t.values[i] {
                accs[g].add(v, false);
            }
        }
        for (g, a) in accs.iter_mut().enumerate() {
            if a.count() > 0.0 {
                groups[g].values[i] = Some(a.value(op, None));
            }
        }
    }
    groups.retain(|g| g.values.iter().any(Option::is_some));
    groups
}

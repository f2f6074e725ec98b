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
use super::functions::{
    Edges, Extrapolation, extrapolate, extrapolate_exact, extrapolated_rate_scan,
    is_window_function, keeps_name, window_value,
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
    fresh: Vec<Sample>,
    resets: Vec<usize>,
}

/// A position in a series' runs that only moves forward: sample `at` of run `run`, the
/// series' sample `pos`; past the last sample, `run` is the number of runs.
///
/// A window moving by a fixed step over samples of a steady cadence moves by the same
/// number of samples every step, so each move first tries `stride`, the length of the one
/// before, which two timestamps confirm; only where that fails does it walk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cursor {
    run: usize,
    at: usize,
    pos: usize,
    stride: usize,
}

impl Cursor {
    /// Moves on to the first sample at or after `t`, which may not be before the time of
    /// the move before.
    #[inline(always)]
    fn seek(&mut self, runs: &[&[Sample]], t: i64) {
        if let Some(run) = runs.get(self.run) {
            // The samples before `at` are all before `t`.
            let to = self.at + self.stride;
            if to < run.len()
                && run[to].timestamp_ms >= t
                && (self.stride == 0 || run[to - 1].timestamp_ms < t)
            {
                self.at = to;
                self.pos += self.stride;
                return;
            }
        }
        self.walk(runs, t);
    }

    /// [`Cursor::seek`] sample by sample, and run by run past those wholly before `t`.
    #[inline(never)]
    fn walk(&mut self, runs: &[&[Sample]], t: i64) {
        let from = self.pos;
        while let Some(&run) = runs.get(self.run) {
            if run[run.len() - 1].timestamp_ms < t {
                self.pos += run.len() - self.at;
                self.run += 1;
                self.at = 0;
                continue;
            }
            while run[self.at].timestamp_ms < t {
                self.at += 1;
                self.pos += 1;
            }
            break;
        }
        self.stride = self.pos - from;
    }

    /// The sample at the cursor; it must not be past the end.
    #[inline]
    fn sample(&self, runs: &[&[Sample]]) -> Sample {
        runs[self.run][self.at]
    }

    /// The sample before the cursor; it must not be at the start.
    #[inline]
    fn before(&self, runs: &[&[Sample]]) -> Sample {
        match self.at.checked_sub(1) {
            Some(at) => runs[self.run][at],
            None => {
                let run = runs[self.run - 1];
                run[run.len() - 1]
            }
        }
    }
}

/// How many steps ahead of the window's end [`Window::stretch`] has the samples loaded:
/// its loop reads little else, so it would otherwise wait on memory at every step.
const PREFETCH_STEPS: usize = 48;

/// Asks the CPU to start loading the cache line at `p` (on x86-64; elsewhere nothing).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing and faults at no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Copies the samples at positions `at` of `runs` into `out`.
fn gather(runs: &Samples, at: std::ops::Range<usize>, out: &mut Vec<Sample>) {
    out.clear();
    let mut base = 0;
    for p in runs.parts() {
        let (lo, hi) = (at.start.max(base), at.end.min(base + p.len()));
        if lo < hi {
            out.extend_from_slice(&p[lo - base..hi - base]);
        }
        base += p.len();
        if base >= at.end {
            break;
        }
    }
}

impl<'a> Window<'a> {
    fn new(name: &'a str, ms: &MatrixSelector, steps: &'a Steps) -> Self {
        Window {
            name,
            off: offset_ms(&ms.vs.offset),
            range: ms.range.as_millis() as i64,
            keep: keeps_name(name),
            counter_rate: matches!(name, "rate" | "increase"),
            steps,
        }
    }

    /// The result series of `series`, in order, without those with no value at any step.
    fn tracks(&self, series: &[LoadedSeries]) -> Vec<Track> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        for s in series {
            let mut values = Vec::with_capacity(self.steps.n);
            self.series_values(s, &mut scratch, &mut values);
            if values.iter().any(Option::is_some) {
                out.push(Track {
                    labels: self.labels(s),
                    values,
                });
            }
        }
        out
    }

    /// The labels of `s`'s result series.
    fn labels(&self, s: &LoadedSeries) -> Arc<Labels> {
        if self.keep {
            s.labels.clone()
        } else {
            Arc::new(drop_name(&s.labels))
        }
    }

    /// The values of `s` at every step, into `values` (emptied first).
    fn series_values(&self, s: &LoadedSeries, x: &mut Scratch, values: &mut Vec<Option<f64>>) {
        values.clear();
        if self.counter_rate {
            self.counter_rates(s, x, values)
        } else {
            self.values(s, x, values)
        }
    }

    /// `rate` or `increase` at every step, from two cursors that find each window's first
    /// and last sample.
    ///
    /// The series' counter resets are listed first (decoded blocks know theirs). Windows
    /// without one (nearly all) need nothing but their two ends: their change is `last -
    /// first`. The few with a reset are gathered and scanned; a series with staleness
    /// markers goes the general way. Where the windows lie in a block of exact cadence,
    /// [`Window::stretch`] takes many steps at once.
    fn counter_rates(&self, s: &LoadedSeries, x: &mut Scratch, values: &mut Vec<Option<f64>>) {
        let (range, steps) = (self.range, self.steps);
        let per_second = self.name == "rate";
        if !s.runs.counter_resets(&mut x.resets) {
            return self.values(s, x, values);
        }
        let (runs, cadences): (Vec<&[Sample]>, Vec<Option<Cadence>>) =
            s.runs.cadenced_parts().unzip();
        let (mut a, mut b) = (Cursor::default(), Cursor::default());
        // Resets at or before the window's first sample.
        let mut passed = 0;
        let mut i = 0;
        while i < steps.n {
            let end = steps.at(i) - self.off;
            a.seek(&runs, end - range);
            b.seek(&runs, end + 1);
            let n = b.pos - a.pos;
            if n < 2 {
                values.push(None);
                i += 1;
                continue;
            }
            if let Some(c) = cadences[a.run]
                && let Some(taken) = self.stretch(
                    s,
                    &runs,
                    c,
                    (&mut a, &mut b),
                    (i, end),
                    x,
                    &mut passed,
                    values,
                )
            {
                i += taken;
                continue;
            }
            let v = self
                .across_reset(s, x, &mut passed, a.pos..b.pos, end)
                .unwrap_or_else(|| {
                    let (first, last) = (a.sample(&runs), b.before(&runs));
                    let e = Edges {
                        first,
                        last,
                        n,
                        change: last.value - first.value,
                    };
                    Some(extrapolate(e, end - range, end, true, per_second, range))
                });
            values.push(v);
            i += 1;
        }
    }

    /// `rate` or `increase` at steps `i..`, as many as have their window inside the run of
    /// exact cadence `c` that holds step `i`'s (found by the cursors `a` and `b`): `None`
    /// when there are none such. The windows are then a whole number of samples apart,
    /// their first and last samples lie as far from their ends every step, and so each
    /// needs only its two values read and its change scaled by one factor. Leaves the
    /// cursors at the last step taken; `passed` counts the resets before its window.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn stretch(
        &self,
        s: &LoadedSeries,
        runs: &[&[Sample]],
        c: Cadence,
        (a, b): (&mut Cursor, &mut Cursor),
        (i, end): (usize, i64),
        x: &mut Scratch,
        passed: &mut usize,
        values: &mut Vec<Option<f64>>,
    ) -> Option<usize> {
        let (range, step, per_second) = (self.range, self.steps.step, self.name == "rate");
        let run = runs[a.run];
        // The window's first sample is not its run's first, so the sample before it, one
        // interval earlier, stays before the window however far it moves; its last is
        // followed by another of the run.
        if b.run != a.run || a.at == 0 || step % c.interval != 0 {
            return None;
        }
        let stride = (step / c.interval) as usize;
        let taken = ((run.len() - 1 - b.at) / stride + 1).min(self.steps.n - i);
        let n = b.at - a.at;
        let (first, last) = (run[a.at].timestamp_ms, run[b.at - 1].timestamp_ms);
        let shape = Extrapolation::new(
            first - (end - range),
            end - last,
            last - first,
            n,
            per_second,
            range,
        )?;
        let base = a.pos - a.at;
        for j in 0..taken {
            let (pa, pb) = (a.at + j * stride, b.at + j * stride);
            prefetch(run.as_ptr().wrapping_add(pb + PREFETCH_STEPS * stride));
            let end = end + j as i64 * step;
            let v = self
                .across_reset(s, x, passed, base + pa..base + pb, end)
                .unwrap_or_else(|| {
                    let (first, last) = (run[pa], run[pb - 1]);
                    let change = last.value - first.value;
                    Some(shape.apply(first.value, change, true).unwrap_or_else(|| {
                        let e = Edges {
                            first,
                            last,
                            n,
                            change,
                        };
                        extrapolate_exact(e, end - range, end, true, per_second, range)
                    }))
                });
            values.push(v);
        }
        let moved = (taken - 1) * stride;
        for cursor in [a, b] {
            cursor.at += moved;
            cursor.pos += moved;
            if taken > 1 {
                cursor.stride = stride;
            }
        }
        Some(taken)
    }

    /// `rate` or `increase` of the window of samples at positions `at`, ending at `end`,
    /// read in full when a counter reset lies inside it; `None` when none does, and its
    /// two ends decide. Moves `passed` past the resets at or before its first sample.
    #[inline(always)]
    fn across_reset(
        &self,
        s: &LoadedSeries,
        x: &mut Scratch,
        passed: &mut usize,
        at: std::ops::Range<usize>,
        end: i64,
    ) -> Option<Option<f64>> {
        while x.resets.get(*passed).is_some_and(|&r| r <= at.start) {
            *passed += 1;
        }
        if x.resets.get(*passed).is_none_or(|&r| r >= at.end) {
            return None;
        }
        gather(&s.runs, at, &mut x.joined);
        let (range, per_second) = (self.range, self.name == "rate");
        Some(extrapolated_rate_scan(
            &x.joined,
            end - range,
            end,
            true,
            per_second,
            range,
            true,
        ))
    }

    /// Any other window function at every step.
    fn values(&self, s: &LoadedSeries, x: &mut Scratch, values: &mut Vec<Option<f64>>) {
        let (range, steps) = (self.range, self.steps);
        let samples = contiguous(s, &mut x.joined);
        let stale = samples.iter().any(|x| is_stale_nan(x.value));
        let (mut a, mut b) = (0, 0);
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
    }
}

/// Combines one series' `values` into a group's accumulators (`sum`, `count`, `min`,
/// `max`, `group`), step by step.
#[inline]
fn combine_all(op: TokenId, acc: &mut [f64], seen: &mut [bool], values: &[Option<f64>]) {
    // One loop per operation: the choice is made once, not at every step.
    match op {
        T_SUM => combine_with(acc, seen, values, |acc, v, _| acc + v),
        T_COUNT => combine_with(acc, seen, values, |acc, _, _| acc + 1.0),
        T_GROUP => combine_with(acc, seen, values, |_, _, _| 1.0),
        // NaN gives way to any number, as in Prometheus.
        T_MIN => combine_with(acc, seen, values, |acc, v, seen| {
            if seen && !(v < acc || acc.is_nan()) {
                acc
            } else {
                v
            }
        }),
        T_MAX => combine_with(acc, seen, values, |acc, v, seen| {
            if seen && !(v > acc || acc.is_nan()) {
                acc
            } else {
                v
            }
        }),
        _ => combine_with(acc, seen, values, |_, v, _| v),
    }
}

/// [`combine_all`] with `f(accumulated, value, seen before)`.
#[inline(always)]
fn combine_with(
    acc: &mut [f64],
    seen: &mut [bool],
    values: &[Option<f64>],
    f: impl Fn(f64, f64, bool) -> f64,
) {
    for ((acc, seen), v) in acc.iter_mut().zip(seen.iter_mut()).zip(values) {
        let Some(v) = *v else { continue };
        *acc = f(*acc, v, *seen);
        *seen = true;
    }
}

/// A group's values from its accumulators.
fn combined(acc: &[f64], seen: &[bool]) -> Vec<Option<f64>> {
    acc.iter()
        .zip(seen)
        .map(|(&a, &seen)| seen.then_some(a))
        .collect()
}

/// `op` (`sum`, `count`, `min`, `max` or `group`) of a window function over a range
/// selector, without a result series for each input series: the groups are split over
/// the cores, and each core walks the series of its groups in order, combining their
/// values as they come. So each group combines its values in series order, as
/// [`aggregate`] does. `None` when `inner` is not such a function, when two of its result
/// series would have the same labels (the general path reports that), or when a large
/// input has fewer groups than there are cores (the general path splits it by series).
fn fused_aggregate(
    loaded: &Loaded,
    op: TokenId,
    modifier: &Option<promql_parser::parser::LabelModifier>,
    inner: &Expr,
    steps: &Steps,
) -> Option<Vec<Track>> {
    if !matches!(op, T_SUM | T_COUNT | T_MIN | T_MAX | T_GROUP) {
        return None;
    }
    let mut inner = inner;
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    let Expr::Call(c) = inner else { return None };
    let [arg] = c.args.args.as_slice() else {
        return None;
    };
    let Expr::MatrixSelector(ms) = arg.as_ref() else {
        return None;
    };
    if !is_window_function(c.func.name) || ms.vs.at.is_some() {
        return None;
    }
    let w = Window::new(c.func.name, ms, steps);
    let all = series(loaded, &ms.vs);
    let labels: Vec<Arc<Labels>> = all.iter().map(|s| w.labels(s)).collect();
    let mut distinct = std::collections::HashSet::with_capacity(labels.len());
    if !labels.iter().all(|l| distinct.insert(l.as_ref())) {
        return None;
    }
    let (keys, member_of) = groups_of(labels.iter().map(Arc::as_ref), modifier);
    let mut weight = vec![0usize; keys.len()];
    for (s, &g) in all.iter().zip(&member_of) {
        weight[g] += s.runs.len();
    }
    let samples: usize = weight.iter().sum();
    let parts = parts_for(samples);
    if parts > keys.len() {
        return None;
    }
    // Groups in consecutive parts of about equal samples.
    let mut part_of = Vec::with_capacity(keys.len());
    let mut sum = 0;
    for &wt in &weight {
        part_of.push((sum * parts / samples.max(1)).min(parts - 1));
        sum += wt;
    }
    let n = steps.n;
    let run = |part: usize| {
        let mine: Vec<usize> = (0..keys.len()).filter(|&g| part_of[g] == part).collect();
        let mut local = vec![usize::MAX; keys.len()];
        for (k, &g) in mine.iter().enumerate() {
            local[g] = k;
        }
        let mut acc = vec![0.0f64; mine.len() * n];
        let mut seen = vec![false; mine.len() * n];
        // The first series with a value, per group: groups come out in that order.
        let mut first = vec![usize::MAX; mine.len()];
        let (mut x, mut values) = (Scratch::default(), Vec::with_capacity(n));
        for (k, s) in all.iter().enumerate() {
            let l = local[member_of[k]];
            if l == usize::MAX {
                continue;
            }
            w.series_values(s, &mut x, &mut values);
            if !values.iter().any(Option::is_some) {
                continue;
            }
            first[l] = first[l].min(k);
            let span = l * n..(l + 1) * n;
            combine_all(op, &mut acc[span.clone()], &mut seen[span], &values);
        }
        mine.iter()
            .enumerate()
            .filter(|&(l, _)| first[l] != usize::MAX)
            .map(|(l, &g)| {
                let span = l * n..(l + 1) * n;
                (first[l], g, combined(&acc[span.clone()], &seen[span]))
            })
            .collect::<Vec<_>>()
    };
    let mut groups: Vec<(usize, usize, Vec<Option<f64>>)> = if parts <= 1 {
        run(0)
    } else {
        (0..parts).into_par_iter().flat_map_iter(run).collect()
    };
    groups.sort_unstable_by_key(|g| g.0);
    let mut keys: Vec<Option<Labels>> = keys.into_iter().map(Some).collect();
    Some(
        groups
            .into_iter()
            .map(|(_, g, values)| Track {
                labels: Arc::new(keys[g].take().unwrap_or_default()),
                values,
            })
            .collect(),
    )
}

fn aggregate(
    op: TokenId,
    modifier: &Option<promql_parser::parser::LabelModifier>,
    inner: Vec<Track>,
    steps: &Steps,
) -> Vec<Track> {
    let (keys, member_of) = groups_of(inner.iter().map(|t| t.labels.as_ref()), modifier);
    let mut groups: Vec<Track> = keys
        .into_iter()
        .map(|key| Track {
            labels: Arc::new(key),
            values: vec![None; steps.n],
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
            combine_all(op, acc, seen, &t.values);
        }
        for (g, track) in groups.iter_mut().enumerate() {
            track.values = combined(&acc[g * n..(g + 1) * n], &seen[g * n..(g + 1) * n]);
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

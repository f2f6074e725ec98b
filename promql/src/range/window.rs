//! A function of one range window over a range selector, walked once per series: cursors
//! that only move forward (trying the last step's stride first), stretches of steps over
//! samples of an exact cadence, and the space reused from series to series.

use super::*;

/// A function of one range window, evaluated at every step.
pub(super) struct Window<'a> {
    pub(super) name: &'a str,
    pub(super) off: i64,
    pub(super) range: i64,
    pub(super) keep: bool,
    pub(super) counter_rate: bool,
    pub(super) steps: &'a Steps,
}

/// Moves the cursors `a..b` forward to the samples in `[first, end]`.
#[inline]
pub(super) fn window_bounds(
    samples: &[Sample],
    a: &mut usize,
    b: &mut usize,
    first: i64,
    end: i64,
) {
    while *a < samples.len() && samples[*a].timestamp_ms < first {
        *a += 1;
    }
    *b = (*b).max(*a);
    while *b < samples.len() && samples[*b].timestamp_ms <= end {
        *b += 1;
    }
}

/// Space reused from series to series.
#[derive(Default)]
pub(super) struct Scratch {
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
pub(super) struct Cursor {
    pub(super) run: usize,
    at: usize,
    pub(super) pos: usize,
    stride: usize,
}

impl Cursor {
    /// Moves on to the first sample at or after `t`, which may not be before the time of
    /// the move before.
    #[inline(always)]
    pub(super) fn seek(&mut self, runs: &[&[Sample]], t: i64) {
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
    pub(super) fn walk(&mut self, runs: &[&[Sample]], t: i64) {
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
    pub(super) fn sample(&self, runs: &[&[Sample]]) -> Sample {
        runs[self.run][self.at]
    }

    /// The sample before the cursor; it must not be at the start.
    #[inline]
    pub(super) fn before(&self, runs: &[&[Sample]]) -> Sample {
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
pub(super) const PREFETCH_STEPS: usize = 48;

/// Asks the CPU to start loading the cache line at `p` (on x86-64; elsewhere nothing).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing and faults at no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Copies the samples at positions `at` of `runs` into `out`.
pub(super) fn gather(runs: &Samples, at: std::ops::Range<usize>, out: &mut Vec<Sample>) {
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
    pub(super) fn new(name: &'a str, ms: &MatrixSelector, steps: &'a Steps) -> Self {
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
    pub(super) fn tracks(&self, series: &[LoadedSeries]) -> Vec<Track> {
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
    pub(super) fn labels(&self, s: &LoadedSeries) -> Arc<Labels> {
        if self.keep {
            s.labels.clone()
        } else {
            Arc::new(drop_name(&s.labels))
        }
    }

    /// The values of `s` at every step, into `values` (emptied first).
    pub(super) fn series_values(
        &self,
        s: &LoadedSeries,
        x: &mut Scratch,
        values: &mut Vec<Option<f64>>,
    ) {
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
    pub(super) fn counter_rates(
        &self,
        s: &LoadedSeries,
        x: &mut Scratch,
        values: &mut Vec<Option<f64>>,
    ) {
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
            a.seek(&runs, window_first(end, range));
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
    pub(super) fn stretch(
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
    pub(super) fn across_reset(
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
    pub(super) fn values(&self, s: &LoadedSeries, x: &mut Scratch, values: &mut Vec<Option<f64>>) {
        let (range, steps) = (self.range, self.steps);
        let samples = contiguous(s, &mut x.joined);
        let stale = samples.iter().any(|x| is_stale_nan(x.value));
        let (mut a, mut b) = (0, 0);
        for i in 0..steps.n {
            let end = steps.at(i) - self.off;
            window_bounds(samples, &mut a, &mut b, window_first(end, range), end);
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

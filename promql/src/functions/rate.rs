//! The rate family: `rate`, `increase` and `delta` extrapolated to the window's edges as
//! Prometheus does (with an exact fallback for comparisons too close to call), and
//! `irate`/`idelta` from the last two samples.

use super::*;

/// `rate`, `increase` and `delta`: the change over the window, extrapolated to its edges
/// (by at most half a sample interval where the series does not reach them), counter
/// resets compensated for counters, and not below zero for a counter that starts there.
pub(crate) fn extrapolated_rate(
    s: &[Sample],
    range_start: i64,
    range_end: i64,
    counter: bool,
    per_second: bool,
    range_ms: i64,
) -> Option<f64> {
    extrapolated_rate_scan(
        s,
        range_start,
        range_end,
        counter,
        per_second,
        range_ms,
        true,
    )
}

/// [`extrapolated_rate`], skipping the search for counter resets when the caller knows
/// the window has none (`scan_resets` false).
pub(crate) fn extrapolated_rate_scan(
    s: &[Sample],
    range_start: i64,
    range_end: i64,
    counter: bool,
    per_second: bool,
    range_ms: i64,
    scan_resets: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut change = last.value - first.value;
    if counter && scan_resets {
        let mut prev = 0.0;
        for x in s {
            if x.value < prev {
                change += prev;
            }
            prev = x.value;
        }
    }
    Some(extrapolate(
        Edges {
            first,
            last,
            n: s.len(),
            change,
        },
        range_start,
        range_end,
        counter,
        per_second,
        range_ms,
    ))
}

/// What extrapolating a window's change needs of its samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edges {
    pub(crate) first: Sample,
    pub(crate) last: Sample,
    /// How many samples the window holds (at least 2).
    pub(crate) n: usize,
    /// `last - first`, with counter resets compensated for counters.
    pub(crate) change: f64,
}

/// The change of a window of at least two samples, extrapolated as Prometheus does.
///
/// Prometheus decides in seconds, after divisions, whether the window's ends are near
/// enough to its samples to extrapolate to them. Here the same comparisons are made in
/// whole milliseconds without dividing, which settles all but those too close to call;
/// those, and windows extrapolated by half a sample interval (at gaps), take
/// [`extrapolate_exact`], Prometheus' own arithmetic.
#[inline(always)]
pub(crate) fn extrapolate(
    e: Edges,
    range_start: i64,
    range_end: i64,
    counter: bool,
    per_second: bool,
    range_ms: i64,
) -> f64 {
    let (first, last) = (e.first, e.last);
    Extrapolation::new(
        first.timestamp_ms - range_start,
        range_end - last.timestamp_ms,
        last.timestamp_ms - first.timestamp_ms,
        e.n,
        per_second,
        range_ms,
    )
    .and_then(|x| x.apply(first.value, e.change, counter))
    .unwrap_or_else(|| extrapolate_exact(e, range_start, range_end, counter, per_second, range_ms))
}

/// What [`extrapolate`] makes of a window's sample times alone: windows whose first and
/// last samples lie as far from its ends share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extrapolation {
    to_start: f64,
    sampled: f64,
    /// What the change is multiplied by.
    factor: f64,
}

impl Extrapolation {
    /// For a window of `n` samples, the first `to_start` ms after its start, the last
    /// `to_end` ms before its end, `sampled` ms apart; `None` where Prometheus' arithmetic
    /// must decide ([`extrapolate_exact`]).
    #[inline(always)]
    pub(crate) fn new(
        to_start: i64,
        to_end: i64,
        sampled: i64,
        n: usize,
        per_second: bool,
        range_ms: i64,
    ) -> Option<Extrapolation> {
        // Both ends within the threshold: to_start < 1.1 * sampled / (n - 1), exactly as
        // 10 * to_start * (n - 1) < 11 * sampled, with a margin of 2^-40 for Prometheus'
        // rounding. Products too large for an i64 are left to the exact path.
        let threshold = sampled.saturating_mul(11);
        let margin = threshold >> 40;
        let clear = (n as i64 - 1)
            .checked_mul(10)
            .and_then(|n| to_start.max(to_end).checked_mul(n))
            .is_some_and(|near| near + margin < threshold);
        if !clear || threshold == i64::MAX {
            return None;
        }
        let (to_start, to_end, sampled) = (to_start as f64, to_end as f64, sampled as f64);
        let interval = sampled + to_start + to_end;
        let scale = if per_second {
            sampled * (range_ms as f64 / 1000.0)
        } else {
            sampled
        };
        Some(Extrapolation {
            to_start,
            sampled,
            factor: interval / scale,
        })
    }

    /// The window's change extrapolated, from its first value and its change; `None`
    /// where Prometheus' arithmetic must decide.
    #[inline(always)]
    pub(crate) fn apply(&self, first: f64, change: f64, counter: bool) -> Option<f64> {
        // The counter would reach zero after the window starts, to_zero < to_start, unless
        // it clearly reached it before: sampled * first > to_start * change (both sides are
        // not negative here) by more than the 1e-9 relative margin that covers Prometheus'
        // rounding.
        let clearly_before = self.sampled * first * (1.0 - 1e-9) > self.to_start * change;
        if counter && change > 0.0 && first >= 0.0 && !clearly_before {
            return None;
        }
        Some(change * self.factor)
    }
}

/// [`extrapolate`] with Prometheus' arithmetic, step by step, in seconds.
#[cold]
#[inline(never)]
pub(crate) fn extrapolate_exact(
    e: Edges,
    range_start: i64,
    range_end: i64,
    counter: bool,
    per_second: bool,
    range_ms: i64,
) -> f64 {
    let (first, last) = (e.first, e.last);
    let mut to_start = (first.timestamp_ms - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.timestamp_ms) as f64 / 1000.0;
    let sampled = (last.timestamp_ms - first.timestamp_ms) as f64 / 1000.0;
    let avg_step = sampled / (e.n - 1) as f64;
    if counter && e.change > 0.0 && first.value >= 0.0 {
        let to_zero = sampled * (first.value / e.change);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_step * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_step / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_step / 2.0
    };
    let mut result = e.change * (interval / sampled);
    if per_second {
        result /= range_ms as f64 / 1000.0;
    }
    result
}

/// `irate` and `idelta`: from the last two samples.
pub(super) fn instant_delta(s: &[Sample], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let last = s[s.len() - 1];
    let prev = s[s.len() - 2];
    let mut d = if rate && last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    if rate {
        let dt = (last.timestamp_ms - prev.timestamp_ms) as f64 / 1000.0;
        if dt == 0.0 {
            return None;
        }
        d /= dt;
    }
    Some(d)
}

//! Which samples a selector takes, in one place for both evaluation paths (the per-step
//! evaluator and the series-major range path) and for subqueries. These are Prometheus
//! 2's rules: a range window ending at `end` takes the samples in `[end - range, end]`, an
//! instant selector at `t` the newest in `[t - lookback, t]`, a subquery the steps in
//! `[end - range, end]`. Times are whole milliseconds, so each rule is stated as the
//! first time taken, and every caller compares `first <= ts <= end`.
//!
//! A window's start as extrapolation sees it (`rate`'s `rangeStart`) is `end - range`
//! whichever samples the window takes; it is not one of these bounds.

/// The earliest sample time a range window (or subquery) of `range` ms ending at `end`
/// takes.
#[inline(always)]
pub(crate) const fn window_first(end: i64, range: i64) -> i64 {
    end - range
}

/// The earliest sample time an instant selector at `t` takes.
#[inline(always)]
pub(crate) const fn lookback_first(t: i64, lookback: i64) -> i64 {
    t - lookback
}

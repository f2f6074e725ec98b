//! Functions of one range window: the dispatch of the window functions without
//! parameters ([`window_value`]), the `*_over_time` family, `changes`, `resets`, linear
//! regression for `deriv` and `predict_linear`, compensated sums and quantiles.

use super::*;

/// Whether a function of one range window keeps the metric name.
pub(crate) fn keeps_name(name: &str) -> bool {
    name == "last_over_time"
}

/// The value of a function of one range window without parameters (`rate`, `changes`,
/// `deriv`, the `*_over_time` family, ...) over `samples` (staleness markers left out),
/// the samples a window of `range` ms ending at `end` takes ([`crate::bounds`]); `None`
/// where it has none.
pub(crate) fn window_value(
    name: &str,
    samples: &[Sample],
    rollup: Option<&[RollupPoint]>,
    end: i64,
    range: i64,
) -> Option<f64> {
    match name {
        "rate" | "increase" | "delta" => extrapolated_rate(
            samples,
            end - range,
            end,
            name != "delta",
            name == "rate",
            range,
        ),
        "irate" | "idelta" => instant_delta(samples, name == "irate"),
        "changes" | "resets" => {
            let n = samples
                .windows(2)
                .filter(|p| {
                    let (a, b) = (p[0].value, p[1].value);
                    if name == "resets" {
                        b < a
                    } else {
                        a != b && !(a.is_nan() && b.is_nan())
                    }
                })
                .count();
            Some(n as f64)
        }
        "deriv" => {
            (samples.len() >= 2).then(|| linear_regression(samples, samples[0].timestamp_ms).0)
        }
        _ => over_time(name, samples, rollup),
    }
}

/// Whether [`window_value`] knows `name`.
pub(crate) fn is_window_function(name: &str) -> bool {
    family(name) == Some(Family::Window)
}

/// A [`Family::Window`] function: [`window_value`] of each series' window.
pub(super) fn over_window(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let r = ev.range_arg(arg(c, 0)?, t)?;
    let (end, range) = (r.end, r.range);
    let keep_name = keeps_name(name);
    let out = r
        .windows
        .into_iter()
        .filter_map(|w| {
            window_value(name, &w.samples, w.rollup, end, range).map(|value| Element {
                labels: if keep_name {
                    w.labels.clone()
                } else {
                    ev.drop_name(&w.labels)
                },
                value,
            })
        })
        .collect();
    Ok(Value::Vector(out))
}

/// `predict_linear(v range-vector, t scalar)`.
pub(super) fn predict_linear(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let r = ev.range_arg(arg(c, 0)?, t)?;
    let d = ev.eval_scalar(arg(c, 1)?, t)?;
    Ok(per_window(ev, r, |w| {
        (w.samples.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(&w.samples, t);
            slope * d + intercept
        })
    }))
}

/// `quantile_over_time(q scalar, v range-vector)`.
pub(super) fn quantile_over_time(
    ev: &impl Operands,
    c: &Call,
    t: i64,
) -> Result<Value, QueryError> {
    let q = ev.eval_scalar(arg(c, 0)?, t)?;
    Ok(per_window(ev, ev.range_arg(arg(c, 1)?, t)?, |w| {
        let mut vals: Vec<f64> = w.samples.iter().map(|s| s.value).collect();
        Some(quantile(q, &mut vals))
    }))
}

pub(super) fn per_window(
    ev: &impl Operands,
    r: RangeArg<'_>,
    f: impl Fn(&Window<'_>) -> Option<f64>,
) -> Value {
    Value::Vector(
        r.windows
            .iter()
            .filter_map(|w| {
                f(w).map(|value| Element {
                    labels: ev.drop_name(&w.labels),
                    value,
                })
            })
            .collect(),
    )
}

/// `sum + inc` with Neumaier's compensation term `c`.
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Least-squares slope (per second) and intercept at `intercept_time`.
pub(super) fn linear_regression(s: &[Sample], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = s[0].value;
    let mut const_y = true;
    for (i, p) in s.iter().enumerate() {
        if const_y && i > 0 && p.value != init {
            const_y = false;
        }
        n += 1.0;
        let x = (p.timestamp_ms - intercept_time) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.value, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.value, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

pub(super) fn over_time(
    name: &str,
    samples: &[Sample],
    rollup: Option<&[RollupPoint]>,
) -> Option<f64> {
    let vals = || samples.iter().map(|s| s.value);
    if let Some(r) = rollup {
        // Bucket summaries stand in for the samples they summarise.
        let count: f64 = r.iter().map(|p| p.count).sum();
        let sum: f64 = r.iter().map(|p| p.sum).sum();
        match name {
            "count_over_time" => return Some(count),
            "sum_over_time" => return Some(sum),
            "avg_over_time" if count > 0.0 => return Some(sum / count),
            "min_over_time" => {
                return r
                    .iter()
                    .map(|p| p.min)
                    .filter(|v| !v.is_nan())
                    .reduce(f64::min);
            }
            "max_over_time" => {
                return r
                    .iter()
                    .map(|p| p.max)
                    .filter(|v| !v.is_nan())
                    .reduce(f64::max);
            }
            _ => {}
        }
    }
    let n = samples.len() as f64;
    Some(match name {
        "count_over_time" => n,
        "present_over_time" => 1.0,
        "last_over_time" => samples.last()?.value,
        "sum_over_time" => vals().sum(),
        "avg_over_time" => {
            let mut mean: f64 = 0.0;
            let mut count = 0.0;
            for v in vals() {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                mean += v / count - mean / count;
            }
            mean
        }
        "min_over_time" => vals().fold(
            f64::NAN,
            |acc, v| if acc.is_nan() || v < acc { v } else { acc },
        ),
        "max_over_time" => vals().fold(
            f64::NAN,
            |acc, v| if acc.is_nan() || v > acc { v } else { acc },
        ),
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
            for v in vals() {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                aux += delta * (v - mean);
            }
            let var = aux / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        _ => return None,
    })
}

/// The `q`-quantile of `vals` by linear interpolation between closest ranks, as
/// Prometheus computes it (NaN for an empty input, ±Inf outside [0, 1]).
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.total_cmp(b));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

//! PromQL functions, as Prometheus 2 defines them (`promql/functions.go`): the rate
//! family with its extrapolation, the `*_over_time` family, `absent`, and the simple math
//! and type functions.

use nunchi_model::Sample;
use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::eval::{Evaluator, Window, absent_labels};
use super::value::{Element, Value, drop_name};

fn matrix_arg(c: &Call, i: usize) -> Result<&promql_parser::parser::MatrixSelector, QueryError> {
    match c.args.args.get(i).map(|b| b.as_ref()) {
        Some(Expr::MatrixSelector(ms)) => Ok(ms),
        Some(Expr::Subquery(_)) => Err(QueryError::Execution(
            "subqueries are not supported yet".to_owned(),
        )),
        _ => Err(QueryError::BadData(format!(
            "expected type range vector in call to function {:?}",
            c.func.name
        ))),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr, QueryError> {
    c.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
        QueryError::BadData(format!("missing argument {} of {}", i + 1, c.func.name))
    })
}

/// Evaluates a function call at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    match name {
        "rate" | "increase" | "delta" => {
            let ms = matrix_arg(c, 0)?;
            let range = ms.range.as_millis() as i64;
            let end = ev.selector_time(&ms.vs, t);
            Ok(per_window(ev, ms, t, |w| {
                extrapolated_rate(
                    &w.samples,
                    end - range,
                    end,
                    name != "delta",
                    name == "rate",
                    range,
                )
            }))
        }
        "irate" | "idelta" => {
            let ms = matrix_arg(c, 0)?;
            Ok(per_window(ev, ms, t, |w| {
                instant_delta(&w.samples, name == "irate")
            }))
        }
        "avg_over_time" | "min_over_time" | "max_over_time" | "sum_over_time"
        | "count_over_time" | "last_over_time" | "present_over_time" | "stddev_over_time"
        | "stdvar_over_time" => {
            let ms = matrix_arg(c, 0)?;
            let keep_name = name == "last_over_time";
            let out = ev
                .window(ms, t)
                .into_iter()
                .filter_map(|w| {
                    over_time(name, &w).map(|value| Element {
                        labels: if keep_name {
                            w.labels.clone()
                        } else {
                            drop_name(w.labels)
                        },
                        value,
                    })
                })
                .collect();
            Ok(Value::Vector(out))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            let ms = matrix_arg(c, 1)?;
            Ok(per_window(ev, ms, t, |w| {
                let mut vals: Vec<f64> = w.samples.iter().map(|s| s.value).collect();
                Some(quantile(q, &mut vals))
            }))
        }
        "absent" => {
            let e = arg(c, 0)?;
            let v = ev.eval_vector(e, t)?;
            Ok(Value::Vector(if v.is_empty() {
                vec![Element {
                    labels: absent_labels(e),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        "absent_over_time" => {
            let ms = matrix_arg(c, 0)?;
            Ok(Value::Vector(if ev.window(ms, t).is_empty() {
                vec![Element {
                    labels: absent_labels(arg(c, 0)?),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "vector" => Ok(Value::Vector(vec![Element {
            labels: Default::default(),
            value: ev.eval_scalar(arg(c, 0)?, t)?,
        }])),
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            Ok(Value::Scalar(if v.len() == 1 {
                v[0].value
            } else {
                f64::NAN
            }))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "round"
        | "clamp_min" | "clamp_max" | "clamp" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let p: Vec<f64> = (1..c.args.args.len())
                .map(|i| ev.eval_scalar(arg(c, i)?, t))
                .collect::<Result<_, _>>()?;
            let f = |x: f64| -> Option<f64> {
                Some(match name {
                    "abs" => x.abs(),
                    "ceil" => x.ceil(),
                    "floor" => x.floor(),
                    "exp" => x.exp(),
                    "sqrt" => x.sqrt(),
                    "ln" => x.ln(),
                    "log2" => x.log2(),
                    "log10" => x.log10(),
                    "round" => {
                        let to = p.first().copied().unwrap_or(1.0);
                        let inv = 1.0 / to;
                        (x * inv + 0.5).floor() / inv
                    }
                    "clamp_min" => x.max(*p.first()?),
                    "clamp_max" => x.min(*p.first()?),
                    _ => {
                        let (lo, hi) = (*p.first()?, *p.get(1)?);
                        if hi < lo {
                            return None;
                        }
                        x.max(lo).min(hi)
                    }
                })
            };
            Ok(Value::Vector(
                v.into_iter()
                    .filter_map(|e| {
                        f(e.value).map(|value| Element {
                            labels: drop_name(&e.labels),
                            value,
                        })
                    })
                    .collect(),
            ))
        }
        other => Err(QueryError::Execution(format!(
            "function {other:?} is not supported yet"
        ))),
    }
}

fn per_window(
    ev: &Evaluator<'_>,
    ms: &promql_parser::parser::MatrixSelector,
    t: i64,
    f: impl Fn(&Window<'_>) -> Option<f64>,
) -> Value {
    Value::Vector(
        ev.window(ms, t)
            .into_iter()
            .filter_map(|w| {
                f(&w).map(|value| Element {
                    labels: drop_name(w.labels),
                    value,
                })
            })
            .collect(),
    )
}

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
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.value - first.value;
    if counter {
        let mut prev = 0.0;
        for x in s {
            if x.value < prev {
                result += prev;
            }
            prev = x.value;
        }
    }
    let mut to_start = (first.timestamp_ms - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.timestamp_ms) as f64 / 1000.0;
    let sampled = (last.timestamp_ms - first.timestamp_ms) as f64 / 1000.0;
    let avg_step = sampled / (s.len() - 1) as f64;
    if counter && result > 0.0 && first.value >= 0.0 {
        let to_zero = sampled * (first.value / result);
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
    result *= interval / sampled;
    if per_second {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_delta(s: &[Sample], rate: bool) -> Option<f64> {
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

fn over_time(name: &str, w: &Window<'_>) -> Option<f64> {
    let vals = || w.samples.iter().map(|s| s.value);
    if let Some(r) = w.rollup {
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
    let n = w.samples.len() as f64;
    Some(match name {
        "count_over_time" => n,
        "present_over_time" => 1.0,
        "last_over_time" => w.samples.last()?.value,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample {
            timestamp_ms: t,
            value: v,
        }
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter rising 1/s, sampled every 10 s over a 60 s window that the samples
        // nearly fill: the result is exactly 1/s.
        let samples: Vec<Sample> = (0..6)
            .map(|i| s(5_000 + i * 10_000, 5.0 + i as f64 * 10.0))
            .collect();
        let r = extrapolated_rate(&samples, 0, 60_000, true, true, 60_000).expect("rate");
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn counter_resets_are_compensated() {
        let samples = [s(0, 10.0), s(10_000, 20.0), s(20_000, 5.0), s(30_000, 15.0)];
        let inc = extrapolated_rate(&samples, 0, 30_000, true, false, 30_000).expect("increase");
        assert!((inc - 25.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }
}

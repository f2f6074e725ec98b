//! PromQL functions, as Prometheus 2 defines them (`promql/functions.go`): [`eval`]
//! dispatches a call by name; the families live in files of their own: [`rate`] (the rate
//! family with its extrapolation), [`over_time`] (functions of one range window),
//! [`histogram`] (classic histograms), [`labels`] (label rewriting) and [`time`] (calendar
//! functions). Sorting, math and type functions are short enough to stay in the dispatch.

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use nunchi_model::{Labels, METRIC_NAME, Sample, is_valid_label_name};
use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::eval::{Evaluator, RangeArg, Window, absent_labels};
use super::value::{Element, Value};
use nunchi_tsdb::RollupPoint;

mod histogram;
mod labels;
mod over_time;
mod rate;
mod time;

use histogram::*;
use labels::*;
pub(crate) use over_time::*;
pub(crate) use rate::*;
use time::*;

fn arg(c: &Call, i: usize) -> Result<&Expr, QueryError> {
    c.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
        QueryError::BadData(format!("missing argument {} of {}", i + 1, c.func.name))
    })
}

/// The node address used to memoise label sets a call derives.
fn node(c: &Call) -> usize {
    c as *const _ as usize
}

/// Evaluates a function call at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    match name {
        "rate" | "increase" | "delta" | "irate" | "idelta" | "changes" | "resets" | "deriv"
        | "avg_over_time" | "min_over_time" | "max_over_time" | "sum_over_time"
        | "count_over_time" | "last_over_time" | "present_over_time" | "stddev_over_time"
        | "stdvar_over_time" => {
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
        "predict_linear" => {
            let r = ev.range_arg(arg(c, 0)?, t)?;
            let d = ev.eval_scalar(arg(c, 1)?, t)?;
            Ok(per_window(ev, r, |w| {
                (w.samples.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(&w.samples, t);
                    slope * d + intercept
                })
            }))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            Ok(per_window(ev, ev.range_arg(arg(c, 1)?, t)?, |w| {
                let mut vals: Vec<f64> = w.samples.iter().map(|s| s.value).collect();
                Some(quantile(q, &mut vals))
            }))
        }
        "absent" => {
            let e = arg(c, 0)?;
            let v = ev.eval_vector(e, t)?;
            Ok(Value::Vector(if v.is_empty() {
                vec![Element {
                    labels: Arc::new(absent_labels(e)),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        "absent_over_time" => {
            let e = arg(c, 0)?;
            Ok(Value::Vector(if ev.range_arg(e, t)?.windows.is_empty() {
                vec![Element {
                    labels: Arc::new(absent_labels(e)),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Value::Vector(vec![Element {
            labels: Arc::default(),
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
        "timestamp" => {
            let out = match arg(c, 0)? {
                // The sample's own time, not the evaluation time.
                Expr::VectorSelector(vs) => ev
                    .select_samples(vs, t)
                    .map(|(l, s)| Element {
                        labels: ev.drop_name(l),
                        value: s.timestamp_ms as f64 / 1000.0,
                    })
                    .collect(),
                e => ev
                    .eval_vector(e, t)?
                    .into_iter()
                    .map(|x| Element {
                        labels: ev.drop_name(&x.labels),
                        value: t as f64 / 1000.0,
                    })
                    .collect(),
            };
            Ok(Value::Vector(out))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" | "round" | "clamp_min" | "clamp_max" | "clamp" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let p: Vec<f64> = (1..c.args.args.len())
                .map(|i| ev.eval_scalar(arg(c, i)?, t))
                .collect::<Result<_, _>>()?;
            if name == "clamp" && p.get(1) < p.first() {
                return Ok(Value::Vector(Vec::new()));
            }
            let f = |x: f64| -> f64 {
                let p0 = p.first().copied().unwrap_or(f64::NAN);
                match name {
                    "abs" => x.abs(),
                    "ceil" => x.ceil(),
                    "floor" => x.floor(),
                    "exp" => x.exp(),
                    "sqrt" => x.sqrt(),
                    "ln" => x.ln(),
                    "log2" => x.log2(),
                    "log10" => x.log10(),
                    "sgn" if x == 0.0 || x.is_nan() => x,
                    "sgn" => x.signum(),
                    "acos" => x.acos(),
                    "acosh" => x.acosh(),
                    "asin" => x.asin(),
                    "asinh" => x.asinh(),
                    "atan" => x.atan(),
                    "atanh" => x.atanh(),
                    "cos" => x.cos(),
                    "cosh" => x.cosh(),
                    "sin" => x.sin(),
                    "sinh" => x.sinh(),
                    "tan" => x.tan(),
                    "tanh" => x.tanh(),
                    "deg" => x * 180.0 / std::f64::consts::PI,
                    "rad" => x * std::f64::consts::PI / 180.0,
                    "round" => {
                        let inv = 1.0 / p.first().copied().unwrap_or(1.0);
                        (x * inv + 0.5).floor() / inv
                    }
                    "clamp_min" => x.max(p0),
                    "clamp_max" => x.min(p0),
                    _ => x.max(p0).min(p.get(1).copied().unwrap_or(f64::NAN)),
                }
            };
            Ok(Value::Vector(
                v.into_iter()
                    .map(|e| Element {
                        labels: ev.drop_name(&e.labels),
                        value: f(e.value),
                    })
                    .collect(),
            ))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match c.args.args.first() {
                None => vec![Element {
                    labels: Arc::default(),
                    value: t as f64 / 1000.0,
                }],
                Some(e) => ev.eval_vector(e, t)?,
            };
            Ok(Value::Vector(
                v.into_iter()
                    .map(|e| Element {
                        labels: ev.drop_name(&e.labels),
                        value: date_part(name, e.value),
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            Ok(Value::Vector(histogram_quantile(
                ev,
                node(c),
                q,
                ev.eval_vector(arg(c, 1)?, t)?,
            )))
        }
        "label_replace" => label_replace(ev, c, t).map(Value::Vector),
        "label_join" => label_join(ev, c, t).map(Value::Vector),
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?, t)?;
            let desc = name == "sort_desc";
            // NaN last either way.
            v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.value.total_cmp(&a.value),
                _ => a.value.total_cmp(&b.value),
            });
            Ok(Value::Vector(v))
        }
        other => Err(QueryError::Execution(format!(
            "function {other:?} is not supported"
        ))),
    }
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
    fn extrapolation_decided_without_dividing_agrees_with_prometheus_arithmetic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut exact_ends = 0;
        for _ in 0..500_000 {
            let range = [60_000, 300_000, 3_600_000][next(3) as usize];
            let end = 1_700_000_000_000 + next(1_000_000) as i64;
            let start = end - range;
            let interval = [1_000, 10_000, 15_000, 30_000, 7_500][next(5) as usize];
            // Ends on and near the thresholds, and sample times on whole seconds.
            let first_t =
                start + [0, interval * 11 / 10, next(range as u64 / 2) as i64][next(3) as usize];
            let n = 2 + next(40) as usize;
            let last_t = (first_t + interval * (n as i64 - 1)).min(end);
            if last_t <= first_t {
                continue;
            }
            let v0 = [0.0, 1.0, next(1000) as f64, 1e9][next(4) as usize];
            let change = [0.0, 1.0, next(100_000) as f64 / 7.0, v0 * 3.0][next(4) as usize];
            let e = Edges {
                first: s(first_t, v0),
                last: s(last_t, v0 + change),
                n,
                change,
            };
            for (counter, per_second) in [(true, true), (true, false), (false, false)] {
                let fast = extrapolate(e, start, end, counter, per_second, range);
                let exact = extrapolate_exact(e, start, end, counter, per_second, range);
                exact_ends += usize::from(
                    first_t - start == interval * 11 / 10
                        && last_t == first_t + interval * (n as i64 - 1),
                );
                assert!(
                    (fast - exact).abs() <= 1e-12 * exact.abs().max(1e-300),
                    "{e:?} [{start}, {end}] counter={counter}: {fast} vs {exact}"
                );
            }
        }
        assert!(exact_ends > 0);
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

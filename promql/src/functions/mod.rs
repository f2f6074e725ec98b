//! PromQL functions, as Prometheus 2 defines them (`promql/functions.go`). [`FUNCTIONS`]
//! names every function and its family; [`eval`] looks a call up there and hands it to its
//! family, each in a file of its own: [`rate`] (the rate family with its extrapolation),
//! [`over_time`] (functions of one range window), [`histogram`] (classic histograms),
//! [`labels`] (label rewriting), [`math`] (element-wise math and sorting), [`time`]
//! (calendar functions) and [`vector`] (functions that make, test or unwrap vectors).

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use nunchi_model::{Labels, METRIC_NAME, Sample, is_valid_label_name};
use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::step::{Operands, RangeArg, Window, absent_labels};
use super::value::{Element, Value};
use nunchi_tsdb::RollupPoint;

mod histogram;
mod labels;
mod math;
mod over_time;
mod rate;
mod time;
mod vector;

use histogram::*;
use labels::*;
use math::*;
pub(crate) use over_time::*;
pub(crate) use rate::*;
use time::*;
use vector::*;

fn arg(c: &Call, i: usize) -> Result<&Expr, QueryError> {
    c.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
        QueryError::BadData(format!("missing argument {} of {}", i + 1, c.func.name))
    })
}

/// The node address used to memoise label sets a call derives.
fn node(c: &Call) -> usize {
    c as *const _ as usize
}

/// The families functions fall into: the functions of one family are evaluated by the
/// same code, which tells them apart by name where it needs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// A value computed from each series' samples in one range window
    /// ([`window_value`]); the fused range path evaluates these too.
    Window,
    PredictLinear,
    QuantileOverTime,
    Absent,
    AbsentOverTime,
    Time,
    Pi,
    Vector,
    Scalar,
    Timestamp,
    /// Element-wise math on an instant vector, with optional scalar parameters.
    Math,
    /// A calendar field of each value (or of the evaluation time).
    Date,
    HistogramQuantile,
    LabelReplace,
    LabelJoin,
    Sort,
}

use Family as F;

/// Every function the engine evaluates, by name.
pub(crate) const FUNCTIONS: &[(&str, Family)] = &[
    ("abs", F::Math),
    ("absent", F::Absent),
    ("absent_over_time", F::AbsentOverTime),
    ("acos", F::Math),
    ("acosh", F::Math),
    ("asin", F::Math),
    ("asinh", F::Math),
    ("atan", F::Math),
    ("atanh", F::Math),
    ("avg_over_time", F::Window),
    ("ceil", F::Math),
    ("changes", F::Window),
    ("clamp", F::Math),
    ("clamp_max", F::Math),
    ("clamp_min", F::Math),
    ("cos", F::Math),
    ("cosh", F::Math),
    ("count_over_time", F::Window),
    ("day_of_month", F::Date),
    ("day_of_week", F::Date),
    ("day_of_year", F::Date),
    ("days_in_month", F::Date),
    ("deg", F::Math),
    ("delta", F::Window),
    ("deriv", F::Window),
    ("exp", F::Math),
    ("floor", F::Math),
    ("histogram_quantile", F::HistogramQuantile),
    ("hour", F::Date),
    ("idelta", F::Window),
    ("increase", F::Window),
    ("irate", F::Window),
    ("label_join", F::LabelJoin),
    ("label_replace", F::LabelReplace),
    ("last_over_time", F::Window),
    ("ln", F::Math),
    ("log10", F::Math),
    ("log2", F::Math),
    ("max_over_time", F::Window),
    ("min_over_time", F::Window),
    ("minute", F::Date),
    ("month", F::Date),
    ("pi", F::Pi),
    ("predict_linear", F::PredictLinear),
    ("present_over_time", F::Window),
    ("quantile_over_time", F::QuantileOverTime),
    ("rad", F::Math),
    ("rate", F::Window),
    ("resets", F::Window),
    ("round", F::Math),
    ("scalar", F::Scalar),
    ("sgn", F::Math),
    ("sin", F::Math),
    ("sinh", F::Math),
    ("sort", F::Sort),
    ("sort_desc", F::Sort),
    ("sqrt", F::Math),
    ("stddev_over_time", F::Window),
    ("stdvar_over_time", F::Window),
    ("sum_over_time", F::Window),
    ("tan", F::Math),
    ("tanh", F::Math),
    ("time", F::Time),
    ("timestamp", F::Timestamp),
    ("vector", F::Vector),
    ("year", F::Date),
];

/// The family of the function called `name`, if the engine has it.
pub(crate) fn family(name: &str) -> Option<Family> {
    FUNCTIONS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| FUNCTIONS[i].1)
}

/// Evaluates a function call at `t`.
pub(crate) fn eval(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let Some(f) = family(name) else {
        return Err(QueryError::Execution(format!(
            "function {name:?} is not supported"
        )));
    };
    match f {
        F::Window => over_window(ev, c, t),
        F::PredictLinear => predict_linear(ev, c, t),
        F::QuantileOverTime => quantile_over_time(ev, c, t),
        F::Absent => absent(ev, c, t),
        F::AbsentOverTime => absent_over_time(ev, c, t),
        F::Time => Ok(Value::Scalar(t as f64 / 1000.0)),
        F::Pi => Ok(Value::Scalar(std::f64::consts::PI)),
        F::Vector => vector(ev, c, t),
        F::Scalar => scalar(ev, c, t),
        F::Timestamp => timestamp(ev, c, t),
        F::Math => math(ev, c, t),
        F::Date => date(ev, c, t),
        F::HistogramQuantile => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            let v = ev.eval_vector(arg(c, 1)?, t)?;
            Ok(Value::Vector(histogram_quantile(ev, node(c), q, v)))
        }
        F::LabelReplace => label_replace(ev, c, t).map(Value::Vector),
        F::LabelJoin => label_join(ev, c, t).map(Value::Vector),
        F::Sort => sort(ev, c, t),
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
    fn the_name_table_is_sorted_and_knows_each_name_once() {
        assert!(FUNCTIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(FUNCTIONS.iter().all(|(n, f)| family(n) == Some(*f)));
        assert_eq!(family("rate"), Some(Family::Window));
        assert_eq!(family("no_such_function"), None);
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }
}

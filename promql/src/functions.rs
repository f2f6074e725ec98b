//! PromQL functions, as Prometheus 2 defines them (`promql/functions.go`): the rate
//! family with its extrapolation, the `*_over_time` family, linear regression, classic
//! histograms, label rewriting, sorting, date, math and type functions.

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use nunchi_model::{Labels, METRIC_NAME, Sample, is_valid_label_name};
use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::eval::{Evaluator, RangeArg, Window, absent_labels};
use super::value::{Element, Value};
use nunchi_tsdb::RollupPoint;

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

/// Whether a function of one range window keeps the metric name.
pub(crate) fn keeps_name(name: &str) -> bool {
    name == "last_over_time"
}

/// The value of a function of one range window without parameters (`rate`, `changes`,
/// `deriv`, the `*_over_time` family, ...) over `samples` (staleness markers left out),
/// for a window `(end - range, end]`; `None` where it has none.
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
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "changes"
            | "resets"
            | "deriv"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "last_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
    )
}

fn per_window(
    ev: &Evaluator<'_>,
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
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Least-squares slope (per second) and intercept at `intercept_time`.
fn linear_regression(s: &[Sample], intercept_time: i64) -> (f64, f64) {
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

/// A calendar field of a Unix time (seconds), in UTC.
fn date_part(name: &str, secs: f64) -> f64 {
    let Some(d) = chrono::Utc.timestamp_opt(secs as i64, 0).single() else {
        return f64::NAN;
    };
    f64::from(match name {
        "day_of_month" => d.day(),
        "day_of_week" => d.weekday().num_days_from_sunday(),
        "day_of_year" => d.ordinal(),
        "hour" => d.hour(),
        "minute" => d.minute(),
        "month" => d.month(),
        "year" => return f64::from(d.year()),
        _ => {
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            match chrono::NaiveDate::from_ymd_opt(y, m, 1).and_then(|n| n.pred_opt()) {
                Some(last) => last.day(),
                None => return f64::NAN,
            }
        }
    })
}

/// `histogram_quantile` over classic buckets (`le` labels), per label set without `le`.
fn histogram_quantile(ev: &Evaluator<'_>, node: usize, q: f64, v: Vec<Element>) -> Vec<Element> {
    let mut order: Vec<Arc<Labels>> = Vec::new();
    let mut groups: std::collections::HashMap<Arc<Labels>, Vec<(f64, f64)>> =
        std::collections::HashMap::new();
    for e in v {
        let Some(le) = e.labels.get("le").and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        let key = ev.derive(node, &e.labels, |l| {
            let mut l = l.clone();
            l.remove(METRIC_NAME);
            l.remove("le");
            l
        });
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((le, e.value));
    }
    order
        .into_iter()
        .filter_map(|l| {
            let b = groups.remove(&l)?;
            Some(Element {
                labels: l,
                value: bucket_quantile(q, b),
            })
        })
        .collect()
}

/// The quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// within the bucket it falls in (Prometheus' `bucketQuantile`).
fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|x| x.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one bucket.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, n) in b {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => merged.push((le, n)),
        }
    }
    // Counts must not fall as bounds rise.
    let mut max = f64::NEG_INFINITY;
    for x in &mut merged {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if i == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if i == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[i].0, merged[i].1);
    if i > 0 {
        start = merged[i - 1].0;
        count -= merged[i - 1].1;
        rank -= merged[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn string_arg(ev: &Evaluator<'_>, c: &Call, i: usize, t: i64) -> Result<String, QueryError> {
    ev.eval_string(arg(c, i)?, t)
}

/// Refuses a result where two elements have the same labels.
fn unique(v: Vec<Element>) -> Result<Vec<Element>, QueryError> {
    let mut seen = std::collections::HashSet::new();
    for e in &v {
        if !seen.insert(e.labels.clone()) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".to_owned(),
            ));
        }
    }
    Ok(v)
}

fn label_replace(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Vec<Element>, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let dst = string_arg(ev, c, 1, t)?;
    let repl = string_arg(ev, c, 2, t)?;
    let src = string_arg(ev, c, 3, t)?;
    let re_src = string_arg(ev, c, 4, t)?;
    let re = regex::Regex::new(&format!("^(?:{re_src})$")).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {re_src}"
        ))
    })?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| Element {
            labels: ev.derive(node(c), &e.labels, |l| {
                let value = l.get(&src).unwrap_or("");
                let Some(caps) = re.captures(value) else {
                    return l.clone();
                };
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                let mut l = l.clone();
                l.remove(&dst);
                if !res.is_empty() {
                    l.insert(dst.clone(), res);
                }
                l
            }),
            value: e.value,
        })
        .collect();
    unique(out)
}

fn label_join(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Vec<Element>, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let dst = string_arg(ev, c, 1, t)?;
    let sep = string_arg(ev, c, 2, t)?;
    let srcs: Vec<String> = (3..c.args.args.len())
        .map(|i| string_arg(ev, c, i, t))
        .collect::<Result<_, _>>()?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| Element {
            labels: ev.derive(node(c), &e.labels, |l| {
                let joined: Vec<&str> = srcs.iter().map(|s| l.get(s).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                let mut l = l.clone();
                l.remove(&dst);
                if !joined.is_empty() {
                    l.insert(dst.clone(), joined);
                }
                l
            }),
            value: e.value,
        })
        .collect();
    unique(out)
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

fn over_time(name: &str, samples: &[Sample], rollup: Option<&[RollupPoint]>) -> Option<f64> {
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

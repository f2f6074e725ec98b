//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`,
//! `stdvar`, `quantile`, `topk`, `bottomk`) with `by` and `without`.

use std::collections::HashMap;

use nunchi_model::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::QueryError;
use super::eval::Evaluator;
use super::functions::quantile;
use super::value::{Element, Value};

/// The labels of the group an element falls in.
fn group_labels(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::new(),
        Some(LabelModifier::Include(by)) => Labels::from_sorted(
            l.iter()
                .filter(|x| by.labels.iter().any(|n| n == &x.name))
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Exclude(without)) => Labels::from_sorted(
            l.iter()
                .filter(|x| x.name != METRIC_NAME && !without.labels.iter().any(|n| n == &x.name))
                .cloned()
                .collect(),
        ),
    }
}

#[derive(Default)]
struct Acc {
    count: f64,
    sum: f64,
    mean: f64,
    /// Welford's running mean and sum of squared deviations (stddev, stdvar).
    w_mean: f64,
    aux: f64,
    min: f64,
    max: f64,
    values: Vec<f64>,
    members: Vec<Element>,
}

/// Evaluates an aggregation at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = a.op.id();
    let input = ev.eval_vector(&a.expr, t)?;
    let param = match &a.param {
        Some(p) if op == T_TOPK || op == T_BOTTOMK || op == T_QUANTILE => {
            Some(ev.eval_scalar(p, t)?)
        }
        Some(_) => {
            return Err(QueryError::Execution(format!(
                "aggregation {} is not supported yet",
                a.op
            )));
        }
        None => None,
    };
    if !matches!(
        op,
        T_SUM
            | T_AVG
            | T_MIN
            | T_MAX
            | T_COUNT
            | T_GROUP
            | T_STDDEV
            | T_STDVAR
            | T_QUANTILE
            | T_TOPK
            | T_BOTTOMK
    ) {
        return Err(QueryError::Execution(format!(
            "aggregation {} is not supported yet",
            a.op
        )));
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, Acc> = HashMap::new();
    for e in input {
        let key = group_labels(&e.labels, &a.modifier);
        let acc = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Acc {
                min: f64::NAN,
                max: f64::NAN,
                ..Acc::default()
            }
        });
        let v = e.value;
        acc.count += 1.0;
        acc.sum += v;
        if acc.mean.is_infinite()
            && (v.is_infinite() && (acc.mean > 0.0) == (v > 0.0) || v.is_finite())
        {
            // An infinite mean stays put unless a NaN or an opposite infinity arrives.
        } else {
            acc.mean += v / acc.count - acc.mean / acc.count;
        }
        let delta = v - acc.w_mean;
        acc.w_mean += delta / acc.count;
        acc.aux += delta * (v - acc.w_mean);
        if acc.min.is_nan() || v < acc.min {
            acc.min = v;
        }
        if acc.max.is_nan() || v > acc.max {
            acc.max = v;
        }
        if op == T_QUANTILE {
            acc.values.push(v);
        }
        if op == T_TOPK || op == T_BOTTOMK {
            acc.members.push(e);
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(mut acc) = groups.remove(&key) else {
            continue;
        };
        let value = match op {
            T_SUM => acc.sum,
            T_AVG => acc.mean,
            T_MIN => acc.min,
            T_MAX => acc.max,
            T_COUNT => acc.count,
            T_GROUP => 1.0,
            T_STDVAR => acc.aux / acc.count,
            T_STDDEV => (acc.aux / acc.count).sqrt(),
            T_QUANTILE => quantile(param.unwrap_or(f64::NAN), &mut acc.values),
            _ => {
                let k = param.unwrap_or(0.0);
                if k < 1.0 {
                    continue;
                }
                let k = (k as usize).min(acc.members.len());
                let top = op == T_TOPK;
                acc.members.sort_by(|x, y| {
                    let (a, b) = (x.value, y.value);
                    // NaN sorts last either way.
                    match (a.is_nan(), b.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => b.total_cmp(&a),
                        _ => a.total_cmp(&b),
                    }
                });
                out.extend(acc.members.into_iter().take(k));
                continue;
            }
        };
        out.push(Element { labels: key, value });
    }
    Ok(Value::Vector(out))
}

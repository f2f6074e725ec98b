//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`,
//! `stdvar`, `quantile`, `count_values`, `topk`, `bottomk`) with `by` and `without`.

use std::collections::HashMap;
use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK, TokenId,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::QueryError;
use super::functions::quantile;
use super::step::Operands;
use super::value::{Element, Value, format_value};

/// The labels of the group an element falls in (`extra`: a label `by` keeps besides its
/// list, the one `count_values` adds).
pub(crate) fn group_labels(
    l: &Labels,
    modifier: &Option<LabelModifier>,
    extra: Option<&str>,
) -> Labels {
    match modifier {
        None => Labels::from_sorted(
            l.iter()
                .filter(|x| Some(x.name.as_str()) == extra)
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Include(by)) => Labels::from_sorted(
            l.iter()
                .filter(|x| {
                    by.labels.iter().any(|n| n == &x.name) || Some(x.name.as_str()) == extra
                })
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

/// One group's running state.
pub(crate) struct Acc {
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

impl Acc {
    pub(crate) fn new() -> Acc {
        Acc {
            count: 0.0,
            sum: 0.0,
            mean: 0.0,
            w_mean: 0.0,
            aux: 0.0,
            min: f64::NAN,
            max: f64::NAN,
            values: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Adds a value (kept too when the operator needs them all).
    pub(crate) fn add(&mut self, v: f64, keep: bool) {
        self.count += 1.0;
        self.sum += v;
        if self.mean.is_infinite()
            && (v.is_infinite() && (self.mean > 0.0) == (v > 0.0) || v.is_finite())
        {
            // An infinite mean stays put unless a NaN or an opposite infinity arrives.
        } else {
            self.mean += v / self.count - self.mean / self.count;
        }
        let delta = v - self.w_mean;
        self.w_mean += delta / self.count;
        self.aux += delta * (v - self.w_mean);
        if self.min.is_nan() || v < self.min {
            self.min = v;
        }
        if self.max.is_nan() || v > self.max {
            self.max = v;
        }
        if keep {
            self.values.push(v);
        }
    }

    /// Values added.
    pub(crate) fn count(&self) -> f64 {
        self.count
    }

    /// The group's value for `op` (not `topk`/`bottomk`).
    pub(crate) fn value(&mut self, op: TokenId, param: Option<f64>) -> f64 {
        match op {
            T_SUM => self.sum,
            T_AVG => self.mean,
            T_MIN => self.min,
            T_MAX => self.max,
            T_COUNT | T_COUNT_VALUES => self.count,
            T_GROUP => 1.0,
            T_STDVAR => self.aux / self.count,
            T_STDDEV => (self.aux / self.count).sqrt(),
            T_QUANTILE => quantile(param.unwrap_or(f64::NAN), &mut self.values),
            _ => f64::NAN,
        }
    }
}

/// Evaluates an aggregation at `t`.
pub(crate) fn eval(ev: &impl Operands, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = a.op.id();
    let mut input = ev.eval_vector(&a.expr, t)?;
    let param = match &a.param {
        Some(p) if op == T_TOPK || op == T_BOTTOMK || op == T_QUANTILE => {
            Some(ev.eval_scalar(p, t)?)
        }
        _ => None,
    };
    let value_label = match &a.param {
        Some(p) if op == T_COUNT_VALUES => {
            let name = ev.eval_string(p, t)?;
            if !nunchi_model::is_valid_label_name(&name) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {name:?}"
                )));
            }
            Some(name)
        }
        _ => None,
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
            | T_COUNT_VALUES
            | T_TOPK
            | T_BOTTOMK
    ) {
        return Err(QueryError::Execution(format!(
            "aggregation {} is not supported",
            a.op
        )));
    }
    if let Some(name) = &value_label {
        for e in &mut input {
            let mut l = Labels::clone(&e.labels);
            l.insert(name.clone(), format_value(e.value));
            e.labels = Arc::new(l);
        }
    }
    let node = a as *const _ as usize;
    let mut order: Vec<Arc<Labels>> = Vec::new();
    // Group keys are interned, so equal groups share an address.
    let mut groups: HashMap<usize, Acc> = HashMap::new();
    for e in input {
        let key = if value_label.is_some() {
            ev.intern(group_labels(&e.labels, &a.modifier, value_label.as_deref()))
        } else {
            ev.derive(node, &e.labels, |l| group_labels(l, &a.modifier, None))
        };
        let acc = groups.entry(Arc::as_ptr(&key) as usize).or_insert_with(|| {
            order.push(key);
            Acc::new()
        });
        acc.add(e.value, op == T_QUANTILE);
        if op == T_TOPK || op == T_BOTTOMK {
            acc.members.push(e);
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(mut acc) = groups.remove(&(Arc::as_ptr(&key) as usize)) else {
            continue;
        };
        let value = match op {
            T_TOPK | T_BOTTOMK => {
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
            _ => acc.value(op, param),
        };
        out.push(Element { labels: key, value });
    }
    Ok(Value::Vector(out))
}

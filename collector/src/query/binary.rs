//! Binary operators: arithmetic and comparison (with `bool`) between scalars and vectors,
//! one-to-one vector matching with `on`/`ignoring`, and the set operators `and`, `or`,
//! `unless`. Result labels follow Prometheus: arithmetic (and `bool`) drops the metric
//! name; one-to-one matching with `on` keeps only the `on` labels.

use std::collections::{HashMap, HashSet};

use nunchi_model::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    T_ADD, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL,
    T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::QueryError;
use super::eval::Evaluator;
use super::value::{Element, Value, drop_name};

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// `lhs op rhs`: the value, and for comparisons whether it holds.
fn apply(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// The labels two elements are matched on.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => Labels::from_sorted(
            l.iter()
                .filter(|x| on.labels.iter().any(|n| n == &x.name))
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Exclude(ign)) => Labels::from_sorted(
            l.iter()
                .filter(|x| x.name != METRIC_NAME && !ign.labels.iter().any(|n| n == &x.name))
                .cloned()
                .collect(),
        ),
        None => drop_name(l),
    }
}

/// Evaluates a binary expression at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = b.op.id();
    let return_bool = b.return_bool();
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    if let Some(m) = &b.modifier
        && matches!(
            m.card,
            VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_)
        )
    {
        return Err(QueryError::Execution(
            "group_left and group_right are not supported yet".to_owned(),
        ));
    }
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            Ok(Value::Scalar(if is_comparison(op) {
                if keep { 1.0 } else { 0.0 }
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(s)) => {
            Ok(Value::Vector(vector_scalar(op, v, s, false, return_bool)))
        }
        (Value::Scalar(s), Value::Vector(v)) => {
            Ok(Value::Vector(vector_scalar(op, v, s, true, return_bool)))
        }
        (Value::Vector(l), Value::Vector(r)) => match op {
            T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(set_op(op, l, r, matching))),
            _ => vector_vector(op, l, r, matching, return_bool).map(Value::Vector),
        },
        (l, r) => Err(QueryError::Execution(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenId,
    v: Vec<Element>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Vec<Element> {
    let cmp = is_comparison(op);
    v.into_iter()
        .filter_map(|e| {
            let (l, r) = if swap { (s, e.value) } else { (e.value, s) };
            let (mut value, mut keep) = apply(op, l, r);
            if cmp && swap {
                value = e.value;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            keep.then(|| Element {
                labels: if !cmp || return_bool {
                    drop_name(&e.labels)
                } else {
                    e.labels
                },
                value,
            })
        })
        .collect()
}

fn vector_vector(
    op: TokenId,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    matching: Option<&LabelModifier>,
    return_bool: bool,
) -> Result<Vec<Element>, QueryError> {
    let cmp = is_comparison(op);
    let mut right: HashMap<Labels, Element> = HashMap::new();
    for e in rhs {
        let sig = signature(&e.labels, matching);
        if right.contains_key(&sig) {
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the right hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                fmt_labels(&sig)
            )));
        }
        right.insert(sig, e);
    }
    let mut seen: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for l in lhs {
        let sig = signature(&l.labels, matching);
        let Some(r) = right.get(&sig) else { continue };
        if !seen.insert(sig.clone()) {
            return Err(QueryError::Execution(format!(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right) (match group {})",
                fmt_labels(&sig)
            )));
        }
        let (mut value, mut keep) = apply(op, l.value, r.value);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        let mut labels = match matching {
            Some(LabelModifier::Include(_)) => sig,
            Some(LabelModifier::Exclude(ign)) => {
                let mut x = l.labels.clone();
                for n in &ign.labels {
                    x.remove(n);
                }
                x
            }
            None => l.labels.clone(),
        };
        if !cmp || return_bool {
            labels.remove(METRIC_NAME);
        }
        out.push(Element { labels, value });
    }
    Ok(out)
}

fn set_op(
    op: TokenId,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    matching: Option<&LabelModifier>,
) -> Vec<Element> {
    let right: HashSet<Labels> = rhs.iter().map(|e| signature(&e.labels, matching)).collect();
    match op {
        T_LAND => lhs
            .into_iter()
            .filter(|e| right.contains(&signature(&e.labels, matching)))
            .collect(),
        T_LUNLESS => lhs
            .into_iter()
            .filter(|e| !right.contains(&signature(&e.labels, matching)))
            .collect(),
        _ => {
            let left: HashSet<Labels> =
                lhs.iter().map(|e| signature(&e.labels, matching)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|e| !left.contains(&signature(&e.labels, matching))),
            );
            out
        }
    }
}

fn fmt_labels(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|x| format!("{}=\"{}\"", x.name, x.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

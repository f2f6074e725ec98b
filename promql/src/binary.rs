//! Binary operators: arithmetic and comparison (with `bool`) between scalars and vectors,
//! vector matching one-to-one and many-to-one/one-to-many (`group_left`/`group_right`)
//! with `on`/`ignoring`, and the set operators `and`, `or`, `unless`. Result labels follow
//! Prometheus: arithmetic (and `bool`) drops the metric name (`atan2` keeps it, as in
//! Prometheus 2); one-to-one matching with `on`
//! keeps only the `on` labels; `group_x` labels are copied from the "one" side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::QueryError;
use super::step::Operands;
use super::value::{Element, Value};

pub(crate) fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether the result drops the metric name (Prometheus' `shouldDropMetricName`).
pub(crate) fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW)
}

/// `lhs op rhs`: the value, and for comparisons whether it holds.
pub(crate) fn apply(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
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
        None => super::value::drop_name(l),
    }
}

/// Evaluates a binary expression at `t`.
pub(crate) fn eval(ev: &impl Operands, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = b.op.id();
    let return_bool = b.return_bool();
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
        (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            v,
            s,
            false,
            return_bool,
        ))),
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            v,
            s,
            true,
            return_bool,
        ))),
        (Value::Vector(l), Value::Vector(r)) => {
            let m = Matching::new(ev, b);
            match op {
                T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(m.set_op(op, l, r))),
                _ => m.vector_vector(op, l, r, return_bool).map(Value::Vector),
            }
        }
        (l, r) => Err(QueryError::Execution(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    ev: &impl Operands,
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
                labels: if drops_name(op) || return_bool {
                    ev.drop_name(&e.labels)
                } else {
                    e.labels
                },
                value,
            })
        })
        .collect()
}

/// How the two sides of a vector-vector operation are matched.
struct Matching<'e, 'b, O> {
    ev: &'e O,
    node: usize,
    on: Option<&'b LabelModifier>,
    card: &'b VectorMatchCardinality,
}

impl<'e, 'b, O: Operands> Matching<'e, 'b, O> {
    fn new(ev: &'e O, b: &'b BinaryExpr) -> Self {
        Matching {
            ev,
            node: b as *const _ as usize,
            on: b.modifier.as_ref().and_then(|m| m.matching.as_ref()),
            card: b
                .modifier
                .as_ref()
                .map_or(&VectorMatchCardinality::OneToOne, |m| &m.card),
        }
    }

    /// The matching signature of a label set, shared by address (interned).
    fn sig(&self, l: &Arc<Labels>) -> usize {
        Arc::as_ptr(&self.ev.derive(self.node, l, |l| signature(l, self.on))) as usize
    }

    fn vector_vector(
        &self,
        op: TokenId,
        lhs: Vec<Element>,
        rhs: Vec<Element>,
        return_bool: bool,
    ) -> Result<Vec<Element>, QueryError> {
        // The "one" side is indexed; the "many" side (or lhs, one-to-one) is walked.
        let (include, swapped) = match self.card {
            VectorMatchCardinality::ManyToOne(l) => (Some(l), false),
            VectorMatchCardinality::OneToMany(l) => (Some(l), true),
            _ => (None, false),
        };
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let mut index: HashMap<usize, Element> = HashMap::new();
        for e in one {
            let sig = self.sig(&e.labels);
            if index.contains_key(&sig) {
                let side = if swapped { "left" } else { "right" };
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: {};many-to-many matching not allowed: matching labels must be unique on one side",
                    fmt_labels(&signature(&e.labels, self.on)),
                    fmt_labels(&e.labels),
                )));
            }
            index.insert(sig, e);
        }
        // Result label sets are interned, so they are compared by address.
        let mut matched: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut out = Vec::new();
        for m in many {
            let sig = self.sig(&m.labels);
            let Some(o) = index.get(&sig) else { continue };
            let (l, r) = if swapped {
                (o.value, m.value)
            } else {
                (m.value, o.value)
            };
            let (mut value, keep) = apply(op, l, r);
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let labels =
                self.result_labels(&m.labels, &o.labels, include, drops_name(op) || return_bool);
            let seen = matched.entry(sig).or_default();
            let id = Arc::as_ptr(&labels) as usize;
            if include.is_none() {
                if !seen.is_empty() {
                    return Err(QueryError::Execution(format!(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right) (match group {})",
                        fmt_labels(&signature(&m.labels, self.on))
                    )));
                }
                seen.insert(id);
            } else if !seen.insert(id) {
                return Err(QueryError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .to_owned(),
                ));
            }
            out.push(Element { labels, value });
        }
        Ok(out)
    }

    /// Labels of a result: the "many" side's (or lhs'), then as Prometheus' `resultMetric`.
    fn result_labels(
        &self,
        many: &Arc<Labels>,
        one: &Arc<Labels>,
        include: Option<&promql_parser::label::Labels>,
        drop_name: bool,
    ) -> Arc<Labels> {
        if include.is_none() {
            // One-to-one: depends on the lhs set alone, so it is memoised (under the node's
            // address + 1: nodes are aligned, so it names no other node).
            let on = self.on;
            return self.ev.derive(self.node + 1, many, |l| {
                let mut x = match on {
                    Some(LabelModifier::Include(_)) => signature(l, on),
                    Some(LabelModifier::Exclude(ign)) => {
                        let mut x = l.clone();
                        for n in &ign.labels {
                            x.remove(n);
                        }
                        x
                    }
                    None => l.clone(),
                };
                if drop_name {
                    x.remove(METRIC_NAME);
                }
                x
            });
        }
        let mut x = Labels::clone(many);
        if drop_name {
            x.remove(METRIC_NAME);
        }
        for n in include.map(|i| i.labels.as_slice()).unwrap_or_default() {
            match one.get(n) {
                Some(v) if !v.is_empty() => x.insert(n.clone(), v.to_owned()),
                _ => {
                    x.remove(n);
                }
            }
        }
        self.ev.intern(x)
    }

    fn set_op(&self, op: TokenId, lhs: Vec<Element>, rhs: Vec<Element>) -> Vec<Element> {
        let right: HashSet<usize> = rhs.iter().map(|e| self.sig(&e.labels)).collect();
        match op {
            T_LAND => lhs
                .into_iter()
                .filter(|e| right.contains(&self.sig(&e.labels)))
                .collect(),
            T_LUNLESS => lhs
                .into_iter()
                .filter(|e| !right.contains(&self.sig(&e.labels)))
                .collect(),
            _ => {
                let left: HashSet<usize> = lhs.iter().map(|e| self.sig(&e.labels)).collect();
                let mut out = lhs;
                out.extend(
                    rhs.into_iter()
                        .filter(|e| !left.contains(&self.sig(&e.labels))),
                );
                out
            }
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

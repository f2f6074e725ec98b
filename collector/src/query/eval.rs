//! Evaluation of a parsed expression at one instant, over data loaded beforehand.
//!
//! Selection follows Prometheus 2's rules: an instant selector takes each series' newest
//! sample in `[t - lookback, t]` unless it is a staleness marker; a range selector takes
//! the samples in `[t - range, t]`, staleness markers left out; offsets and `@` shift `t`.

use nunchi_model::{Labels, METRIC_NAME, Sample, is_stale_nan};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};

use super::value::{Element, Value, drop_name};
use super::{Loaded, LoadedSeries, QueryError, selector_time};
use crate::storage::RollupPoint;

/// The samples one series has in a range window.
pub(crate) struct Window<'a> {
    pub(crate) labels: &'a Labels,
    pub(crate) samples: Vec<Sample>,
    pub(crate) rollup: Option<&'a [RollupPoint]>,
}

/// Evaluates expressions over loaded data.
pub struct Evaluator<'a> {
    loaded: &'a Loaded,
    start: i64,
    end: i64,
    lookback: i64,
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(loaded: &'a Loaded, start: i64, end: i64, lookback: i64) -> Self {
        Evaluator {
            loaded,
            start,
            end,
            lookback,
        }
    }

    fn series(&self, vs: &VectorSelector) -> &'a [LoadedSeries] {
        self.loaded
            .get(&(vs as *const _ as usize))
            .map_or(&[], Vec::as_slice)
    }

    /// The time a selector reads at, for an evaluation at `t`.
    pub(crate) fn selector_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        selector_time(vs, t, self.start, self.end)
    }

    /// The instant vector a selector yields at `t`.
    pub(crate) fn select(&self, vs: &VectorSelector, t: i64) -> Vec<Element> {
        let at = selector_time(vs, t, self.start, self.end);
        let mut out = Vec::new();
        for s in self.series(vs) {
            let i = s.samples.partition_point(|x| x.timestamp_ms <= at);
            if i == 0 {
                continue;
            }
            let last = s.samples[i - 1];
            if last.timestamp_ms < at - self.lookback || is_stale_nan(last.value) {
                continue;
            }
            out.push(Element {
                labels: s.labels.clone(),
                value: last.value,
            });
        }
        out
    }

    /// Each series' samples in a range selector's window at `t`.
    pub(crate) fn window(&self, ms: &MatrixSelector, t: i64) -> Vec<Window<'a>> {
        let at = selector_time(&ms.vs, t, self.start, self.end);
        let from = at - ms.range.as_millis() as i64;
        let mut out = Vec::new();
        for s in self.series(&ms.vs) {
            let a = s.samples.partition_point(|x| x.timestamp_ms < from);
            let b = s.samples.partition_point(|x| x.timestamp_ms <= at);
            let samples: Vec<Sample> = s.samples[a..b]
                .iter()
                .filter(|x| !is_stale_nan(x.value))
                .copied()
                .collect();
            if samples.is_empty() {
                continue;
            }
            out.push(Window {
                labels: &s.labels,
                samples,
                rollup: s.rollup.as_deref().map(|r| &r[a..b]),
            });
        }
        out
    }

    /// Evaluates `e` at `t`.
    pub fn eval(&self, e: &Expr, t: i64) -> Result<Value, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter()
                        .map(|e| Element {
                            labels: drop_name(&e.labels),
                            value: -e.value,
                        })
                        .collect(),
                )),
                other => Err(QueryError::Execution(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.select(vs, t))),
            Expr::MatrixSelector(_) => Err(QueryError::BadData(
                "invalid expression type \"range vector\" for query, must be Scalar or instant Vector".to_owned(),
            )),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, t),
            Expr::Binary(b) => super::binary::eval(self, b, t),
            Expr::Call(c) => super::functions::eval(self, c, t),
            Expr::Subquery(_) => Err(QueryError::Execution(
                "subqueries are not supported yet".to_owned(),
            )),
            Expr::Extension(_) => Err(QueryError::Execution("unsupported expression".to_owned())),
        }
    }

    /// Evaluates `e` at `t`, requiring an instant vector.
    pub(crate) fn eval_vector(&self, e: &Expr, t: i64) -> Result<Vec<Element>, QueryError> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` at `t`, requiring a scalar.
    pub(crate) fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }
}

/// Labels `absent()` gives its result: the selector's equality matchers.
pub(crate) fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut l = Labels::new();
    let mut seen: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !seen.contains(&m.name.as_str()) {
            l.insert(m.name.clone(), m.value.clone());
        }
        seen.push(&m.name);
    }
    // A name given twice is ambiguous: Prometheus leaves it out.
    let dup: Vec<String> = l
        .iter()
        .filter(|x| {
            vs.matchers
                .matchers
                .iter()
                .filter(|m| m.name == x.name)
                .count()
                > 1
        })
        .map(|x| x.name.clone())
        .collect();
    for d in dup {
        l.remove(&d);
    }
    l
}

//! What an operator (an aggregation, a binary operator, a function) asks of the
//! evaluator at one instant: its operands' values, a range argument's windows, and the
//! query's shared label sets. [`crate::eval::Evaluator`] answers it; the operators name no
//! evaluator, so evaluation depends on them and not the other way round.

use std::borrow::Cow;
use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME, Sample};
use nunchi_tsdb::RollupPoint;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};

use super::QueryError;
use super::value::{Element, Value};

/// The samples one series has in a range window.
pub(crate) struct Window<'a> {
    pub(crate) labels: Arc<Labels>,
    pub(crate) samples: Cow<'a, [Sample]>,
    pub(crate) rollup: Option<&'a [RollupPoint]>,
}

/// A range argument (a range selector or a subquery) at one instant.
pub(crate) struct RangeArg<'a> {
    pub(crate) windows: Vec<Window<'a>>,
    /// The window's end: the evaluation time shifted by offset and `@`.
    pub(crate) end: i64,
    /// The window's length, in ms.
    pub(crate) range: i64,
}

/// The evaluator, as the operators see it.
pub(crate) trait Operands {
    /// Evaluates `e` at `t`.
    fn eval(&self, e: &Expr, t: i64) -> Result<Value, QueryError>;

    /// A range argument (range selector or subquery) at `t`.
    fn range_arg(&self, e: &Expr, t: i64) -> Result<RangeArg<'_>, QueryError>;

    /// `f(labels)`, computed once per query for each (node, label set).
    fn derive(
        &self,
        node: usize,
        labels: &Arc<Labels>,
        f: impl FnOnce(&Labels) -> Labels,
    ) -> Arc<Labels>;

    /// The one shared copy of `labels` in this query: derived sets that are equal are
    /// then the same allocation, so they can be grouped by address.
    fn intern(&self, labels: Labels) -> Arc<Labels>;

    /// `labels` without the metric name.
    fn drop_name(&self, labels: &Arc<Labels>) -> Arc<Labels>;

    /// Each series' newest sample that an instant selector takes at `t`, with its own
    /// timestamp (which `timestamp()` answers, rather than the evaluation time).
    fn instant_samples(&self, vs: &VectorSelector, t: i64) -> Vec<(Arc<Labels>, Sample)>;

    /// Evaluates `e` at `t`, requiring an instant vector.
    fn eval_vector(&self, e: &Expr, t: i64) -> Result<Vec<Element>, QueryError> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` at `t`, requiring a scalar.
    fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` at `t`, requiring a string.
    fn eval_string(&self, e: &Expr, t: i64) -> Result<String, QueryError> {
        match self.eval(e, t)? {
            Value::String(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected string, got {}",
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
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) {
            l.insert(m.name.clone(), m.value.clone());
        }
    }
    // A name matched more than once is ambiguous: Prometheus leaves it out.
    let names: Vec<String> = l.iter().map(|x| x.name.clone()).collect();
    for n in names {
        if vs.matchers.matchers.iter().filter(|m| m.name == n).count() > 1 {
            l.remove(&n);
        }
    }
    l
}

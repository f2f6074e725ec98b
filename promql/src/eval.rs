//! Evaluation of a parsed expression at one instant, over data loaded beforehand.
//!
//! Selection follows the bounds in [`crate::bounds`] (Prometheus 2's): an instant selector
//! takes each series' newest sample in its lookback window unless it is a staleness
//! marker; a range selector takes the samples in its window, staleness markers left out;
//! offsets and `@` shift `t`. A subquery evaluates its inner expression at the multiples
//! of its step that fall in its window; those inner results are kept, so the steps of a
//! range query share them.
//!
//! Label sets are shared (`Arc`), and the label sets derived from them (the metric name
//! dropped, a grouping) are computed once per query, not once per step.
//!
//! Work that grows with the query, not with the data, is bounded: every subquery step and
//! every sample a subquery produces counts against the query's sample limit before it is
//! computed (so `rate(x[1y:1ms])` is refused at once, not after filling memory), and the
//! [`Cancel`] token is checked at every subquery step.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME, Sample, is_stale_nan};
use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::QueryError;
use super::bounds::{lookback_first, window_first};
use super::gate::Cancel;
use super::load::{Loaded, LoadedSeries, selector_time, subquery_step, subquery_time};
use super::step::{Operands, RangeArg, Window};
use super::value::{Element, Value};

/// Derived label sets, keyed by (the node deriving them, the source set's address). The
/// source is kept alive with its result, so its address cannot be reused within a query.
type LabelMemo = HashMap<(usize, usize), (Arc<Labels>, Arc<Labels>)>;

/// A subquery's inner results, keyed by (the subquery node, the step time).
type SubqueryResults = HashMap<(usize, i64), Rc<Vec<Element>>>;

/// Evaluates expressions over loaded data.
pub struct Evaluator<'a> {
    loaded: &'a Loaded,
    start: i64,
    end: i64,
    lookback: i64,
    subquery_step: i64,
    /// Kept only when steps of a range query can share them.
    subquery_results: Option<RefCell<SubqueryResults>>,
    cancel: Cancel,
    /// Samples (and subquery steps) this query may still produce.
    budget: Cell<usize>,
    max_samples: usize,
    label_memo: RefCell<LabelMemo>,
    interned: RefCell<std::collections::HashSet<Arc<Labels>>>,
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        loaded: &'a Loaded,
        start: i64,
        end: i64,
        lookback: i64,
        subquery_step: i64,
        cancel: Cancel,
        max_samples: usize,
    ) -> Self {
        // What loading took counts against the same limit.
        let loaded_samples: usize = loaded.values().flatten().map(|s| s.runs.len()).sum();
        Evaluator {
            loaded,
            start,
            end,
            lookback,
            subquery_step,
            subquery_results: (start < end).then(RefCell::default),
            cancel,
            budget: Cell::new(max_samples.saturating_sub(loaded_samples)),
            max_samples,
            label_memo: RefCell::default(),
            interned: RefCell::default(),
        }
    }

    /// Takes `n` from the query's sample budget.
    pub(crate) fn spend(&self, n: usize) -> Result<(), QueryError> {
        match self.budget.get().checked_sub(n) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(QueryError::TooManySamples(self.max_samples)),
        }
    }

    /// `Err` once the query should stop (deadline, caller gone, collector stopping).
    pub(crate) fn check_cancel(&self) -> Result<(), QueryError> {
        self.cancel.check()
    }

    fn series(&self, vs: &VectorSelector) -> &'a [LoadedSeries] {
        self.loaded
            .get(&(vs as *const _ as usize))
            .map_or(&[], Vec::as_slice)
    }

    /// Each series' newest sample at or before `t` within the lookback, not stale.
    pub(crate) fn select_samples(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> impl Iterator<Item = (&'a Arc<Labels>, Sample)> {
        let at = selector_time(vs, t, self.start, self.end);
        let lookback = self.lookback;
        self.series(vs).iter().filter_map(move |s| {
            let samples = s.samples();
            let i = samples.partition_point(|x| x.timestamp_ms <= at);
            let last = *samples.get(i.checked_sub(1)?)?;
            (last.timestamp_ms >= lookback_first(at, lookback) && !is_stale_nan(last.value))
                .then_some((&s.labels, last))
        })
    }

    /// The instant vector a selector yields at `t`.
    pub(crate) fn select(&self, vs: &VectorSelector, t: i64) -> Vec<Element> {
        self.select_samples(vs, t)
            .map(|(labels, s)| Element {
                labels: labels.clone(),
                value: s.value,
            })
            .collect()
    }

    /// Each series' samples in a range selector's window at `t`.
    fn window(&self, ms: &MatrixSelector, t: i64) -> RangeArg<'a> {
        let at = selector_time(&ms.vs, t, self.start, self.end);
        let range = ms.range.as_millis() as i64;
        let from = window_first(at, range);
        let mut windows = Vec::new();
        for s in self.series(&ms.vs) {
            let all = s.samples();
            let a = all.partition_point(|x| x.timestamp_ms < from);
            let b = all.partition_point(|x| x.timestamp_ms <= at);
            let raw = &all[a..b];
            let samples = if raw.iter().any(|x| is_stale_nan(x.value)) {
                Cow::Owned(
                    raw.iter()
                        .filter(|x| !is_stale_nan(x.value))
                        .copied()
                        .collect(),
                )
            } else {
                Cow::Borrowed(raw)
            };
            if samples.is_empty() {
                continue;
            }
            windows.push(Window {
                labels: s.labels.clone(),
                samples,
                rollup: s.rollup.as_deref().map(|r| &r[a..b]),
            });
        }
        RangeArg {
            windows,
            end: at,
            range,
        }
    }

    /// The inner result of a subquery at one of its steps, and whether it was computed now
    /// (not kept from an earlier step of a range query).
    fn subquery_point(
        &self,
        sq: &SubqueryExpr,
        ti: i64,
    ) -> Result<(Rc<Vec<Element>>, bool), QueryError> {
        let key = (sq as *const _ as usize, ti);
        if let Some(v) = self
            .subquery_results
            .as_ref()
            .and_then(|r| r.borrow().get(&key).cloned())
        {
            return Ok((v, false));
        }
        let v = Rc::new(match self.eval(&sq.expr, ti)? {
            Value::Vector(v) => v,
            Value::Scalar(x) => vec![Element {
                labels: Arc::default(),
                value: x,
            }],
            Value::String(_) => {
                return Err(QueryError::BadData(
                    "subquery is only allowed on instant vector".to_owned(),
                ));
            }
        });
        if let Some(r) = &self.subquery_results {
            r.borrow_mut().insert(key, v.clone());
        }
        Ok((v, true))
    }

    /// A subquery's series at `t`.
    fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<RangeArg<'a>, QueryError> {
        let step = subquery_step(sq, self.subquery_step);
        let end = subquery_time(sq, t, self.start, self.end);
        let range = sq.range.as_millis() as i64;
        let mut order: Vec<Arc<Labels>> = Vec::new();
        let mut by_labels: HashMap<Arc<Labels>, Vec<Sample>> = HashMap::new();
        let first = window_first(end, range);
        let mut ti = first.div_euclid(step) * step;
        if ti < first {
            ti += step;
        }
        // The window must fit what is left of the budget before any step is computed (so
        // `x[1y:1ms]` is refused at once); each step computed (not one kept from an earlier
        // window of a range query) then costs a sample's worth, or its samples.
        let steps = if ti <= end { (end - ti) / step + 1 } else { 0 };
        if usize::try_from(steps).unwrap_or(usize::MAX) > self.budget.get() {
            return Err(QueryError::TooManySamples(self.max_samples));
        }
        while ti <= end {
            self.cancel.check()?;
            let (point, computed) = self.subquery_point(sq, ti)?;
            if computed {
                self.spend(point.len().max(1))?;
            }
            for e in point.iter() {
                by_labels
                    .entry(e.labels.clone())
                    .or_insert_with(|| {
                        order.push(e.labels.clone());
                        Vec::new()
                    })
                    .push(Sample {
                        timestamp_ms: ti,
                        value: e.value,
                    });
            }
            match ti.checked_add(step) {
                Some(next) => ti = next,
                None => break,
            }
        }
        let windows = order
            .into_iter()
            .filter_map(|l| {
                let samples = by_labels.remove(&l)?;
                Some(Window {
                    labels: l,
                    samples: Cow::Owned(samples),
                    rollup: None,
                })
            })
            .collect();
        Ok(RangeArg {
            windows,
            end,
            range,
        })
    }
}

impl<'a> Operands for Evaluator<'a> {
    fn eval(&self, e: &Expr, t: i64) -> Result<Value, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter()
                        .map(|e| Element {
                            labels: self.drop_name(&e.labels),
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
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(QueryError::BadData(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".to_owned(),
            )),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, t),
            Expr::Binary(b) => super::binary::eval(self, b, t),
            Expr::Call(c) => super::functions::eval(self, c, t),
            Expr::Extension(_) => Err(QueryError::Execution("unsupported expression".to_owned())),
        }
    }

    fn range_arg(&self, e: &Expr, t: i64) -> Result<RangeArg<'_>, QueryError> {
        match e {
            Expr::MatrixSelector(ms) => Ok(self.window(ms, t)),
            Expr::Subquery(sq) => self.subquery(sq, t),
            Expr::Paren(p) => self.range_arg(&p.expr, t),
            _ => Err(QueryError::BadData(
                "expected type range vector in call to function".to_owned(),
            )),
        }
    }

    fn derive(
        &self,
        node: usize,
        labels: &Arc<Labels>,
        f: impl FnOnce(&Labels) -> Labels,
    ) -> Arc<Labels> {
        let key = (node, Arc::as_ptr(labels) as usize);
        if let Some((_, d)) = self.label_memo.borrow().get(&key) {
            return d.clone();
        }
        let d = self.intern(f(labels));
        self.label_memo
            .borrow_mut()
            .insert(key, (labels.clone(), d.clone()));
        d
    }

    fn intern(&self, labels: Labels) -> Arc<Labels> {
        if let Some(a) = self.interned.borrow().get(&labels) {
            return a.clone();
        }
        let a = Arc::new(labels);
        self.interned.borrow_mut().insert(a.clone());
        a
    }

    fn drop_name(&self, labels: &Arc<Labels>) -> Arc<Labels> {
        if labels.get(METRIC_NAME).is_none() {
            return labels.clone();
        }
        self.derive(0, labels, super::value::drop_name)
    }

    fn instant_samples(&self, vs: &VectorSelector, t: i64) -> Vec<(Arc<Labels>, Sample)> {
        self.select_samples(vs, t)
            .map(|(labels, s)| (labels.clone(), s))
            .collect()
    }
}

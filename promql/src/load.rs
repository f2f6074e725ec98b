//! What a query reads: the time each selector and subquery is evaluated at (offset and
//! `@`), the span of sample times each selector needs when the query is evaluated over a
//! time range (the load plan), and the series loaded for it.

use std::collections::HashMap;
use std::sync::Arc;

use nunchi_tsdb::{RollupPoint, Samples};
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::QueryLimits;

/// One loaded series.
pub(crate) struct LoadedSeries {
    pub(crate) labels: Arc<nunchi_model::Labels>,
    /// Its samples as storage returned them, in runs.
    pub(crate) runs: Samples,
    /// Its samples in one slice, made on first use when there are several runs.
    joined: std::sync::OnceLock<Vec<nunchi_model::Sample>>,
    pub(crate) rollup: Option<Vec<RollupPoint>>,
}

impl LoadedSeries {
    pub(crate) fn new(
        labels: nunchi_model::Labels,
        runs: Samples,
        rollup: Option<Vec<RollupPoint>>,
    ) -> Self {
        LoadedSeries {
            labels: Arc::new(labels),
            runs,
            joined: std::sync::OnceLock::new(),
            rollup,
        }
    }

    /// Its samples, sorted, in one slice.
    pub(crate) fn samples(&self) -> &[nunchi_model::Sample] {
        match self.runs.as_slice() {
            Some(s) => s,
            None => self.joined.get_or_init(|| self.runs.to_vec()),
        }
    }
}

/// Loaded data per selector (keyed by the selector's address in the parsed tree).
pub(crate) type Loaded = HashMap<usize, Vec<LoadedSeries>>;

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Some(Offset::Neg(d)) => -i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        None => 0,
    }
}

/// A selector's matchers, its metric name included (the parser keeps the name apart).
pub fn selector_matchers(vs: &VectorSelector) -> Vec<promql_parser::label::Matcher> {
    let mut m = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name
        && !m.iter().any(|x| x.name == nunchi_model::METRIC_NAME)
    {
        m.push(promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Equal,
            nunchi_model::METRIC_NAME,
            name,
        ));
    }
    m
}

/// The time an `@`/offset-modified node reads at, for an evaluation at `t` of a query
/// over `[start, end]`.
pub(crate) fn at_time(
    at: &Option<AtModifier>,
    offset: &Option<Offset>,
    t: i64,
    start: i64,
    end: i64,
) -> i64 {
    let at = match at {
        None => t,
        Some(AtModifier::Start) => start,
        Some(AtModifier::End) => end,
        Some(AtModifier::At(st)) => match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        },
    };
    at.saturating_sub(offset_ms(offset))
}

/// The time a selector is evaluated at, for an evaluation at `t` of a query over
/// `[start, end]`.
pub(crate) fn selector_time(vs: &VectorSelector, t: i64, start: i64, end: i64) -> i64 {
    at_time(&vs.at, &vs.offset, t, start, end)
}

/// A selector to load, and the time range it needs.
pub(crate) struct Want<'a> {
    pub(crate) key: usize,
    pub(crate) vs: &'a VectorSelector,
    pub(crate) mint: i64,
    pub(crate) maxt: i64,
}

/// What each selector in `e` needs, when `e` is evaluated at times in `[a, b]`.
pub(crate) struct LoadPlan<'a> {
    pub(crate) out: Vec<Want<'a>>,
    pub(crate) lookback: i64,
    pub(crate) subquery_step: i64,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl<'a> LoadPlan<'a> {
    fn selector(&mut self, vs: &'a VectorSelector, range: i64, a: i64, b: i64) {
        let ta = selector_time(vs, a, self.start, self.end);
        let tb = selector_time(vs, b, self.start, self.end);
        self.out.push(Want {
            key: vs as *const _ as usize,
            vs,
            mint: ta.min(tb).saturating_sub(range),
            maxt: ta.max(tb),
        });
    }

    pub(crate) fn walk(&mut self, e: &'a Expr, a: i64, b: i64) {
        match e {
            Expr::VectorSelector(vs) => self.selector(vs, self.lookback, a, b),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs, ms.range.as_millis() as i64, a, b),
            Expr::Subquery(sq) => {
                let ta = subquery_time(sq, a, self.start, self.end);
                let tb = subquery_time(sq, b, self.start, self.end);
                let step = subquery_step(sq, self.subquery_step);
                let from = ta
                    .min(tb)
                    .saturating_sub(sq.range.as_millis() as i64)
                    .saturating_sub(step);
                self.walk(&sq.expr, from, ta.max(tb));
            }
            Expr::Aggregate(x) => {
                self.walk(&x.expr, a, b);
                if let Some(p) = &x.param {
                    self.walk(p, a, b);
                }
            }
            Expr::Unary(u) => self.walk(&u.expr, a, b),
            Expr::Binary(x) => {
                self.walk(&x.lhs, a, b);
                self.walk(&x.rhs, a, b);
            }
            Expr::Paren(p) => self.walk(&p.expr, a, b),
            Expr::Call(c) => {
                for x in &c.args.args {
                    self.walk(x, a, b);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
}

/// The span of sample times evaluating `expr` at every time in `[start, end]` reads, or
/// `None` when an `@` modifier pins some part of it to a fixed or query-relative time.
pub fn data_span(expr: &Expr, start: i64, end: i64, limits: &QueryLimits) -> Option<(i64, i64)> {
    let mut plan = LoadPlan {
        out: Vec::new(),
        lookback: limits.lookback.as_millis() as i64,
        subquery_step: (limits.subquery_step.as_millis() as i64).max(1),
        start,
        end,
    };
    if pinned(expr) {
        return None;
    }
    plan.walk(expr, start, end);
    let mint = plan.out.iter().map(|w| w.mint).min().unwrap_or(start);
    let maxt = plan.out.iter().map(|w| w.maxt).max().unwrap_or(end);
    Some((mint, maxt))
}

/// Whether any selector or subquery in `e` has an `@` modifier.
fn pinned(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(vs) => vs.at.is_some(),
        Expr::MatrixSelector(ms) => ms.vs.at.is_some(),
        Expr::Subquery(sq) => sq.at.is_some() || pinned(&sq.expr),
        Expr::Aggregate(x) => pinned(&x.expr) || x.param.as_deref().is_some_and(pinned),
        Expr::Unary(u) => pinned(&u.expr),
        Expr::Binary(x) => pinned(&x.lhs) || pinned(&x.rhs),
        Expr::Paren(p) => pinned(&p.expr),
        Expr::Call(c) => c.args.args.iter().any(|a| pinned(a)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
    }
}

/// A subquery's step: its own, or the default.
pub(crate) fn subquery_step(sq: &SubqueryExpr, default: i64) -> i64 {
    sq.step
        .map(|d| d.as_millis() as i64)
        .filter(|&s| s > 0)
        .unwrap_or(default)
}

/// The time a subquery's window ends at, for an evaluation at `t`.
pub(crate) fn subquery_time(sq: &SubqueryExpr, t: i64, start: i64, end: i64) -> i64 {
    at_time(&sq.at, &sq.offset, t, start, end)
}

//! PromQL: expressions parsed with `promql-parser`, evaluated by our engine with
//! Prometheus' semantics (the answers are compared with a real Prometheus in the tests).
//!
//! A query runs in two phases. First every selector's data for the whole query range is
//! loaded from storage through the [`Querier`] trait, counting samples against the limit.
//! Then the expression is evaluated at each step ([`eval`]), reading only loaded data.
//!
//! Long range queries (a step of at least the rollup resolution over more than
//! [`ROLLUP_MIN_RANGE_MS`]) read rollups instead of raw samples: selectors and rate
//! functions see each bucket's last sample, `min/max/sum/count/avg_over_time` use the
//! bucket summaries.

mod aggregate;
mod binary;
pub mod eval;
mod functions;
pub mod value;

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::storage::{RollupPoint, SelectedRollup, SelectedSeries, StorageError};
pub use value::{Element, QueryResult, Value};

/// Range queries spanning more than this may read rollups.
pub const ROLLUP_MIN_RANGE_MS: i64 = 2 * 24 * 3600 * 1000;

/// Why a query failed; each maps to one of Prometheus' `errorType`s.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query or a parameter is malformed (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The query would touch more samples than allowed (`execution`, HTTP 422).
    #[error(
        "query processing would load too many samples into memory in query execution (limit {0} samples)"
    )]
    TooManySamples(usize),
    /// The query ran past its time limit (`timeout`, HTTP 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// Storage failed (`internal`, HTTP 500).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Where queries read data from.
pub trait Querier: Send + Sync {
    /// Raw samples of the matching series in `[mint, maxt]`.
    fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Future<Output = Result<Vec<SelectedSeries>, StorageError>> + Send;

    /// Rollup points of the matching series in `[mint, maxt]`.
    fn select_rollup(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Future<Output = Result<Vec<SelectedRollup>, StorageError>> + Send;

    /// Bucket width of rollups, in ms.
    fn rollup_resolution_ms(&self) -> i64;
}

impl Querier for crate::storage::Storage {
    async fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        crate::storage::Storage::select(self, matchers, mint, maxt).await
    }

    async fn select_rollup(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedRollup>, StorageError> {
        crate::storage::Storage::select_rollup(self, matchers, mint, maxt).await
    }

    fn rollup_resolution_ms(&self) -> i64 {
        self.options().rollup_resolution.as_millis() as i64
    }
}

/// Limits applied to every query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Most samples a query may load.
    pub max_samples: usize,
    /// Longest a query may run.
    pub timeout: Duration,
    /// How far back an instant selector looks for a sample.
    pub lookback: Duration,
    /// Most points a range query may return per series (Prometheus: 11,000).
    pub max_points_per_series: i64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            lookback: Duration::from_secs(300),
            max_points_per_series: 11_000,
        }
    }
}

/// One loaded series.
pub(crate) struct LoadedSeries {
    pub(crate) labels: nunchi_model::Labels,
    pub(crate) samples: Vec<nunchi_model::Sample>,
    pub(crate) rollup: Option<Vec<RollupPoint>>,
}

/// Loaded data per selector (keyed by the selector's address in the parsed tree).
pub(crate) type Loaded = HashMap<usize, Vec<LoadedSeries>>;

/// Parses a query, with Prometheus' wording for errors.
pub fn parse(q: &str) -> Result<Expr, QueryError> {
    parser::parse(q).map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// A selector's matchers, its metric name included (the parser keeps the name apart).
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Vec<promql_parser::label::Matcher> {
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

/// The time a selector is evaluated at, for an evaluation at `t` of a query over
/// `[start, end]`.
pub(crate) fn selector_time(vs: &VectorSelector, t: i64, start: i64, end: i64) -> i64 {
    let at = match &vs.at {
        None => t,
        Some(AtModifier::Start) => start,
        Some(AtModifier::End) => end,
        Some(AtModifier::At(st)) => match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        },
    };
    at - offset_ms(&vs.offset)
}

struct Want<'a> {
    key: usize,
    vs: &'a VectorSelector,
    range: i64,
}

fn collect<'a>(e: &'a Expr, out: &mut Vec<Want<'a>>, lookback: i64) -> Result<(), QueryError> {
    match e {
        Expr::VectorSelector(vs) => out.push(Want {
            key: vs as *const _ as usize,
            vs,
            range: lookback,
        }),
        Expr::MatrixSelector(ms) => out.push(Want {
            key: &ms.vs as *const _ as usize,
            vs: &ms.vs,
            range: ms.range.as_millis() as i64,
        }),
        Expr::Aggregate(a) => {
            collect(&a.expr, out, lookback)?;
            if let Some(p) = &a.param {
                collect(p, out, lookback)?;
            }
        }
        Expr::Unary(u) => collect(&u.expr, out, lookback)?,
        Expr::Binary(b) => {
            collect(&b.lhs, out, lookback)?;
            collect(&b.rhs, out, lookback)?;
        }
        Expr::Paren(p) => collect(&p.expr, out, lookback)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                collect(a, out, lookback)?;
            }
        }
        Expr::Subquery(_) => {
            return Err(QueryError::Execution(
                "subqueries are not supported yet".to_owned(),
            ));
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

/// Runs PromQL against a [`Querier`].
pub struct Engine<'q, Q: Querier> {
    querier: &'q Q,
    limits: QueryLimits,
}

impl<'q, Q: Querier> Engine<'q, Q> {
    /// An engine reading from `querier`.
    pub fn new(querier: &'q Q, limits: QueryLimits) -> Self {
        Engine { querier, limits }
    }

    async fn load(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        rollup: bool,
    ) -> Result<Loaded, QueryError> {
        let lookback = self.limits.lookback.as_millis() as i64;
        let mut wants = Vec::new();
        collect(expr, &mut wants, lookback)?;
        let mut loaded = Loaded::new();
        let mut total = 0usize;
        for w in wants {
            let a = selector_time(w.vs, start, start, end);
            let b = selector_time(w.vs, end, start, end);
            let (mint, maxt) = (a.min(b) - w.range, a.max(b));
            if !w.vs.matchers.or_matchers.is_empty() {
                return Err(QueryError::Execution(
                    "\"or\" inside a selector is not supported yet".to_owned(),
                ));
            }
            let matchers = &selector_matchers(w.vs);
            let series: Vec<LoadedSeries> = if rollup {
                self.querier
                    .select_rollup(matchers, mint, maxt)
                    .await?
                    .into_iter()
                    .map(|s| LoadedSeries {
                        samples: s
                            .points
                            .iter()
                            .map(|p| nunchi_model::Sample {
                                timestamp_ms: p.timestamp_ms,
                                value: p.last,
                            })
                            .collect(),
                        labels: s.labels,
                        rollup: Some(s.points),
                    })
                    .collect()
            } else {
                self.querier
                    .select(matchers, mint, maxt)
                    .await?
                    .into_iter()
                    .map(|s| LoadedSeries {
                        labels: s.labels,
                        samples: s.samples,
                        rollup: None,
                    })
                    .collect()
            };
            total += series.iter().map(|s| s.samples.len()).sum::<usize>();
            if total > self.limits.max_samples {
                return Err(QueryError::TooManySamples(self.limits.max_samples));
            }
            loaded.insert(w.key, series);
        }
        Ok(loaded)
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        tokio::time::timeout(self.limits.timeout, f)
            .await
            .map_err(|_| QueryError::Timeout("query execution"))?
    }

    /// Evaluates `expr` at `t` (ms).
    pub async fn instant(&self, expr: &Expr, t: i64) -> Result<QueryResult, QueryError> {
        self.timed(async {
            let loaded = self.load(expr, t, t, false).await?;
            let ev = eval::Evaluator::new(&loaded, t, t, self.limits.lookback.as_millis() as i64);
            if let Expr::MatrixSelector(ms) = expr {
                let mut out: Vec<_> = ev
                    .window(ms, t)
                    .into_iter()
                    .map(|w| {
                        let points = w
                            .samples
                            .iter()
                            .map(|s| (s.timestamp_ms, s.value))
                            .collect();
                        (w.labels.clone(), points)
                    })
                    .collect();
                out.sort_by(|a: &(nunchi_model::Labels, Vec<(i64, f64)>), b| a.0.cmp(&b.0));
                return Ok(QueryResult::Matrix(out));
            }
            Ok(match ev.eval(expr, t)? {
                Value::Scalar(v) => QueryResult::Scalar(t, v),
                Value::String(s) => QueryResult::String(t, s),
                Value::Vector(v) => QueryResult::Vector(t, v),
            })
        })
        .await
    }

    /// Evaluates `expr` at every `step` from `start` to `end` (ms).
    pub async fn range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult, QueryError> {
        if step <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".to_owned(),
            ));
        }
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".to_owned(),
            ));
        }
        if (end - start) / step >= self.limits.max_points_per_series {
            return Err(QueryError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".to_owned(),
            ));
        }
        let rollup =
            step >= self.querier.rollup_resolution_ms() && end - start > ROLLUP_MIN_RANGE_MS;
        self.timed(async {
            let loaded = self.load(expr, start, end, rollup).await?;
            let ev = eval::Evaluator::new(&loaded, start, end, self.limits.lookback.as_millis() as i64);
            let mut series: HashMap<nunchi_model::Labels, Vec<(i64, f64)>> = HashMap::new();
            let mut t = start;
            while t <= end {
                match ev.eval(expr, t)? {
                    Value::Scalar(v) => series.entry(Default::default()).or_default().push((t, v)),
                    Value::Vector(v) => {
                        for e in v {
                            series.entry(e.labels).or_default().push((t, e.value));
                        }
                    }
                    Value::String(_) => {
                        return Err(QueryError::BadData(
                            "invalid expression type \"string\" for range query, must be Scalar or instant Vector".to_owned(),
                        ));
                    }
                }
                t += step;
            }
            let mut out: Vec<_> = series.into_iter().collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(QueryResult::Matrix(out))
        })
        .await
    }
}

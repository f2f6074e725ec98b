//! PromQL: expressions parsed with `promql-parser`, evaluated by our engine with
//! Prometheus' semantics (the answers are compared with a real Prometheus in the tests).
//!
//! A query runs in two phases. First every selector's data for the whole query range is
//! loaded from storage through the [`Querier`] trait, counting samples against the limit.
//! Then the expression is evaluated at each step ([`eval`]), reading only loaded data.
//!
//! Evaluation runs on a thread of its own, admitted, cancelled and prioritised by the
//! collector's [`gate::QueryGate`]; the query text is checked against [`parse::TextLimits`]
//! before it is parsed.
//!
//! Long range queries (a step of at least the rollup resolution over more than
//! [`ROLLUP_MIN_RANGE_MS`]) read rollups instead of raw samples: selectors and rate
//! functions see each bucket's last sample, `min/max/sum/count/avg_over_time` use the
//! bucket summaries.

mod aggregate;
mod binary;
mod bounds;
pub mod cache;
pub mod eval;
mod functions;
pub mod gate;
mod load;
pub mod parse;
mod range;
mod step;
pub mod value;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::Expr;

use gate::{Cancel, Lane, QueryGate};
use load::{LoadPlan, Loaded, LoadedSeries};
pub use load::{data_span, selector_matchers};
use nunchi_tsdb::{SelectedRollup, SelectedSeries, StorageError};
pub use parse::TextLimits;
use step::Operands;
pub use value::{Element, QueryResult, Value, format_value};

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
    /// The remote storage could not answer, or the collector is stopping (`unavailable`,
    /// HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed that should not have (`internal`, HTTP 500).
    #[error("{0}")]
    Internal(String),
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

impl Querier for nunchi_tsdb::Storage {
    async fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        nunchi_tsdb::Storage::select(self, matchers, mint, maxt).await
    }

    async fn select_rollup(
        &self,
        matchers: &[promql_parser::label::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedRollup>, StorageError> {
        nunchi_tsdb::Storage::select_rollup(self, matchers, mint, maxt).await
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
    /// Step of a subquery that names none (Prometheus: the global evaluation interval).
    pub subquery_step: Duration,
    /// Limits on the query's text.
    pub text: TextLimits,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            lookback: Duration::from_secs(300),
            max_points_per_series: 11_000,
            subquery_step: Duration::from_secs(60),
            text: TextLimits::default(),
        }
    }
}

/// Parses a query within the default [`TextLimits`], with Prometheus' wording for errors.
pub fn parse(q: &str) -> Result<Expr, QueryError> {
    parse_with(q, &TextLimits::default())
}

/// Parses a query within `limits`, with Prometheus' wording for errors.
pub fn parse_with(q: &str, limits: &TextLimits) -> Result<Expr, QueryError> {
    parse::parse_limited(q, limits)
        .map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))
}

/// One result series of a range query, being built.
type Points = (Arc<nunchi_model::Labels>, Vec<(i64, f64)>);

/// Runs PromQL against a [`Querier`].
pub struct Engine<'q, Q: Querier> {
    querier: &'q Q,
    pub(crate) limits: QueryLimits,
    gate: Option<Arc<QueryGate>>,
    lane: Lane,
}

impl<'q, Q: Querier> Engine<'q, Q> {
    /// An engine reading from `querier`, admitting every query at once.
    pub fn new(querier: &'q Q, limits: QueryLimits) -> Self {
        Engine {
            querier,
            limits,
            gate: None,
            lane: Lane::Client,
        }
    }

    /// The same engine, its queries admitted and cancelled by `gate` in `lane`.
    pub fn gated(mut self, gate: Arc<QueryGate>, lane: Lane) -> Self {
        self.gate = Some(gate);
        self.lane = lane;
        self
    }

    fn cancel(&self) -> Cancel {
        Cancel::new(self.limits.timeout, self.gate.clone())
    }

    async fn admit(&self) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, QueryError> {
        match &self.gate {
            Some(g) => g.admit(self.lane).await,
            None => Ok(None),
        }
    }

    fn lookback(&self) -> i64 {
        self.limits.lookback.as_millis() as i64
    }

    fn subquery_step(&self) -> i64 {
        (self.limits.subquery_step.as_millis() as i64).max(1)
    }

    async fn load(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        rollup: bool,
    ) -> Result<Loaded, QueryError> {
        let mut c = LoadPlan {
            out: Vec::new(),
            lookback: self.lookback(),
            subquery_step: self.subquery_step(),
            start,
            end,
        };
        c.walk(expr, start, end);
        let mut loaded = Loaded::new();
        let mut total = 0usize;
        for w in c.out {
            if !w.vs.matchers.or_matchers.is_empty() {
                return Err(QueryError::Execution(
                    "\"or\" inside a selector is not supported".to_owned(),
                ));
            }
            let matchers = &selector_matchers(w.vs);
            let series: Vec<LoadedSeries> = if rollup {
                self.querier
                    .select_rollup(matchers, w.mint, w.maxt)
                    .await?
                    .into_iter()
                    .map(|s| {
                        let last: Vec<nunchi_model::Sample> = s
                            .points
                            .iter()
                            .map(|p| nunchi_model::Sample {
                                timestamp_ms: p.timestamp_ms,
                                value: p.last,
                            })
                            .collect();
                        LoadedSeries::new(s.labels, last.into(), Some(s.points))
                    })
                    .collect()
            } else {
                self.querier
                    .select(matchers, w.mint, w.maxt)
                    .await?
                    .into_iter()
                    .map(|s| LoadedSeries::new(s.labels, s.samples, None))
                    .collect()
            };
            total += series.iter().map(|s| s.runs.len()).sum::<usize>();
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

    /// A copy of `expr` for the evaluation thread, and its data for `[start, end]` (loaded
    /// data is keyed by the copy's nodes).
    async fn load_copy(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        rollup: bool,
    ) -> Result<(Arc<Expr>, Loaded), QueryError> {
        let expr = Arc::new(expr.clone());
        let began = std::time::Instant::now();
        let loaded = self.load(&expr, start, end, rollup).await?;
        tracing::debug!(
            load_ms = began.elapsed().as_secs_f64() * 1000.0,
            series = loaded.values().map(Vec::len).sum::<usize>(),
            samples = loaded
                .values()
                .flatten()
                .map(|s| s.runs.len())
                .sum::<usize>(),
            "query data loaded"
        );
        Ok((expr, loaded))
    }

    /// The lookback, default subquery step and sample limit, for the evaluation thread.
    fn eval_settings(&self) -> (i64, i64, usize) {
        (
            self.lookback(),
            self.subquery_step(),
            self.limits.max_samples,
        )
    }

    /// Evaluates `expr` at `t` (ms).
    pub async fn instant(&self, expr: &Expr, t: i64) -> Result<QueryResult, QueryError> {
        let cancel = self.cancel();
        self.timed(async {
            let _slot = self.admit().await?;
            let (expr, loaded) = self.load_copy(expr, t, t, false).await?;
            let (lookback, sq_step, max) = self.eval_settings();
            gate::evaluate(self.lane, &cancel, move |cancel| {
                let ev =
                    eval::Evaluator::new(&loaded, t, t, lookback, sq_step, cancel.clone(), max);
                instant_at(&ev, &expr, t)
            })
            .await
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
        let rollup = self.uses_rollup(start, end, step);
        self.range_with(expr, start, end, step, rollup).await
    }

    /// Whether a range query over `[start, end]` at `step` reads rollups.
    pub fn uses_rollup(&self, start: i64, end: i64, step: i64) -> bool {
        step >= self.querier.rollup_resolution_ms() && end - start > ROLLUP_MIN_RANGE_MS
    }

    /// Refuses a range query Prometheus would refuse, with its words.
    pub fn check_range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(), QueryError> {
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
        if let Some(kind) = match expr {
            Expr::StringLiteral(_) => Some("string"),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Some("range vector"),
            _ => None,
        } {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{kind}\" for range query, must be Scalar or instant Vector"
            )));
        }
        Ok(())
    }

    /// [`Engine::range`], reading rollups or raw samples as `rollup` says (a cached
    /// answer's new steps are computed the way its old ones were).
    pub async fn range_with(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        rollup: bool,
    ) -> Result<QueryResult, QueryError> {
        self.check_range(expr, start, end, step)?;
        let cancel = self.cancel();
        self.timed(async {
            let _slot = self.admit().await?;
            let began = std::time::Instant::now();
            let (expr, loaded) = self.load_copy(expr, start, end, rollup).await?;
            let (lookback, sq_step, max) = self.eval_settings();
            gate::evaluate(self.lane, &cancel, move |cancel| {
                let steps = range::Steps {
                    start,
                    step,
                    n: ((end - start) / step + 1) as usize,
                };
                // Evaluated series by series, a query holds at most one value per step of
                // each series it read (and the samples it loaded): counted before it runs,
                // as Prometheus counts each step's points. The pass is bounded by that; it
                // is not cancelled part-way.
                let series: usize = loaded.values().map(Vec::len).sum();
                let samples: usize = loaded.values().flatten().map(|s| s.runs.len()).sum();
                if series.saturating_mul(steps.n).saturating_add(samples) > max {
                    return Err(QueryError::TooManySamples(max));
                }
                cancel.check()?;
                if let Some(tracks) = range::eval(&loaded, &expr, &steps, lookback) {
                    cancel.check()?;
                    let eval_ms = began.elapsed().as_secs_f64() * 1000.0;
                    let mut out: Vec<_> = tracks
                        .into_iter()
                        .filter(|t| t.values.iter().any(Option::is_some))
                        .map(|t| {
                            let points = t
                                .values
                                .iter()
                                .enumerate()
                                .filter_map(|(i, v)| Some((start + i as i64 * step, (*v)?)))
                                .collect();
                            (Arc::unwrap_or_clone(t.labels), points)
                        })
                        .collect();
                    out.sort_by(|a: &(nunchi_model::Labels, Vec<(i64, f64)>), b| a.0.cmp(&b.0));
                    tracing::debug!(
                        eval_ms,
                        total_ms = began.elapsed().as_secs_f64() * 1000.0,
                        "range query evaluated series by series"
                    );
                    return Ok(QueryResult::Matrix(out));
                }
                let ev = eval::Evaluator::new(
                    &loaded,
                    start,
                    end,
                    lookback,
                    sq_step,
                    cancel.clone(),
                    max,
                );
                range_by_steps(&ev, &expr, &steps)
            })
            .await
        })
        .await
    }
}

/// `expr` evaluated at `t`, as an instant query answers it.
fn instant_at(ev: &eval::Evaluator<'_>, expr: &Expr, t: i64) -> Result<QueryResult, QueryError> {
    if matches!(expr, Expr::MatrixSelector(_) | Expr::Subquery(_)) {
        let mut out: Vec<_> = ev
            .range_arg(expr, t)?
            .windows
            .into_iter()
            .map(|w| {
                let points = w
                    .samples
                    .iter()
                    .map(|s| (s.timestamp_ms, s.value))
                    .collect();
                (Arc::unwrap_or_clone(w.labels), points)
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
}

/// `expr` evaluated at every step, one step at a time; the points answered count against
/// the sample limit.
fn range_by_steps(
    ev: &eval::Evaluator<'_>,
    expr: &Expr,
    steps: &range::Steps,
) -> Result<QueryResult, QueryError> {
    // Series in order of first appearance; one map lookup per distinct label set
    // (by address) rather than a hash of the labels at every step.
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut by_labels: HashMap<Arc<nunchi_model::Labels>, usize> = HashMap::new();
    let mut series: Vec<Points> = Vec::new();
    let mut keep: Vec<Arc<nunchi_model::Labels>> = Vec::new();
    for i in 0..steps.n {
        ev.check_cancel()?;
        let t = steps.start + i as i64 * steps.step;
        let v = match ev.eval(expr, t)? {
            Value::Scalar(v) => vec![Element {
                labels: Arc::default(),
                value: v,
            }],
            Value::Vector(v) => v,
            Value::String(_) => {
                return Err(QueryError::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".to_owned(),
                ));
            }
        };
        ev.spend(v.len())?;
        for e in v {
            let ptr = Arc::as_ptr(&e.labels) as usize;
            let i = match index.get(&ptr) {
                Some(&i) => i,
                None => {
                    let i = *by_labels.entry(e.labels.clone()).or_insert_with(|| {
                        series.push((e.labels.clone(), Vec::new()));
                        series.len() - 1
                    });
                    index.insert(ptr, i);
                    // Held so the address stays unique for this query.
                    keep.push(e.labels.clone());
                    i
                }
            };
            series[i].1.push((t, e.value));
        }
    }
    let mut out: Vec<_> = series
        .into_iter()
        .map(|(l, p)| (Arc::unwrap_or_clone(l), p))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(QueryResult::Matrix(out))
}

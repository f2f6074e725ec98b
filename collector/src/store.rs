//! Where series live: the embedded storage ([`LocalStore`]), or a remote TSDB (remote
//! storage mode, [`Remote`]). Ingest, the HTTP API and the rules reach either through
//! [`SeriesStore`] and work the same in both modes.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::Series;
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use serde_json::Value as Json;

use crate::query::cache::{CacheOptions, ResultCache};
use crate::query::gate::{Lane, QueryGate};
use crate::query::{Engine, QueryError, QueryLimits, QueryResult};
use crate::remote::{ForwardError, Remote};
use crate::storage::{AppendOutcome, Storage, StorageError, canonicalize};

/// Why series were not stored.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The embedded storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The remote storage did not take them.
    #[error(transparent)]
    Remote(#[from] ForwardError),
}

/// A request to the series, label-name and label-value endpoints: the parsed selection,
/// and the request's parameters as sent, which a remote store is given unchanged.
pub struct Lookup<'a> {
    /// `match[]` selectors (any of them).
    pub matchers: &'a [Vec<Matcher>],
    /// Start of the span, ms.
    pub start: i64,
    /// End of the span, ms.
    pub end: i64,
    /// Most entries to return.
    pub limit: Option<usize>,
    /// The request's parameters.
    pub params: &'a [(String, String)],
}

/// The series store the collector runs on.
pub type SharedStore = Arc<dyn SeriesStore>;

/// A future a store returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, T>;

/// A series store: queries, writes, the metadata endpoints and its own health.
pub trait SeriesStore: Send + Sync + 'static {
    /// Evaluates `query` at `t` (ms) for a client.
    fn instant<'a>(
        &'a self,
        query: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>>;

    /// Evaluates a parsed expression (`text` is the same) at `t` (ms) for rule
    /// evaluation, which waits for no client query. A store that cannot take the parsed
    /// form evaluates the text.
    fn instant_expr<'a>(
        &'a self,
        _expr: &'a Expr,
        text: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        self.instant(text, t, limits)
    }

    /// Evaluates `query` at every `step` from `start` to `end` (ms), reusing kept
    /// answers unless `nocache`.
    fn range<'a>(
        &'a self,
        query: &'a str,
        span: (i64, i64, i64),
        limits: QueryLimits,
        nocache: bool,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>>;

    /// Stores series produced inside the collector; returns the samples stored.
    fn write_series<'a>(
        &'a self,
        series: &'a [Series],
    ) -> StoreFuture<'a, Result<u64, BackendError>>;

    /// How many series `req` would create, which the writer's series budget is charged
    /// for before [`SeriesStore::write`] (0 where the store enforces its own limits).
    fn count_new_series(&self, req: &WriteRequest) -> u64;

    /// Stores a remote_write request: `body` is its 1.0 encoding, `req` the decoded form.
    fn write<'a>(
        &'a self,
        body: Vec<u8>,
        req: &'a WriteRequest,
    ) -> StoreFuture<'a, Result<AppendOutcome, BackendError>>;

    /// Label names of the selected series.
    fn label_names<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>>;

    /// Label sets of the selected series.
    fn series<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>>;

    /// Values of label `name` among the selected series.
    fn label_values<'a>(
        &'a self,
        name: &'a str,
        q: Lookup<'a>,
    ) -> StoreFuture<'a, Result<Json, QueryError>>;

    /// Metric metadata: of `metric` (or all), at most `limit` metrics and `per_metric`
    /// entries each.
    fn metadata<'a>(
        &'a self,
        metric: Option<&'a str>,
        limit: Option<usize>,
        per_metric: Option<usize>,
        params: &'a [(String, String)],
    ) -> StoreFuture<'a, Result<Json, QueryError>>;

    /// The store's state, for `/api/v1/status/tsdb`-style pages.
    fn status(&self) -> Json;

    /// `Err` with the reason where the store cannot serve now.
    fn ready(&self) -> StoreFuture<'_, Result<(), String>>;

    /// Flushes and compacts now; returns the blocks written.
    fn compact(&self) -> StoreFuture<'_, Result<u64, QueryError>>;

    /// The store's background work (flushes, compaction, retention) until `shutdown`
    /// turns true, if it has any.
    fn maintenance(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<BoxFuture<'static, ()>>;

    /// Ends running queries at their next step (shutdown).
    fn stop_queries(&self);
}

/// The embedded storage, with the cache of range query answers computed from it and the
/// gate its queries pass.
pub struct LocalStore {
    storage: Arc<Storage>,
    cache: Arc<ResultCache>,
    gate: Arc<QueryGate>,
}

impl LocalStore {
    /// The embedded storage, with a result cache set up by `opts` that the storage tells
    /// of changes, and queries admitted by `gate`.
    pub fn new(
        storage: Arc<Storage>,
        opts: CacheOptions,
        gate: Arc<QueryGate>,
        registry: &prometheus::Registry,
    ) -> Result<LocalStore, prometheus::Error> {
        let cache = ResultCache::new(opts, registry)?;
        storage.observe(cache.clone());
        Ok(LocalStore {
            storage,
            cache,
            gate,
        })
    }

    fn engine(&self, limits: QueryLimits, lane: Lane) -> Engine<'_, Storage> {
        Engine::new(self.storage.as_ref(), limits).gated(self.gate.clone(), lane)
    }
}

fn json<T: serde::Serialize>(v: T) -> Result<Json, QueryError> {
    serde_json::to_value(v).map_err(|e| QueryError::Internal(e.to_string()))
}

fn truncated<T>(mut v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    v.truncate(limit.unwrap_or(usize::MAX));
    v
}

impl SeriesStore for LocalStore {
    fn instant<'a>(
        &'a self,
        query: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(async move {
            let expr = crate::query::parse_with(query, &limits.text)?;
            self.engine(limits, Lane::Client).instant(&expr, t).await
        })
    }

    fn instant_expr<'a>(
        &'a self,
        expr: &'a Expr,
        _text: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(async move { self.engine(limits, Lane::Rules).instant(expr, t).await })
    }

    fn range<'a>(
        &'a self,
        query: &'a str,
        (start, end, step): (i64, i64, i64),
        limits: QueryLimits,
        nocache: bool,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(async move {
            let expr = crate::query::parse_with(query, &limits.text)?;
            let engine = self.engine(limits, Lane::Client);
            self.cache
                .range(&engine, &expr, query, start, end, step, nocache)
                .await
        })
    }

    fn write_series<'a>(
        &'a self,
        series: &'a [Series],
    ) -> StoreFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move { Ok(self.storage.write_series(series).await?.appended) })
    }

    fn count_new_series(&self, req: &WriteRequest) -> u64 {
        self.storage.count_new_series(req)
    }

    fn write<'a>(
        &'a self,
        body: Vec<u8>,
        req: &'a WriteRequest,
    ) -> StoreFuture<'a, Result<AppendOutcome, BackendError>> {
        Box::pin(async move { Ok(self.storage.write(body, req).await?) })
    }

    fn label_names<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>> {
        let names = self.storage.label_names(q.matchers, q.start, q.end);
        Box::pin(async move { json(truncated(names, q.limit)) })
    }

    fn series<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>> {
        let sets = truncated(self.storage.series(q.matchers, q.start, q.end), q.limit);
        let maps: Vec<std::collections::BTreeMap<&str, &str>> = sets
            .iter()
            .map(|l| {
                l.iter()
                    .map(|x| (x.name.as_str(), x.value.as_str()))
                    .collect()
            })
            .collect();
        let answer = json(maps);
        Box::pin(async move { answer })
    }

    fn label_values<'a>(
        &'a self,
        name: &'a str,
        q: Lookup<'a>,
    ) -> StoreFuture<'a, Result<Json, QueryError>> {
        let values = self.storage.label_values(name, q.matchers, q.start, q.end);
        Box::pin(async move { json(truncated(values, q.limit)) })
    }

    fn metadata<'a>(
        &'a self,
        metric: Option<&'a str>,
        limit: Option<usize>,
        per_metric: Option<usize>,
        _params: &'a [(String, String)],
    ) -> StoreFuture<'a, Result<Json, QueryError>> {
        let answer = json(self.storage.metadata().get(metric, limit, per_metric));
        Box::pin(async move { answer })
    }

    fn status(&self) -> Json {
        json(self.storage.status()).unwrap_or(Json::Null)
    }

    fn ready(&self) -> StoreFuture<'_, Result<(), String>> {
        let problem = self.storage.status().last_error;
        Box::pin(async move {
            match problem {
                Some(e) => Err(format!("storage: {e}")),
                None => Ok(()),
            }
        })
    }

    fn compact(&self) -> StoreFuture<'_, Result<u64, QueryError>> {
        Box::pin(async move {
            self.storage
                .flush_and_compact()
                .await
                .map_err(|e| QueryError::Internal(e.to_string()))
        })
    }

    fn maintenance(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(self.storage.clone().run_maintenance(shutdown)))
    }

    fn stop_queries(&self) {
        self.gate.stop();
    }
}

/// Forwarded through the remote's Prometheus API, within the query's time limit.
impl SeriesStore for Remote {
    fn instant<'a>(
        &'a self,
        query: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(timed(limits, Remote::instant(self, query, t)))
    }

    fn range<'a>(
        &'a self,
        query: &'a str,
        (start, end, step): (i64, i64, i64),
        limits: QueryLimits,
        _nocache: bool,
    ) -> StoreFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(timed(limits, Remote::range(self, query, start, end, step)))
    }

    fn write_series<'a>(
        &'a self,
        series: &'a [Series],
    ) -> StoreFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let mut req = WriteRequest::from_series(series);
            canonicalize(&mut req);
            self.forward(remote_write::encode(&req)).await?;
            Ok(series.iter().map(|s| s.samples.len() as u64).sum())
        })
    }

    fn count_new_series(&self, _req: &WriteRequest) -> u64 {
        // The remote keeps the series and enforces its own series limits.
        0
    }

    fn write<'a>(
        &'a self,
        body: Vec<u8>,
        req: &'a WriteRequest,
    ) -> StoreFuture<'a, Result<AppendOutcome, BackendError>> {
        Box::pin(async move {
            self.forward(body).await?;
            Ok(AppendOutcome {
                appended: req.timeseries.iter().map(|t| t.samples.len() as u64).sum(),
                ..AppendOutcome::default()
            })
        })
    }

    fn label_names<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>> {
        Box::pin(self.api("/api/v1/labels", q.params))
    }

    fn series<'a>(&'a self, q: Lookup<'a>) -> StoreFuture<'a, Result<Json, QueryError>> {
        Box::pin(self.api("/api/v1/series", q.params))
    }

    fn label_values<'a>(
        &'a self,
        name: &'a str,
        q: Lookup<'a>,
    ) -> StoreFuture<'a, Result<Json, QueryError>> {
        Box::pin(async move {
            self.api(&format!("/api/v1/label/{name}/values"), q.params)
                .await
        })
    }

    fn metadata<'a>(
        &'a self,
        _metric: Option<&'a str>,
        _limit: Option<usize>,
        _per_metric: Option<usize>,
        params: &'a [(String, String)],
    ) -> StoreFuture<'a, Result<Json, QueryError>> {
        Box::pin(self.api("/api/v1/metadata", params))
    }

    fn status(&self) -> Json {
        serde_json::json!({ "mode": "remote" })
    }

    fn ready(&self) -> StoreFuture<'_, Result<(), String>> {
        Box::pin(async move { Remote::ready(self).await.map_err(|e| e.to_string()) })
    }

    fn compact(&self) -> StoreFuture<'_, Result<u64, QueryError>> {
        Box::pin(async {
            Err(QueryError::BadData(
                "compaction is the remote storage's own in remote storage mode".to_owned(),
            ))
        })
    }

    fn maintenance(
        &self,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn stop_queries(&self) {}
}

async fn timed<T>(
    limits: QueryLimits,
    f: impl Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    tokio::time::timeout(limits.timeout, f)
        .await
        .map_err(|_| QueryError::Timeout("query execution"))?
}

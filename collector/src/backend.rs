//! Where series live: the embedded storage, or a remote TSDB (remote storage mode). The
//! rest of the collector (ingest, the HTTP API, and whatever evaluates queries) goes
//! through [`Backend`] and works the same in both modes.

use std::sync::Arc;

use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::Series;

use crate::query::cache::{CacheOptions, ResultCache};
use crate::query::gate::{Lane, QueryGate};
use crate::query::{Engine, QueryError, QueryLimits, QueryResult};
use crate::remote::{ForwardError, Remote};
use crate::storage::{Storage, StorageError, canonicalize};

/// Why series produced inside the collector (scrapes) were not stored.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The embedded storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The remote storage did not take them.
    #[error(transparent)]
    Remote(#[from] ForwardError),
}

/// The series store.
#[derive(Clone)]
pub enum Backend {
    /// Embedded storage, with the cache of range query answers computed from it and the
    /// gate its queries pass.
    Local(Arc<Storage>, Arc<ResultCache>, Arc<QueryGate>),
    /// A remote Prometheus-compatible TSDB.
    Remote(Arc<Remote>),
}

impl Backend {
    /// The embedded storage, with a result cache set up by `opts` that the storage tells
    /// of changes, and queries admitted by `gate`.
    pub fn local(
        storage: Arc<Storage>,
        opts: CacheOptions,
        gate: Arc<QueryGate>,
        registry: &prometheus::Registry,
    ) -> Result<Backend, prometheus::Error> {
        let cache = ResultCache::new(opts, registry)?;
        storage.observe(cache.clone());
        Ok(Backend::Local(storage, cache, gate))
    }

    /// The embedded storage, if that is the mode.
    pub fn storage(&self) -> Option<&Arc<Storage>> {
        match self {
            Backend::Local(s, _, _) => Some(s),
            Backend::Remote(_) => None,
        }
    }

    /// The gate of the embedded storage's queries, if that is the mode.
    pub fn gate(&self) -> Option<&Arc<QueryGate>> {
        match self {
            Backend::Local(_, _, g) => Some(g),
            Backend::Remote(_) => None,
        }
    }

    /// Evaluates `query` at `t` (ms).
    pub async fn instant(
        &self,
        query: &str,
        t: i64,
        limits: QueryLimits,
    ) -> Result<QueryResult, QueryError> {
        match self {
            Backend::Local(s, _, gate) => {
                let expr = crate::query::parse_with(query, &limits.text)?;
                Engine::new(s.as_ref(), limits)
                    .gated(gate.clone(), Lane::Client)
                    .instant(&expr, t)
                    .await
            }
            Backend::Remote(r) => timed(limits, r.instant(query, t)).await,
        }
    }

    /// Evaluates a parsed expression (`text` is the same, for remote mode) at `t` (ms), for
    /// rule evaluation: it waits for no client query.
    pub async fn instant_expr(
        &self,
        expr: &promql_parser::parser::Expr,
        text: &str,
        t: i64,
        limits: QueryLimits,
    ) -> Result<QueryResult, QueryError> {
        match self {
            Backend::Local(s, _, gate) => {
                Engine::new(s.as_ref(), limits)
                    .gated(gate.clone(), Lane::Rules)
                    .instant(expr, t)
                    .await
            }
            Backend::Remote(r) => timed(limits, r.instant(text, t)).await,
        }
    }

    /// Evaluates `query` at every `step` from `start` to `end` (ms), reusing kept answers
    /// unless `nocache`.
    pub async fn range(
        &self,
        query: &str,
        (start, end, step): (i64, i64, i64),
        limits: QueryLimits,
        nocache: bool,
    ) -> Result<QueryResult, QueryError> {
        match self {
            Backend::Local(s, cache, gate) => {
                let expr = crate::query::parse_with(query, &limits.text)?;
                let engine = Engine::new(s.as_ref(), limits).gated(gate.clone(), Lane::Client);
                cache
                    .range(&engine, &expr, query, start, end, step, nocache)
                    .await
            }
            Backend::Remote(r) => timed(limits, r.range(query, start, end, step)).await,
        }
    }

    /// Stores series produced inside the collector.
    pub async fn write_series(&self, series: &[Series]) -> Result<u64, BackendError> {
        match self {
            Backend::Local(s, _, _) => Ok(s.write_series(series).await?.appended),
            Backend::Remote(r) => {
                let mut req = WriteRequest::from_series(series);
                canonicalize(&mut req);
                r.forward(remote_write::encode(&req)).await?;
                Ok(series.iter().map(|s| s.samples.len() as u64).sum())
            }
        }
    }
}

async fn timed<T>(
    limits: QueryLimits,
    f: impl Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    tokio::time::timeout(limits.timeout, f)
        .await
        .map_err(|_| QueryError::Timeout("query execution"))?
}

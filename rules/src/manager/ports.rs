//! The four narrow interfaces the manager reaches the world through.

use nunchi_model::{Alert, ScaleRequest, Series};
use nunchi_promql::{QueryError, QueryLimits, QueryResult};
use promql_parser::parser::Expr;

/// How rules read: an instant query of a parsed expression (`text` is the same, for a
/// store that takes text) at a time, in ms (Prometheus' `QueryFunc`).
pub trait Queryable: Send + Sync + 'static {
    /// Evaluates `expr` at `t` within `limits`.
    fn instant<'a>(
        &'a self,
        expr: &'a Expr,
        text: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> futures_util::future::BoxFuture<'a, Result<QueryResult, QueryError>>;
}

/// Where recorded series and `ALERTS` go (Prometheus' `Appendable`).
pub trait Appendable: Send + Sync + 'static {
    /// Stores `series`; the error says why not.
    fn append<'a>(
        &'a self,
        series: &'a [Series],
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>>;
}

/// Where alerts and scale requests go (implemented over `nunchi_alerts` by the collector).
pub trait Notify: Send + Sync + 'static {
    /// Alerts from one evaluation: firing ones and resolutions.
    fn send(&self, alerts: Vec<Alert>);
    /// A scale request from a scaling rule.
    fn scale(&self, request: ScaleRequest, alert: Option<Alert>);
}

/// Where alert state is saved between runs.
pub trait StateStore: Send + Sync + 'static {
    /// Every saved rule state (key, JSON).
    fn load(&self) -> futures_util::future::BoxFuture<'_, Vec<(String, String)>>;
    /// Saves (or with `None` deletes) one rule's state.
    fn save(&self, key: String, body: Option<String>) -> futures_util::future::BoxFuture<'_, ()>;
}

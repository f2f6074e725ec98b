//! Wiring of rules to storage, the query engine and delivery: [`Alerting`] holds the rule
//! [`Manager`] and the [`Alertmanager`] and implements the manager's narrow interfaces:
//! queries and appends over the [`crate::store::SeriesStore`], and over the `nunchi-alerts` crate alerts and
//! scale requests to the dispatcher and alert state to the delivery store. Reload re-reads the rule files and the delivery configuration; either
//! one broken leaves both as they were.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use nunchi_alerts::{Alertmanager, Config, DeliveryOptions, Store};
use nunchi_model::{Alert, ScaleRequest};

use crate::query::{QueryError, QueryLimits, QueryResult};
use crate::rules::manager::{Appendable, Manager, Notify, Queryable, ReloadError, StateStore};
use crate::store::SharedStore;

/// Why alerting could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// The delivery configuration is broken.
    #[error("alerting config: {0}")]
    Config(#[from] nunchi_alerts::ConfigError),
    /// A rule file is broken.
    #[error("rules: {0}")]
    Rules(#[from] ReloadError),
    /// The delivery store failed.
    #[error("alert store: {0}")]
    Store(#[from] nunchi_alerts::StoreError),
}

/// Rules and delivery, together.
pub struct Alerting {
    /// The rule manager.
    pub manager: Arc<Manager>,
    /// The dispatcher.
    pub am: Alertmanager,
    /// The delivery configuration file, if any.
    pub config_path: Option<PathBuf>,
}

/// Rule queries and writes over the backend (rule queries take no client query slot).
struct RulesBackend(SharedStore);

impl Queryable for RulesBackend {
    fn instant<'a>(
        &'a self,
        expr: &'a promql_parser::parser::Expr,
        text: &'a str,
        t: i64,
        limits: QueryLimits,
    ) -> BoxFuture<'a, Result<QueryResult, QueryError>> {
        Box::pin(self.0.instant_expr(expr, text, t, limits))
    }
}

impl Appendable for RulesBackend {
    fn append<'a>(
        &'a self,
        series: &'a [nunchi_model::Series],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .write_series(series)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

struct ToAlertmanager(Alertmanager);

impl Notify for ToAlertmanager {
    fn send(&self, alerts: Vec<Alert>) {
        self.0.put(&alerts);
    }

    fn scale(&self, request: ScaleRequest, alert: Option<Alert>) {
        let am = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = am.scale(request, alert.as_ref()).await {
                tracing::error!(error = %e, "scale request not sent");
            }
        });
    }
}

struct RuleStates(Store);

impl StateStore for RuleStates {
    fn load(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            self.0.rule_states().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read saved alert state");
                Vec::new()
            })
        })
    }

    fn save(&self, key: String, body: Option<String>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.0.set_rule_state(&key, body.as_deref()).await {
                tracing::error!(error = %e, rule = %key, "cannot save alert state");
            }
        })
    }
}

/// Reads the delivery configuration (`None`: send nothing), logging what it warns of.
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, AlertingError> {
    let c = match path {
        Some(p) => Config::load(p)?,
        None => Config::empty(),
    };
    for w in &c.warnings {
        tracing::warn!(warning = %w, "alerting configuration");
    }
    Ok(c)
}

impl Alerting {
    /// Starts delivery and the rule manager, loading every file; fails on a broken one.
    pub async fn start(
        backend: SharedStore,
        database_url: &str,
        config_path: Option<PathBuf>,
        opts: crate::rules::manager::ManagerOptions,
        delivery: DeliveryOptions,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Alerting>, AlertingError> {
        let config = load_config(config_path.as_ref())?;
        let store = Store::connect(database_url).await?;
        let am =
            Alertmanager::start(config, store.clone(), opts.external_url.clone(), delivery).await?;
        tokio::spawn(am.clone().run(shutdown.clone()));
        let backend = Arc::new(RulesBackend(backend));
        let manager = Manager::new(
            backend.clone(),
            backend,
            Arc::new(ToAlertmanager(am.clone())),
            Some(Arc::new(RuleStates(store))),
            opts,
            shutdown,
        );
        manager.reload().await?;
        Ok(Arc::new(Alerting {
            manager,
            am,
            config_path,
        }))
    }

    /// Re-reads the delivery configuration and the rule files. If either is broken,
    /// nothing changes and the error says which file and why.
    pub async fn reload(&self) -> Result<usize, AlertingError> {
        let config = load_config(self.config_path.as_ref())?;
        let n = self.manager.reload().await?;
        self.am.reload(config);
        Ok(n)
    }
}

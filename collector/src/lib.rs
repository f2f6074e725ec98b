//! The nunchi collector: receives remote_write (and scrapes targets that cannot push),
//! stores series in an embedded time-series store, and answers PromQL on the Prometheus
//! HTTP API.
//!
//! Data path, by module: [`ingest`] (remote_write, scrape) → [`storage`] (the `nunchi-tsdb`
//! crate: write-ahead log, head, persisted chunks) → [`query`] (PromQL) → [`api`] (HTTP). [`run`] wires them.
//! In remote storage mode [`remote`] takes the place of [`storage`] and [`query`]: the
//! [`store::SeriesStore`] hides which is in use. [`rules`] evaluates rule files over it and
//! [`alerting`] hands their alerts to delivery (`nunchi-alerts`).

pub mod alerting;
pub mod api;
pub mod config;
pub mod ingest;
pub use nunchi_promql as query;
pub mod remote;
pub mod store;
pub use nunchi_rules as rules;
pub use nunchi_tsdb as storage;
pub mod web;

use std::sync::Arc;

use prometheus::Registry;
use tokio::sync::watch;

use crate::api::AppState;
use crate::config::CollectorConfig;
use crate::ingest::remote_write::Ingest;
use crate::query::QueryLimits;
use crate::storage::{Storage, StorageError, StorageOptions};
use crate::store::{LocalStore, SharedStore};

/// Errors that stop the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Self-metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client for scraping could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Rules or the alerting configuration are broken.
    #[error(transparent)]
    Alerting(#[from] alerting::AlertingError),
}

/// The database for alert state and the delivery log: `database_url`, or a SQLite file
/// in the data directory (the series database's file; in remote storage mode, which keeps
/// no series, a file of its own, `alerts.db`).
pub fn database_url(c: &CollectorConfig) -> String {
    let file = if c.remote.is_some() {
        "alerts.db"
    } else {
        "nunchi.db"
    };
    c.database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", c.data_dir.join(file).display()))
}

/// Storage options from the configuration.
pub fn storage_options(c: &CollectorConfig) -> StorageOptions {
    StorageOptions {
        data_dir: c.data_dir.clone(),
        database_url: c.database_url.clone(),
        retention: c.retention,
        out_of_order_window: c.out_of_order_window,
        flush_interval: c.flush_interval,
        block_span: c.block_span,
        rollup_resolution: c.rollup_resolution,
        wal_sync: c.wal_sync,
        block_cache_bytes: c.query.block_cache_size.as_u64(),
    }
}

/// Query limits from the configuration.
pub fn query_limits(c: &CollectorConfig) -> QueryLimits {
    QueryLimits {
        max_samples: c.query.max_samples,
        timeout: c.query.timeout,
        lookback: c.query.lookback_delta,
        text: query::TextLimits {
            max_length: c.query.max_length,
            max_depth: c.query.max_depth,
        },
        ..QueryLimits::default()
    }
}

/// How alerts are sent: `notification_queue_capacity`, the overflow counted in `registry`.
fn delivery_options(
    config: &CollectorConfig,
    registry: &Registry,
) -> Result<nunchi_alerts::DeliveryOptions, prometheus::Error> {
    let options = nunchi_alerts::DeliveryOptions {
        queue_capacity: config.notification_queue_capacity,
        ..Default::default()
    };
    registry.register(Box::new(options.overflow.clone()))?;
    Ok(options)
}

/// Runs the collector until `shutdown` turns true, then flushes memory to the database.
pub async fn run(
    config: CollectorConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), CollectorError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = Registry::new_custom(None, None)?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    web::register_metrics(&registry)?;
    let backend = match &config.remote {
        Some(r) => remote::Remote::new(r.clone(), &registry)? as SharedStore,
        None => Arc::new(LocalStore::new(
            Storage::open(storage_options(&config), &registry).await?,
            query::cache::CacheOptions {
                max_bytes: config.query.result_cache_size.as_u64(),
                fresh_window: config.query.result_cache_fresh_window,
            },
            query::gate::QueryGate::new(config.query.max_concurrency),
            &registry,
        )?),
    };
    let ingest = Ingest::new(config.limits.clone(), config.tokens.clone(), &registry)?;
    let limits = query_limits(&config);
    let external_url = config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    std::fs::create_dir_all(&config.data_dir).map_err(|source| {
        CollectorError::Storage(StorageError::DataDir {
            path: config.data_dir.clone(),
            source,
        })
    })?;
    let alerting = alerting::Alerting::start(
        backend.clone(),
        &database_url(&config),
        config.alerting_config.clone(),
        rules::manager::ManagerOptions {
            files: config.rules.clone(),
            default_interval: config.evaluation_interval,
            external_url,
            limits,
            external_labels: Default::default(),
        },
        delivery_options(&config, &registry)?,
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(reload_on_sighup(alerting.clone()));
    let state = Arc::new(AppState {
        backend: backend.clone(),
        ingest,
        limits,
        registry,
        alerting: Some(alerting),
    });
    let maintenance = backend.maintenance(shutdown.clone()).map(tokio::spawn);
    let client = reqwest::Client::builder()
        .user_agent(concat!("nunchi-collector/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let scraping = tokio::spawn(ingest::scrape::run(
        backend.clone(),
        client,
        config.scrape.clone(),
        config.scrape_interval,
        config.scrape_timeout,
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CollectorError::Listen {
            addr: config.listen,
            source,
        })?;
    match &config.remote {
        Some(r) => tracing::info!(
            listen = %config.listen,
            remote_write = %r.write_url,
            remote_query = %r.query_url,
            "collector ready (remote storage mode)"
        ),
        None => tracing::info!(
            listen = %config.listen,
            data_dir = %config.data_dir.display(),
            "collector ready"
        ),
    }
    let app = web::app(api::app(state), web::assets_dir(&config));
    let mut stop = shutdown.clone();
    let store = backend.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
            // Running queries end at their next step, so the server drains at once.
            store.stop_queries();
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
    let _ = scraping.await;
    if let Some(m) = maintenance {
        let _ = m.await;
    }
    Ok(())
}

async fn reload_on_sighup(alerting: Arc<alerting::Alerting>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading rules and alerting config");
        if let Err(e) = alerting.reload().await {
            tracing::error!(error = %e, "reload failed; the previous rules and config stay");
        }
    }
}

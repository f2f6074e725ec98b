//! The nunchi collector: receives remote_write (and scrapes targets that cannot push),
//! stores series in an embedded time-series store, and answers PromQL on the Prometheus
//! HTTP API.
//!
//! Data path, by module: [`ingest`] (remote_write, scrape) → [`storage`] (write-ahead log,
//! head, persisted chunks) → [`query`] (PromQL) → [`api`] (HTTP). [`run`] wires them.

pub mod api;
pub mod config;
pub mod ingest;
pub mod query;
pub mod storage;

use std::sync::Arc;

use prometheus::Registry;
use tokio::sync::watch;

use crate::api::AppState;
use crate::config::CollectorConfig;
use crate::ingest::remote_write::Ingest;
use crate::query::QueryLimits;
use crate::storage::{Storage, StorageError, StorageOptions};

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
    }
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
    let storage = Storage::open(storage_options(&config), &registry).await?;
    let ingest = Ingest::new(config.limits.clone(), config.tokens.clone(), &registry)?;
    let state = Arc::new(AppState {
        storage: storage.clone(),
        ingest,
        limits: QueryLimits {
            max_samples: config.query.max_samples,
            timeout: config.query.timeout,
            lookback: config.query.lookback_delta,
            ..QueryLimits::default()
        },
        registry,
    });
    let maintenance = tokio::spawn(storage.clone().run_maintenance(shutdown.clone()));
    let client = reqwest::Client::builder()
        .user_agent(concat!("nunchi-collector/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let scraping = tokio::spawn(ingest::scrape::run(
        storage.clone(),
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
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), "collector ready");
    let app = api::app(state);
    let mut stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
    let _ = scraping.await;
    let _ = maintenance.await;
    Ok(())
}

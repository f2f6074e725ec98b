//! `nunchi-agent`: one per host. Every interval it reads host metrics (under
//! node_exporter's names), scrapes local Prometheus endpoints, and pushes the lot with
//! Prometheus remote_write to each configured receiver, buffering on disk while a receiver
//! is unreachable. It serves its own `/metrics` so a plain Prometheus can scrape it too.
//!
//! Data path: [`host`] and [`scrape`] produce series → [`families`] and the agent's labels
//! → one encoded [`push::Batch`] per cycle → one [`push::Endpoint`] task per receiver,
//! each with its own `nunchi_buffer::DiskBuffer`.

pub mod config;
pub mod families;
pub mod host;
pub mod push;
pub mod scrape;
pub mod self_metrics;
pub mod server;
pub mod staleness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::{Labels, sample_count};
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::host::HostCollector;
use crate::push::{Batch, Endpoint, EndpointHandle, PushSettings};
use crate::scrape::Scraper;
use crate::self_metrics::SelfMetrics;
use crate::staleness::StalenessTracker;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The token file could not be read.
    #[error("cannot read token_file {path}: {source}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A buffer directory could not be opened.
    #[error(transparent)]
    Buffer(#[from] nunchi_buffer::BufferError),
    /// The `/metrics` address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Metric registration failed (a programming error, reported rather than panicking).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The labels every series gets: `host` plus the configured extra labels.
pub fn agent_labels(config: &AgentConfig) -> Labels {
    let host = config
        .hostname
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let mut l = Labels::from_pairs(config.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l.insert("host", host);
    l
}

/// Runs the agent until `shutdown` turns true, then flushes undelivered batches to the
/// buffers and returns.
pub async fn run(
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    // Several crates may each enable a rustls provider; pick ring explicitly. An error
    // only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let registry = prometheus::Registry::new();
    let host = std::sync::Arc::new(HostCollector::new());
    registry.register(Box::new(HostCollectorRef(host.clone())))?;
    let metrics = SelfMetrics::register(&registry)?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;

    let token = match (&config.token, &config.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| AgentError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let push_client = reqwest::Client::builder()
        .timeout(config.push_timeout)
        .user_agent(concat!("nunchi-agent/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let settings = PushSettings {
        replay: config.replay,
        token,
        min_backoff: config.retry_min_backoff,
        max_backoff: config.retry_max_backoff,
    };
    let mut handles: Vec<EndpointHandle> = Vec::new();
    let mut tasks = Vec::new();
    for url in &config.push_url {
        let dir = config.buffer_dir.join(push::buffer_subdir(url));
        let (buffer, recovered) =
            nunchi_buffer::DiskBuffer::open(&dir, config.buffer_max_size.as_u64())?;
        if recovered.records > 0 {
            tracing::info!(url = %push::display_url(url), samples = recovered.samples, records = recovered.records,
                "found undelivered samples in the buffer; they will be replayed");
        }
        let (ep, handle) = Endpoint::new(
            url.clone(),
            push_client.clone(),
            settings.clone(),
            buffer,
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(ep.run()));
        handles.push(handle);
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, push_urls = config.push_url.len(), scrape_targets = config.scrape.len(),
        interval = ?config.interval, "nunchi-agent started");
    let app = server::app(registry.clone());
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = server_shutdown.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "/metrics server failed");
        }
    });

    let scrape_client = reqwest::Client::builder()
        .user_agent(concat!("nunchi-agent/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut scraper = Scraper::new(
        scrape_client,
        &config.scrape,
        config.effective_scrape_timeout(),
    );
    let labels = agent_labels(&config);
    let mut own_staleness = StalenessTracker::default();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut series = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let started = std::time::Instant::now();
        let ts = now_ms();
        let failures = host.refresh();
        metrics.host_source_failures.inc_by(failures as u64);
        series.clear();
        families::to_series(&registry.gather(), &labels, ts, &mut series);
        let own = series.len();
        let mut markers = Vec::new();
        own_staleness.update(&series[..own], ts, &mut markers);
        series.append(&mut markers);
        scraper.scrape_all(&labels, ts, &mut series).await;
        let samples = sample_count(&series) as u32;
        metrics.samples_collected.inc_by(u64::from(samples));
        if !handles.is_empty() {
            let body =
                bytes::Bytes::from(remote_write::encode(&WriteRequest::from_series(&series)));
            for h in &handles {
                h.submit(Batch {
                    body: body.clone(),
                    samples,
                });
            }
        }
        metrics
            .collection_duration
            .observe(started.elapsed().as_secs_f64());
    }

    tracing::info!("shutting down: flushing undelivered samples to the buffer");
    drop(handles);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let _ = server.await;
    Ok(())
}

/// Registers a shared [`HostCollector`] (the registry takes ownership of a box).
struct HostCollectorRef(std::sync::Arc<HostCollector>);

impl prometheus::core::Collector for HostCollectorRef {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

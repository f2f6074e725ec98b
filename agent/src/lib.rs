//! `nunchi-agent`: one per host. Every interval it reads host metrics (under
//! node_exporter's names), scrapes local Prometheus endpoints, and pushes the lot with
//! Prometheus remote_write to each configured receiver, buffering on disk while a receiver
//! is unreachable. It serves its own `/metrics` so a plain Prometheus can scrape it too.
//!
//! Data path: [`host`] and `nunchi_scrape` produce series → [`families`] and the agent's labels
//! → one encoded [`push::Batch`] per cycle → one [`push::Endpoint`] task per receiver,
//! each with its own `nunchi_buffer::DiskBuffer`.

pub mod config;
pub mod families;
pub mod host;
pub mod push;
pub mod self_metrics;
pub mod server;

use std::time::Duration;

use nunchi_codec::remote_write::{self, SeriesGroup};
use nunchi_model::{Labels, now_ms, sample_count};
use prometheus::core::Collector;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::host::HostCollector;
use crate::push::{Batch, Endpoint, EndpointHandle, PushSettings};
use crate::self_metrics::SelfMetrics;
use nunchi_scrape::Scraper;
use nunchi_scrape::StalenessTracker;

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
    /// The CA file could not be read or holds no usable certificate.
    #[error("cannot use ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
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

/// How often metric metadata (HELP and TYPE of every family) is pushed, as Prometheus does.
const METADATA_EVERY: Duration = Duration::from_secs(60);

/// How often the agent's `process_*` metrics are pushed.
const PROCESS_METRICS_EVERY: Duration = Duration::from_secs(10);

/// An error and its causes, outermost first, joined by ": " (HTTP client errors keep the
/// useful part, such as "invalid peer certificate: UnknownIssuer", in their sources).
pub(crate) use nunchi_scrape::error_chain;

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

/// The HTTP client for pushes and scrapes. When no configured URL uses `https`, TLS is set up with an
/// empty trust store instead of loading the system's certificates: nothing would use them,
/// and loading them costs start-up time and resident memory on every host.
fn http_client(config: &AgentConfig) -> Result<reqwest::Client, AgentError> {
    let builder =
        reqwest::Client::builder().user_agent(concat!("nunchi-agent/", env!("CARGO_PKG_VERSION")));
    let https = config
        .push_url
        .iter()
        .chain(config.scrape.iter().map(|t| &t.url))
        .any(|u| u.scheme() == "https");
    if https {
        let Some(path) = &config.ca_file else {
            return Ok(builder.build()?);
        };
        let ca_error = |reason: String| AgentError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate in the file".to_owned()));
        }
        return Ok(certs
            .into_iter()
            .fold(builder, reqwest::ClientBuilder::add_root_certificate)
            .build()?);
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(builder.tls_backend_preconfigured(tls).build()?)
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

    // The agent's own metrics; host metrics are kept apart so each cycle reads them once
    // and encodes them without conversion.
    let registry = prometheus::Registry::new();
    let host = std::sync::Arc::new(HostCollector::new());
    let metrics = SelfMetrics::register(&registry)?;
    // process_* figures (the agent's own CPU, memory, fds) change slowly and cost several
    // /proc reads; they are pushed every PROCESS_METRICS_EVERY and always on /metrics.
    let process_registry = prometheus::Registry::new();
    process_registry.register(Box::new(
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
    // One client for pushes and scrapes: TLS roots are loaded once.
    let client = http_client(&config)?;
    let settings = PushSettings {
        replay: config.replay,
        token,
        timeout: config.push_timeout,
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
            client.clone(),
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
    let app = server::app(
        vec![registry.clone(), process_registry.clone()],
        host.clone(),
    );
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = server_shutdown.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "/metrics server failed");
        }
    });

    let mut scraper = Scraper::new(client, &config.scrape, config.effective_scrape_timeout());
    let labels = agent_labels(&config);
    let mut host_staleness = StalenessTracker::default();
    let mut own_staleness = StalenessTracker::default();
    let process_every =
        (PROCESS_METRICS_EVERY.as_millis() / config.interval.as_millis().max(1)).max(1) as u64;
    let metadata_every =
        (METADATA_EVERY.as_millis() / config.interval.as_millis().max(1)).max(1) as u64;
    let mut cycle: u64 = 0;
    let mut process = Vec::new();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let no_labels = Labels::new();
    let (mut own, mut scraped, mut markers, mut scratch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let started = std::time::Instant::now();
        let ts = now_ms();
        let failures = host.refresh(ts);
        metrics.host_source_failures.inc_by(failures as u64);
        own.clear();
        families::to_series(&registry.gather(), &no_labels, ts, &mut own);
        process.clear();
        if cycle.is_multiple_of(process_every) {
            families::to_series(&process_registry.gather(), &no_labels, ts, &mut process);
        }
        cycle += 1;
        scraped.clear();
        scraper.scrape_all(&labels, ts, &mut scraped).await;
        let Some(host_series) = host.snapshot() else {
            continue;
        };
        markers.clear();
        host_staleness.update(&host_series, ts, &mut markers);
        own_staleness.update(&own, ts, &mut markers);
        let samples = (host_series.len()
            + sample_count(&own)
            + process.len()
            + sample_count(&scraped)
            + markers.len()) as u32;
        metrics.samples_collected.inc_by(u64::from(samples));
        if !handles.is_empty() {
            let groups = [
                SeriesGroup {
                    series: &host_series,
                    extra: &labels,
                },
                SeriesGroup {
                    series: &own,
                    extra: &labels,
                },
                SeriesGroup {
                    series: &process,
                    extra: &labels,
                },
                SeriesGroup {
                    series: &markers,
                    extra: &labels,
                },
                SeriesGroup {
                    series: &scraped,
                    extra: &no_labels,
                },
            ];
            let body = bytes::Bytes::from(remote_write::encode_series(&groups, &mut scratch));
            for h in &handles {
                h.submit(Batch {
                    body: body.clone(),
                    samples,
                });
            }
        }
        drop(host_series);
        if !handles.is_empty() && (cycle - 1).is_multiple_of(metadata_every) {
            let mut metadata = families::metadata(&host.collect());
            metadata.extend(families::metadata(&registry.gather()));
            metadata.extend(families::metadata(&process_registry.gather()));
            metadata.extend(families::scraped_metadata(scraper.families()));
            let req = remote_write::WriteRequest {
                timeseries: Vec::new(),
                metadata,
            };
            let body = bytes::Bytes::from(remote_write::encode(&req));
            for h in &handles {
                h.submit(Batch {
                    body: body.clone(),
                    samples: 0,
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

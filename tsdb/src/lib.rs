//! Embedded time-series storage: write-ahead log → head → persisted chunks.
//!
//! A write is logged ([`wal`]) and then appended to the [`head`]; it is acknowledged only
//! after both. Every `flush_interval` (or earlier, once the head holds 120 samples per
//! series) the head is cut and its samples persisted as level-0 chunks ([`persist`]); once that transaction commits, the WAL segments it covered are
//! deleted. Compaction merges level-0 chunks into one `pco` block per series and span
//! window ([`block`]); once a window has closed, its block also gets a rollup for
//! long-range queries (until then they summarise its raw samples). Retention deletes
//! chunks older than the retention period and then series with nothing left.
//!
//! What is durable when: an acknowledged sample is in the WAL (written, and `fdatasync`ed
//! when `wal_sync` is on) until a committed flush holds it. A failed flush keeps its batch
//! in memory and its WAL segments on disk, and is retried before the next one.

pub mod block;
pub mod chunk;
pub mod head;
pub mod index;
pub mod metadata;
pub mod persist;
pub mod samples;
mod select;
pub mod wal;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::Labels;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use promql_parser::label::Matcher;

pub use block::RollupPoint;
pub use head::{AppendOutcome, FlushBatch, Head};
pub use index::SeriesRef;
pub use samples::{Block, Cadence, Samples};

use persist::{Persist, PersistError};
use wal::{Wal, WalError};

/// The head is flushed early once it holds this many samples per series on average
/// (Prometheus' chunk size).
const HEAD_SAMPLES_PER_SERIES: u64 = 120;

/// Storage failures, as seen by writers and readers.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The write-ahead log could not take the write.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The database failed.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The storage's metrics could not be registered.
    #[error("storage metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Told when stored data changes in a way a reader that kept an earlier answer must know
/// of (the range query result cache).
pub trait ChangeObserver: Send + Sync {
    /// A write stored samples, the oldest at `oldest_ms`. Called once they are readable.
    fn samples_written(&self, oldest_ms: i64);
    /// Retention deleted the samples before `before_ms`.
    fn deleted_before(&self, before_ms: i64);
}

/// How the storage is set up.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Directory for the WAL and the default SQLite file.
    pub data_dir: PathBuf,
    /// Database URL; `None` for `sqlite://<data_dir>/nunchi.db`.
    pub database_url: Option<String>,
    /// How long samples are kept.
    pub retention: Duration,
    /// How far behind a series' newest sample a sample may arrive and still be stored.
    pub out_of_order_window: Duration,
    /// How often the head is flushed to the database.
    pub flush_interval: Duration,
    /// Width of a compacted block.
    pub block_span: Duration,
    /// Bucket width of rollups.
    pub rollup_resolution: Duration,
    /// Whether each WAL write is `fdatasync`ed before it is acknowledged.
    pub wal_sync: bool,
    /// Memory for decoded compacted blocks (0: none kept).
    pub block_cache_bytes: u64,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Storage self-metrics.
#[derive(Clone)]
struct StorageMetrics {
    samples: IntCounterVec,
    series_created: IntCounter,
    head_series: IntGauge,
    head_samples: IntGauge,
    flushes: IntCounterVec,
    flushed_samples: IntCounter,
    compactions: IntCounterVec,
    wal_failures: IntCounter,
    retention_deleted_chunks: IntCounter,
    wal_replayed: IntCounter,
}

impl StorageMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = StorageMetrics {
            samples: IntCounterVec::new(
                Opts::new(
                    "nunchi_storage_samples_total",
                    "Samples offered to storage, by outcome: appended, duplicate (ignored), too_old and conflicting (refused).",
                ),
                &["outcome"],
            )?,
            series_created: IntCounter::new(
                "nunchi_storage_series_created_total",
                "Series created.",
            )?,
            head_series: IntGauge::new("nunchi_storage_series", "Series known to storage.")?,
            head_samples: IntGauge::new(
                "nunchi_storage_head_samples",
                "Samples in memory not yet flushed.",
            )?,
            flushes: IntCounterVec::new(
                Opts::new(
                    "nunchi_storage_flushes_total",
                    "Head flushes to the database, by result.",
                ),
                &["result"],
            )?,
            flushed_samples: IntCounter::new(
                "nunchi_storage_flushed_samples_total",
                "Samples written to the database by flushes.",
            )?,
            compactions: IntCounterVec::new(
                Opts::new(
                    "nunchi_storage_compactions_total",
                    "Compaction runs, by result.",
                ),
                &["result"],
            )?,
            wal_failures: IntCounter::new(
                "nunchi_storage_wal_failures_total",
                "Writes the write-ahead log could not take (answered 503).",
            )?,
            retention_deleted_chunks: IntCounter::new(
                "nunchi_storage_retention_deleted_chunks_total",
                "Chunks deleted by retention.",
            )?,
            wal_replayed: IntCounter::new(
                "nunchi_storage_wal_replayed_records_total",
                "Write-ahead log records replayed at start-up.",
            )?,
        };
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.series_created.clone()))?;
        registry.register(Box::new(m.head_series.clone()))?;
        registry.register(Box::new(m.head_samples.clone()))?;
        registry.register(Box::new(m.flushes.clone()))?;
        registry.register(Box::new(m.flushed_samples.clone()))?;
        registry.register(Box::new(m.compactions.clone()))?;
        registry.register(Box::new(m.wal_failures.clone()))?;
        registry.register(Box::new(m.retention_deleted_chunks.clone()))?;
        registry.register(Box::new(m.wal_replayed.clone()))?;
        Ok(m)
    }

    fn record(&self, o: &AppendOutcome) {
        for (outcome, n) in [
            ("appended", o.appended),
            ("duplicate", o.duplicates),
            ("too_old", o.too_old),
            ("conflicting", o.conflicting),
        ] {
            if n > 0 {
                self.samples.with_label_values(&[outcome]).inc_by(n);
            }
        }
        self.series_created.inc_by(o.new_series);
    }
}

/// One selected series.
#[derive(Debug, Clone)]
pub struct SelectedSeries {
    /// Its labels.
    pub labels: Labels,
    /// Raw samples in the range, sorted, one per timestamp.
    pub samples: Samples,
}

/// One selected series, summarised.
#[derive(Debug, Clone)]
pub struct SelectedRollup {
    /// Its labels.
    pub labels: Labels,
    /// Rollup points in the range, sorted.
    pub points: Vec<RollupPoint>,
}

/// Health as shown by the API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StorageStatus {
    /// Series known.
    pub series: usize,
    /// Samples in memory, not yet flushed.
    pub head_samples: u64,
    /// Flushed batches waiting to be written again after a failure.
    pub pending_flushes: usize,
    /// The last storage error, if the last flush or compaction failed.
    pub last_error: Option<String>,
}

/// Puts a request's labels in canonical form: sorted by name, empty values dropped.
pub fn canonicalize(req: &mut WriteRequest) {
    for ts in &mut req.timeseries {
        ts.labels.retain(|l| !l.value.is_empty());
        if !ts.labels.windows(2).all(|w| w[0].name < w[1].name) {
            ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
            ts.labels
                .dedup_by(|later, earlier| later.name == earlier.name);
        }
    }
}

/// The storage.
pub struct Storage {
    opts: StorageOptions,
    head: Head,
    wal: Wal,
    db: Persist,
    /// Writers hold it shared from WAL append to head append; a cut holds it exclusively,
    /// so every record in the WAL before a rotation is in the head before the cut.
    gate: tokio::sync::RwLock<()>,
    /// Held (shared) by a read across its database and head parts, and (exclusive) by a
    /// flush while it cuts the head and while it drops persisted samples from it: a read sees
    /// every sample in the head, the flushing batch or the database, never in none of them.
    reading: tokio::sync::RwLock<()>,
    /// Cut batches not yet written, with the WAL segment each covers, oldest first.
    pending: tokio::sync::Mutex<Vec<(u64, Arc<FlushBatch>)>>,
    last_error: Mutex<Option<String>>,
    metrics: StorageMetrics,
    metadata: metadata::MetadataStore,
    observer: std::sync::OnceLock<Arc<dyn ChangeObserver>>,
}

impl Storage {
    /// Opens the database, loads the series index, replays the WAL.
    pub async fn open(
        opts: StorageOptions,
        registry: &Registry,
    ) -> Result<Arc<Storage>, StorageError> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|source| StorageError::DataDir {
            path: opts.data_dir.clone(),
            source,
        })?;
        let url = opts.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                opts.data_dir.join("nunchi.db").display()
            )
        });
        let db = Persist::connect(&url, opts.block_cache_bytes).await?;
        let head = Head::new(ms(opts.out_of_order_window));
        let loaded = db.load_series().await?;
        let n = loaded.len();
        for (r, labels, min_t, max_t) in loaded {
            head.load_series(r, &labels, min_t, max_t);
        }
        let mut replayed_samples = 0u64;
        let metadata = metadata::MetadataStore::default();
        let (wal, replayed) = Wal::open(&opts.data_dir.join("wal"), opts.wal_sync, |payload| {
            match remote_write::decode(payload, usize::MAX) {
                Ok(mut req) => {
                    canonicalize(&mut req);
                    replayed_samples += head.append_replay(&req).appended;
                    metadata.record(&req.metadata);
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping an undecodable write-ahead log record")
                }
            }
        })?;
        tracing::info!(
            series = n,
            wal_records = replayed.records,
            samples = replayed_samples,
            truncated_bytes = replayed.truncated_bytes,
            "storage opened"
        );
        let metrics = StorageMetrics::new(registry)?;
        metrics.wal_replayed.inc_by(replayed.records);
        let s = Arc::new(Storage {
            opts,
            head,
            wal,
            db,
            gate: tokio::sync::RwLock::new(()),
            reading: tokio::sync::RwLock::new(()),
            pending: tokio::sync::Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            metrics,
            metadata,
            observer: std::sync::OnceLock::new(),
        });
        s.update_gauges();
        Ok(s)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StorageOptions {
        &self.opts
    }

    fn update_gauges(&self) {
        self.metrics.head_series.set(self.head.index().len() as i64);
        self.metrics
            .head_samples
            .set(self.head.sample_count() as i64);
    }

    /// Logs `body` (the request as received) and appends `req` (its decoded, canonical
    /// form). Returns once both are done: the samples are then durable.
    pub async fn write(
        &self,
        body: Vec<u8>,
        req: &WriteRequest,
    ) -> Result<AppendOutcome, StorageError> {
        let _g = self.gate.read().await;
        if let Err(e) = self.wal.append(body).await {
            self.metrics.wal_failures.inc();
            return Err(e.into());
        }
        let o = self.head.append(req);
        self.metadata.record(&req.metadata);
        self.metrics.record(&o);
        if o.appended > 0
            && let Some(obs) = self.observer.get()
            && let Some(oldest) = req
                .timeseries
                .iter()
                .filter_map(|t| t.samples.iter().map(|x| x.timestamp).min())
                .min()
        {
            obs.samples_written(oldest);
        }
        Ok(o)
    }

    /// Sets the one observer told of changes to stored data; `false` if one is set already.
    pub fn observe(&self, observer: Arc<dyn ChangeObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Metric metadata senders declared.
    pub fn metadata(&self) -> &metadata::MetadataStore {
        &self.metadata
    }

    /// How many of a request's series are new.
    pub fn count_new_series(&self, req: &WriteRequest) -> u64 {
        self.head.count_new(req)
    }

    /// Encodes and writes series produced inside the collector (scrapes, rules).
    pub async fn write_series(
        &self,
        series: &[nunchi_model::Series],
    ) -> Result<AppendOutcome, StorageError> {
        let mut req = WriteRequest::from_series(series);
        canonicalize(&mut req);
        let body = remote_write::encode(&req);
        self.write(body, &req).await
    }

    /// Flushes the head to the database (and retries earlier failed flushes first).
    pub async fn flush(&self) -> Result<u64, StorageError> {
        let mut pending = self.pending.lock().await;
        {
            let _g = self.gate.write().await;
            let seg = self.wal.rotate().await?;
            // A cut moves chunks from the series into the flushing batch one stripe at a
            // time; no read may look in between.
            let batch = {
                let _w = self.reading.write().await;
                self.head.cut()
            };
            pending.push((seg, batch));
        }
        let mut written = 0u64;
        let mut done_through = None;
        while let Some((seg, batch)) = pending.first().cloned() {
            match self.db.write_flush(&batch).await {
                Ok(n) => {
                    written += n;
                    {
                        let _w = self.reading.write().await;
                        self.head.release(&batch);
                    }
                    done_through = Some(seg);
                    pending.remove(0);
                }
                Err(e) => {
                    self.metrics.flushes.with_label_values(&["error"]).inc();
                    self.head.unpersist(&batch);
                    self.set_error(Some(format!("flush failed, will retry: {e}")));
                    tracing::error!(error = %e, pending = pending.len(), "head flush failed; samples stay in memory and in the write-ahead log");
                    if let Some(seg) = done_through {
                        self.wal.remove_through(seg).await?;
                    }
                    return Err(e.into());
                }
            }
        }
        if let Some(seg) = done_through {
            self.wal.remove_through(seg).await?;
        }
        self.metrics.flushes.with_label_values(&["ok"]).inc();
        self.metrics.flushed_samples.inc_by(written);
        self.set_error(None);
        self.update_gauges();
        Ok(written)
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Compacts level-0 chunks: all of them with `force`, otherwise those whose span
    /// window ended before the newest flush.
    pub async fn compact(&self, force: bool) -> Result<u64, StorageError> {
        let span = ms(self.opts.block_span).max(1);
        let cutoff = if force {
            i64::MAX
        } else {
            let now = now_ms() - ms(self.opts.flush_interval) - ms(self.opts.out_of_order_window);
            now.div_euclid(span) * span
        };
        let complete_before = now_ms() - ms(self.opts.out_of_order_window);
        match self
            .db
            .compact(
                cutoff,
                complete_before,
                span,
                ms(self.opts.rollup_resolution).max(1),
            )
            .await
        {
            Ok(n) => {
                self.metrics.compactions.with_label_values(&["ok"]).inc();
                Ok(n)
            }
            Err(e) => {
                self.metrics.compactions.with_label_values(&["error"]).inc();
                self.set_error(Some(format!("compaction failed: {e}")));
                tracing::error!(error = %e, "compaction failed; level-0 chunks stay as they are");
                Err(e.into())
            }
        }
    }

    /// Flushes, compacts everything and checkpoints the database file.
    pub async fn flush_and_compact(&self) -> Result<u64, StorageError> {
        self.flush().await?;
        let n = self.compact(true).await?;
        self.db.checkpoint().await?;
        Ok(n)
    }

    /// Deletes data older than the retention period.
    pub async fn apply_retention(&self) -> Result<(), StorageError> {
        let before = now_ms() - ms(self.opts.retention);
        let candidates = self.head.idle_since(before);
        let (chunks, gone) = self.db.apply_retention(before, &candidates).await?;
        self.head.remove(&gone);
        if (chunks > 0 || !gone.is_empty())
            && let Some(obs) = self.observer.get()
        {
            obs.deleted_before(before);
        }
        self.metrics.retention_deleted_chunks.inc_by(chunks);
        if chunks > 0 || !gone.is_empty() {
            tracing::info!(chunks, series = gone.len(), "retention deleted old data");
        }
        self.update_gauges();
        Ok(())
    }

    /// Current health.
    pub fn status(&self) -> StorageStatus {
        StorageStatus {
            series: self.head.index().len(),
            head_samples: self.head.sample_count(),
            pending_flushes: self.pending.try_lock().map_or(0, |p| p.len()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Runs flushes, compaction and retention until `shutdown` turns true, then flushes
    /// one last time.
    pub async fn run_maintenance(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut flush = tokio::time::interval(self.opts.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let maintenance_every = self.opts.flush_interval.max(Duration::from_secs(60)) * 4;
        let mut maintenance = tokio::time::interval(
            maintenance_every
                .min(self.opts.retention / 2)
                .max(Duration::from_secs(1)),
        );
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        maintenance.tick().await;
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Ok(n) = self.flush().await {
                        tracing::debug!(samples = n, "head flushed");
                    }
                }
                _ = check.tick() => {
                    // Writers replaying a backlog fill the head faster than the clock runs:
                    // flush early once it holds a full chunk's worth per series.
                    let series = self.head.index().len().max(1) as u64;
                    if self.head.sample_count() > HEAD_SAMPLES_PER_SERIES * series
                        && let Ok(n) = self.flush().await
                    {
                        tracing::debug!(samples = n, "head flushed early (full)");
                        flush.reset();
                    }
                }
                _ = maintenance.tick() => {
                    let _ = self.compact(false).await;
                    if let Err(e) = self.apply_retention().await {
                        tracing::error!(error = %e, "retention failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
            self.update_gauges();
        }
        match self.flush().await {
            Ok(n) => tracing::info!(samples = n, "final flush done"),
            Err(e) => {
                tracing::error!(error = %e, "final flush failed; the write-ahead log keeps the samples")
            }
        }
        self.db.close().await;
    }
}

pub use nunchi_model::now_ms;

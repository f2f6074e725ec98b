//! Delivery to one remote_write endpoint: live batches, the on-disk backlog, retries.
//!
//! Each push URL has its own [`Endpoint`] task, its own [`DiskBuffer`] directory and its
//! own retry state, so one receiver being down never delays another.
//!
//! Rules:
//! - A batch that fails with a network error, a timeout, HTTP 5xx or 429 is appended to
//!   the buffer; one that the receiver refuses with another 4xx is dropped and counted
//!   (`reason="rejected"`): retrying cannot fix it, and it must not block the queue.
//! - Backlog retries wait an exponential backoff (`retry_min_backoff` doubling up to
//!   `retry_max_backoff`) with jitter, reset by any success.
//! - `live-first`: every live batch is tried as soon as it is collected, so the present
//!   reaches the receiver within one interval of its return; the backlog drains behind,
//!   oldest first, between live batches.
//! - `in-order`: while a backlog exists, live batches join its tail, so each series
//!   arrives in time order.
//! - The backlog drains in requests of up to 100 buffered batches merged together (their
//!   protobuf bodies concatenated), so a long outage replays in few round trips. If the
//!   receiver refuses a merged request with a 4xx, its batches are resent one by one, so
//!   only the refused one is dropped.
//! - On shutdown, batches not yet delivered go to the buffer (fsynced) before the task
//!   ends. A batch whose request was under way is buffered too: if the receiver had in
//!   fact stored it, it is sent again after restart (remote_write receivers ignore exact
//!   duplicates).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nunchi_buffer::DiskBuffer;
use nunchi_codec::remote_write;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use url::Url;

use crate::config::ReplayOrder;
use crate::self_metrics::SelfMetrics;

/// Most buffered records merged into one backlog request.
const BACKLOG_BATCH_RECORDS: usize = 100;
/// Most compressed bytes of buffered records merged into one backlog request.
const BACKLOG_BATCH_BYTES: usize = 1 << 20;
/// Most decompressed bytes of one merged backlog request (receivers commonly cap bodies at
/// 32 MiB).
const BACKLOG_BATCH_RAW_BYTES: usize = 16 << 20;

/// One cycle's samples, encoded once as a remote_write body and shared by all endpoints.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Snappy-compressed `WriteRequest`.
    pub body: Bytes,
    /// Samples in the body.
    pub samples: u32,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Connecting, sending or reading failed, or the time limit passed.
    #[error("request failed: {}", crate::error_chain(.0))]
    Http(#[from] reqwest::Error),
    /// The receiver answered with an error status.
    #[error("receiver answered HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: reqwest::StatusCode,
        /// The start of the response body.
        body: String,
    },
}

impl PushError {
    /// Whether sending the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PushError::Http(_) => true,
            PushError::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// Settings shared by every endpoint.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Replay order after an outage.
    pub replay: ReplayOrder,
    /// Bearer token.
    pub token: Option<String>,
    /// Time limit of one push request.
    pub timeout: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The collection loop's handle to an endpoint task.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    tx: mpsc::Sender<Batch>,
    buffer: Arc<Mutex<DiskBuffer>>,
    label: String,
    metrics: SelfMetrics,
}

impl EndpointHandle {
    /// Hands a batch to the endpoint. If its queue is full (the receiver is hanging), the
    /// batch goes straight to the buffer instead of waiting or being lost.
    pub fn submit(&self, batch: Batch) {
        if let Err(e) = self.tx.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            store(&self.buffer, &batch, &self.label, &self.metrics);
        }
    }
}

/// Appends a batch to the buffer, counting whatever had to be dropped.
fn store(buffer: &Mutex<DiskBuffer>, batch: &Batch, label: &str, metrics: &SelfMetrics) {
    let Ok(mut buf) = buffer.lock() else { return };
    match buf.append(batch.samples, &batch.body) {
        Ok(dropped) => {
            if dropped.samples > 0 {
                tracing::warn!(
                    url = label,
                    samples = dropped.samples,
                    "buffer full: dropped the oldest samples"
                );
                metrics
                    .samples_dropped
                    .with_label_values(&[label, "buffer_full"])
                    .inc_by(dropped.samples);
            }
        }
        Err(e) => {
            tracing::error!(url = label, error = %e, samples = batch.samples, "cannot write to the disk buffer; samples lost");
            metrics
                .samples_dropped
                .with_label_values(&[label, "buffer_error"])
                .inc_by(u64::from(batch.samples));
        }
    }
    update_gauges(&buf, label, metrics);
}

fn update_gauges(buf: &DiskBuffer, label: &str, metrics: &SelfMetrics) {
    metrics
        .buffer_bytes
        .with_label_values(&[label])
        .set(buf.disk_bytes() as i64);
    metrics
        .buffer_samples
        .with_label_values(&[label])
        .set(buf.pending_samples() as i64);
}

/// The push URL without credentials, for logs and metric labels.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A directory name for an endpoint's buffer, stable across restarts.
pub fn buffer_subdir(url: &Url) -> String {
    display_url(url)
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The delivery task of one endpoint.
pub struct Endpoint {
    url: Url,
    label: String,
    client: reqwest::Client,
    settings: PushSettings,
    buffer: Arc<Mutex<DiskBuffer>>,
    metrics: SelfMetrics,
    rx: mpsc::Receiver<Batch>,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
    /// Whether the last attempt succeeded.
    up: bool,
    /// Earliest time of the next backlog attempt while down.
    retry_at: Instant,
    /// Backlog records still to send one at a time (after a merged batch was refused).
    singles: usize,
}

impl Endpoint {
    /// Creates the task and its handle. The buffer must already be open.
    pub fn new(
        url: Url,
        client: reqwest::Client,
        settings: PushSettings,
        buffer: DiskBuffer,
        metrics: SelfMetrics,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, EndpointHandle) {
        let (tx, rx) = mpsc::channel(64);
        let label = display_url(&url);
        let buffer = Arc::new(Mutex::new(buffer));
        if let Ok(b) = buffer.lock() {
            update_gauges(&b, &label, &metrics);
        }
        let handle = EndpointHandle {
            tx,
            buffer: buffer.clone(),
            label: label.clone(),
            metrics: metrics.clone(),
        };
        let backoff = Backoff::new(settings.min_backoff, settings.max_backoff);
        let ep = Endpoint {
            url,
            label,
            client,
            settings,
            buffer,
            metrics,
            rx,
            shutdown,
            backoff,
            up: true,
            retry_at: Instant::now(),
            singles: 0,
        };
        (ep, handle)
    }

    fn backlog_pending(&self) -> bool {
        self.buffer.lock().map(|b| !b.is_empty()).unwrap_or(false)
    }

    /// Runs until shutdown is signalled or every handle is dropped, then buffers what is
    /// left.
    pub async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let backlog = self.backlog_pending();
            let drain_now = backlog && self.up;
            let retry_later = backlog && !self.up;
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                batch = self.rx.recv() => match batch {
                    Some(b) => self.on_live(b, backlog).await,
                    None => break,
                },
                _ = std::future::ready(()), if drain_now => self.send_backlog_head().await,
                _ = tokio::time::sleep_until(retry_at), if retry_later => self.send_backlog_head().await,
            }
        }
        self.rx.close();
        while let Ok(b) = self.rx.try_recv() {
            store(&self.buffer, &b, &self.label, &self.metrics);
        }
        tracing::debug!(url = %self.label, "push task stopped; undelivered data is in the buffer");
    }

    async fn on_live(&mut self, batch: Batch, backlog: bool) {
        let hold_back = self.settings.replay == ReplayOrder::InOrder
            && (backlog || (!self.up && Instant::now() < self.retry_at));
        if hold_back {
            store(&self.buffer, &batch, &self.label, &self.metrics);
            return;
        }
        match self.send(batch.body.clone(), batch.samples, true).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => store(&self.buffer, &batch, &self.label, &self.metrics),
            Err(_) => {}
        }
    }

    async fn send_backlog_head(&mut self) {
        let limit = if self.singles > 0 {
            1
        } else {
            BACKLOG_BATCH_RECORDS
        };
        let head = match self.buffer.lock() {
            Ok(mut b) => b.peek_batch(limit, BACKLOG_BATCH_BYTES),
            Err(_) => return,
        };
        let records = match head {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => {
                tracing::error!(url = %self.label, error = %e, "cannot read the disk buffer");
                self.fail_later();
                return;
            }
        };
        let samples: u32 = records.iter().map(|r| r.samples).sum();
        let merged = records.len() > 1;
        let body = if records.len() == 1 {
            records
                .into_iter()
                .next()
                .map(|r| r.payload)
                .unwrap_or_default()
        } else {
            let bodies: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
            match remote_write::concat_bodies(&bodies, BACKLOG_BATCH_RAW_BYTES) {
                Ok(b) => b,
                Err(e) => {
                    // Too large once decompressed, or unreadable: send them one by one.
                    tracing::debug!(url = %self.label, error = %e, "backlog records not merged");
                    self.singles = records.len();
                    return;
                }
            }
        };
        let result = self.send(Bytes::from(body), samples, !merged).await;
        match &result {
            Err(e) if e.is_retryable() => return,
            Err(_) if merged => {
                // One bad record must not take its neighbours with it: resend the batch's
                // records one at a time, so only the refused one is dropped.
                if let Ok(b) = self.buffer.lock() {
                    self.singles = b.pending_records().min(BACKLOG_BATCH_RECORDS as u64) as usize;
                }
                return;
            }
            _ => {}
        }
        self.singles = self.singles.saturating_sub(1);
        if let Ok(mut b) = self.buffer.lock() {
            if let Err(e) = b.ack_batch() {
                tracing::error!(url = %self.label, error = %e, "cannot advance the disk buffer");
            }
            update_gauges(&b, &self.label, &self.metrics);
        }
    }

    fn fail_later(&mut self) {
        self.up = false;
        self.retry_at = Instant::now() + self.backoff.next_delay();
    }

    /// One attempt; updates up/backoff state and counters. A shutdown signal abandons the
    /// request and reports it as a retryable failure so the caller buffers the batch.
    /// With `count_rejection` false, a 4xx is left to the caller to account for (a merged
    /// batch that will be resent record by record).
    async fn send(
        &mut self,
        body: Bytes,
        samples: u32,
        count_rejection: bool,
    ) -> Result<(), PushError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, remote_write::CONTENT_TYPE)
            .header(
                reqwest::header::CONTENT_ENCODING,
                remote_write::CONTENT_ENCODING,
            )
            .header(remote_write::VERSION_HEADER, remote_write::VERSION)
            .body(body);
        if let Some(token) = &self.settings.token {
            req = req.bearer_auth(token);
        }
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            r = attempt(req) => r,
            _ = shutdown.changed() => Err(PushError::Status {
                status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                body: "agent shutting down".into(),
            }),
        };
        match &result {
            Ok(()) => {
                if !self.up {
                    tracing::info!(url = %self.label, "receiver reachable again");
                }
                self.up = true;
                self.backoff.reset();
                self.metrics
                    .samples_pushed
                    .with_label_values(&[&self.label])
                    .inc_by(u64::from(samples));
            }
            Err(e) if e.is_retryable() => {
                self.metrics
                    .push_failures
                    .with_label_values(&[&self.label])
                    .inc();
                if self.up {
                    tracing::warn!(url = %self.label, error = %e, "push failed; buffering on disk and retrying");
                }
                self.fail_later();
            }
            Err(e) if !count_rejection => {
                self.metrics
                    .push_failures
                    .with_label_values(&[&self.label])
                    .inc();
                tracing::warn!(url = %self.label, error = %e, "receiver refused a merged backlog batch; resending its records one by one");
            }
            Err(e) => {
                self.metrics
                    .push_failures
                    .with_label_values(&[&self.label])
                    .inc();
                self.metrics
                    .samples_dropped
                    .with_label_values(&[&self.label, "rejected"])
                    .inc_by(u64::from(samples));
                tracing::error!(url = %self.label, error = %e, samples, "receiver rejected the batch; dropped");
            }
        }
        result
    }
}

async fn attempt(req: reqwest::RequestBuilder) -> Result<(), PushError> {
    let resp = req.send().await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(PushError::Status {
        status,
        body: text.chars().take(512).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[1] >= Duration::from_millis(100) && d[1] <= Duration::from_millis(200));
        assert!(d[4] >= Duration::from_millis(200) && d[4] <= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn buffer_dirs_are_stable_and_safe() {
        let u: Url = "https://user:pw@example.com:8443/api/v1/write"
            .parse()
            .expect("url");
        assert_eq!(display_url(&u), "https://example.com:8443/api/v1/write");
        assert_eq!(buffer_subdir(&u), "example.com_8443_api_v1_write");
    }
}

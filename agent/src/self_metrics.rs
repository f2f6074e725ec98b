//! The agent's own metrics, served on `/metrics` and pushed with the host metrics.
//! Per-endpoint figures carry a `url` label (the push URL without credentials).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Counters and gauges describing the agent's own work.
#[derive(Debug, Clone)]
pub struct SelfMetrics {
    /// Time taken by one collection cycle (host read, scrapes, encoding).
    pub collection_duration: Histogram,
    /// Samples produced by collection cycles.
    pub samples_collected: IntCounter,
    /// Host metric sources that failed to read.
    pub host_source_failures: IntCounter,
    /// Samples a receiver acknowledged.
    pub samples_pushed: IntCounterVec,
    /// Push attempts that failed (network error, timeout, or an HTTP error status).
    pub push_failures: IntCounterVec,
    /// Samples given up on, by reason: `buffer_full` (oldest data dropped to stay under the
    /// cap), `rejected` (the receiver answered 4xx, which retrying cannot fix),
    /// `buffer_error` (the buffer could not be written).
    pub samples_dropped: IntCounterVec,
    /// Bytes held in the on-disk buffer.
    pub buffer_bytes: IntGaugeVec,
    /// Samples held in the on-disk buffer awaiting delivery.
    pub buffer_samples: IntGaugeVec,
}

impl SelfMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SelfMetrics {
            collection_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "nunchi_agent_collection_duration_seconds",
                    "Time taken by one collection cycle: host metrics, scrapes and encoding.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
                ]),
            )?,
            samples_collected: IntCounter::new(
                "nunchi_agent_samples_collected_total",
                "Samples produced by collection cycles.",
            )?,
            host_source_failures: IntCounter::new(
                "nunchi_agent_host_source_failures_total",
                "Host metric sources (/proc files) that could not be read in a cycle.",
            )?,
            samples_pushed: IntCounterVec::new(
                Opts::new(
                    "nunchi_agent_samples_pushed_total",
                    "Samples acknowledged by a receiver.",
                ),
                &["url"],
            )?,
            push_failures: IntCounterVec::new(
                Opts::new(
                    "nunchi_agent_push_failures_total",
                    "Push requests that failed.",
                ),
                &["url"],
            )?,
            samples_dropped: IntCounterVec::new(
                Opts::new(
                    "nunchi_agent_samples_dropped_total",
                    "Samples given up on: buffer_full, rejected (4xx) or buffer_error.",
                ),
                &["url", "reason"],
            )?,
            buffer_bytes: IntGaugeVec::new(
                Opts::new("nunchi_agent_buffer_bytes", "Bytes in the on-disk buffer."),
                &["url"],
            )?,
            buffer_samples: IntGaugeVec::new(
                Opts::new(
                    "nunchi_agent_buffer_samples",
                    "Samples in the on-disk buffer awaiting delivery.",
                ),
                &["url"],
            )?,
        };
        registry.register(Box::new(m.collection_duration.clone()))?;
        registry.register(Box::new(m.samples_collected.clone()))?;
        registry.register(Box::new(m.host_source_failures.clone()))?;
        registry.register(Box::new(m.samples_pushed.clone()))?;
        registry.register(Box::new(m.push_failures.clone()))?;
        registry.register(Box::new(m.samples_dropped.clone()))?;
        registry.register(Box::new(m.buffer_bytes.clone()))?;
        registry.register(Box::new(m.buffer_samples.clone()))?;
        Ok(m)
    }
}

//! The service's instrumentation, in the `prometheus` crate. Names follow Prometheus'
//! conventions so the hit ratio, pool saturation and latency percentiles are one PromQL
//! line each:
//!
//! - `feed_cache_requests_total{cache,result}` (`result` = `hit`|`miss`), `feed_cache_entries{cache}`
//! - `feed_db_pool_connections{state}` (`in_use`|`idle`), `feed_db_pool_max_connections`,
//!   `feed_db_pool_acquire_seconds` (histogram), `feed_db_errors_total`
//! - `http_requests_total{route,method,status}`, `http_request_duration_seconds{route,method}`
//!   (routes are the matched path patterns, so label sets stay bounded)
//! - `feed_fanout_queue_depth`, `feed_fanout_lag_seconds` (post created → last follower's
//!   cached feed updated)
//! - `feed_dau`, `feed_mau`, `feed_posts_total`, `feed_reads_total`
//! - `process_*` from the process collector.
//!
//! Gauges that mirror other state (pool, cache size, DAU/MAU) are read when `/metrics` is
//! served.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::cache::{Cache, Kind};
use crate::db::Db;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// All of the service's metrics.
pub struct Metrics {
    registry: Registry,
    db: Db,
    cache: Cache,
    /// Cache lookups by kind and result.
    pub cache_requests: IntCounterVec,
    cache_entries: IntGaugeVec,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    /// Time spent waiting for a pooled connection.
    pub pool_acquire: Histogram,
    /// Database errors.
    pub db_errors: IntCounter,
    /// Requests by route, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency by route and method.
    pub http_duration: HistogramVec,
    /// Posts waiting for fan-out.
    pub fanout_queue_depth: IntGauge,
    /// Post creation to last follower feed updated.
    pub fanout_lag: Histogram,
    dau: IntGauge,
    mau: IntGauge,
    /// Posts created.
    pub posts: IntCounter,
    /// Feed pages served.
    pub feed_reads: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(mut db: Db, cache: Cache) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let pool_acquire = Histogram::with_opts(
            HistogramOpts::new(
                "feed_db_pool_acquire_seconds",
                "Time spent waiting to acquire a database connection.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
            ]),
        )?;
        let observer = pool_acquire.clone();
        db.set_acquire_observer(move |secs| observer.observe(secs));
        let m = Metrics {
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "feed_cache_requests_total",
                    "Cache lookups by cache and result (hit or miss).",
                ),
                &["cache", "result"],
            )?,
            cache_entries: IntGaugeVec::new(
                Opts::new("feed_cache_entries", "Entries in the in-process cache."),
                &["cache"],
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new(
                    "feed_db_pool_connections",
                    "Database pool connections by state (in_use, idle).",
                ),
                &["state"],
            )?,
            pool_max: IntGauge::new(
                "feed_db_pool_max_connections",
                "Most connections the database pool may open.",
            )?,
            pool_acquire,
            db_errors: IntCounter::new(
                "feed_db_errors_total",
                "Database queries or connections that failed.",
            )?,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests by route, method and status.",
                ),
                &["route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request latency by route and method.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "method"],
            )?,
            fanout_queue_depth: IntGauge::new(
                "feed_fanout_queue_depth",
                "Posts waiting for fan-out.",
            )?,
            fanout_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "feed_fanout_lag_seconds",
                    "Time from a post's creation to its last follower's feed update.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            dau: IntGauge::new("feed_dau", "Distinct users active today (UTC).")?,
            mau: IntGauge::new("feed_mau", "Distinct users active in the last 30 days.")?,
            posts: IntCounter::new("feed_posts_total", "Posts created.")?,
            feed_reads: IntCounter::new("feed_reads_total", "Feed pages served.")?,
            registry,
            db,
            cache,
        };
        let r = &m.registry;
        r.register(Box::new(m.cache_requests.clone()))?;
        r.register(Box::new(m.cache_entries.clone()))?;
        r.register(Box::new(m.pool_connections.clone()))?;
        r.register(Box::new(m.pool_max.clone()))?;
        r.register(Box::new(m.pool_acquire.clone()))?;
        r.register(Box::new(m.db_errors.clone()))?;
        r.register(Box::new(m.http_requests.clone()))?;
        r.register(Box::new(m.http_duration.clone()))?;
        r.register(Box::new(m.fanout_queue_depth.clone()))?;
        r.register(Box::new(m.fanout_lag.clone()))?;
        r.register(Box::new(m.dau.clone()))?;
        r.register(Box::new(m.mau.clone()))?;
        r.register(Box::new(m.posts.clone()))?;
        r.register(Box::new(m.feed_reads.clone()))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for kind in [Kind::Feed, Kind::Post, Kind::Celebrities] {
            for result in ["hit", "miss"] {
                m.cache_requests.with_label_values(&[kind.as_str(), result]);
            }
        }
        Ok(m)
    }

    /// The database handle with the acquire-time observer installed.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Counts one cache lookup.
    pub fn cache_lookup(&self, kind: Kind, hit: bool) {
        self.cache_requests
            .with_label_values(&[kind.as_str(), if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// Refreshes the mirrored gauges and renders the text exposition.
    pub async fn render(&self, today: i64) -> Vec<u8> {
        let (in_use, idle, max) = self.db.pool_stats();
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        self.pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(idle));
        self.pool_max.set(i64::from(max));
        if let Some((feeds, posts)) = self.cache.entries().await {
            self.cache_entries
                .with_label_values(&["feed"])
                .set(feeds as i64);
            self.cache_entries
                .with_label_values(&["post"])
                .set(posts as i64);
        }
        match self.db.dau_mau(today).await {
            Ok((dau, mau)) => {
                self.dau.set(dau);
                self.mau.set(mau);
            }
            Err(e) => {
                self.db_errors.inc();
                tracing::warn!(error = %e, "cannot count active users");
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

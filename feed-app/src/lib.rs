//! The news-feed service nunchi watches: users follow each other (at most
//! [`config::FeedConfig::max_follows`] each), post stories, and read a home feed of the
//! people they follow, newest first, cursor-paginated.
//!
//! - Write path ([`api`] → [`fanout`]): a post is stored, then queued; a bounded pool of
//!   workers pushes its id into each follower's cached feed (fan-out on write). Authors with
//!   more followers than the celebrity threshold are skipped and merged at read time
//!   instead (fan-out on read), so one celebrity post cannot flood the queue.
//! - Read path ([`feed`]): cache first, database on a miss, cache filled on the way back
//!   (cache-aside with TTL and bounded size), then celebrity posts merged in.
//! - Storage ([`db`]): SQLite by default, PostgreSQL by URL, through sqlx; migrations run
//!   at start-up. Cache ([`cache`]): in-process by default, Redis by URL.
//! - Instrumentation ([`metrics`]): the `prometheus` crate, served at `/metrics`.

pub mod api;
pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod fanout;
pub mod feed;
pub mod loadgen;
pub mod metrics;

use std::sync::Arc;

pub use api::app;
pub use config::FeedConfig;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: db::Db,
    /// The feed and post cache.
    pub cache: cache::Cache,
    /// The fan-out queue.
    pub fanout: fanout::FanoutQueue,
    /// Instrumentation; `None` when metrics are disabled.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// Settings.
    pub config: Arc<FeedConfig>,
    /// (user, day) pairs already recorded as active, so activity costs one write per user
    /// per day.
    pub seen_active: moka::sync::Cache<(i64, i64), ()>,
}

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The cache could not be reached.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// Metric registration failed.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl AppState {
    /// Connects to the database and cache, runs migrations, and starts the fan-out workers.
    pub async fn build(config: FeedConfig) -> Result<AppState, StartError> {
        let config = Arc::new(config);
        let mut db = db::Db::connect(&config.database_url, config.db_max_connections).await?;
        let cache = match &config.redis_url {
            Some(url) => cache::Cache::redis(url, &config.redis_prefix, config.cache_ttl).await?,
            None => cache::Cache::memory(config.cache_capacity, config.cache_ttl),
        };
        let metrics = if config.metrics {
            let m = metrics::Metrics::new(db.clone(), cache.clone())?;
            db = m.db().clone();
            Some(Arc::new(m))
        } else {
            None
        };
        let fanout =
            fanout::FanoutQueue::start(db.clone(), cache.clone(), metrics.clone(), &config);
        let seen_active = moka::sync::Cache::builder().max_capacity(1_000_000).build();
        Ok(AppState {
            db,
            cache,
            fanout,
            metrics,
            config,
            seen_active,
        })
    }
}

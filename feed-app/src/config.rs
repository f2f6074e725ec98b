//! Service settings: flags and `FEED_APP_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of the feed service. Field docs are the reference; `--help` shows them.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "feed-app",
    version,
    about = "The news-feed service nunchi watches: users, follows, posts and a cached home \
             feed with fan-out on write, instrumented for Prometheus at /metrics.",
    after_help = "API (identity in the X-User-Id header):\n  \
                  POST /api/users {\"name\"}             create a user\n  \
                  PUT|DELETE /api/follows/{user_id}     follow / unfollow\n  \
                  POST /api/posts {\"text\", \"link\"?}    post a story\n  \
                  GET /api/feed?limit=20&cursor=ID      read the home feed, newest first\n  \
                  GET /metrics, GET /healthz"
)]
pub struct FeedConfig {
    /// Address to listen on.
    #[arg(long, env = "FEED_APP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "FEED_APP_DATABASE_URL",
        default_value = "sqlite://data/feed-app.db"
    )]
    pub database_url: String,
    /// Most database connections in the pool.
    #[arg(long, env = "FEED_APP_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Redis URL (`redis://127.0.0.1:6379`); without it the cache is in-process.
    #[arg(long, env = "FEED_APP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several instances or tests can share a server.
    #[arg(long, env = "FEED_APP_REDIS_PREFIX", default_value = "feed:")]
    pub redis_prefix: String,
    /// How long a cached feed or post lives.
    #[arg(long, env = "FEED_APP_CACHE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,
    /// Most entries in the in-process cache (feeds and posts together); least recently
    /// used entries are evicted past it.
    #[arg(long, env = "FEED_APP_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,
    /// Most users one user may follow.
    #[arg(long, env = "FEED_APP_MAX_FOLLOWS", default_value_t = 5000)]
    pub max_follows: i64,
    /// Authors with more followers than this are merged into feeds at read time instead of
    /// being fanned out on write.
    #[arg(long, env = "FEED_APP_CELEBRITY_THRESHOLD", default_value_t = 1000)]
    pub celebrity_threshold: i64,
    /// Fan-out workers.
    #[arg(long, env = "FEED_APP_FANOUT_WORKERS", default_value_t = 4)]
    pub fanout_workers: usize,
    /// Capacity of the fan-out queue; posting waits when it is full.
    #[arg(long, env = "FEED_APP_FANOUT_QUEUE", default_value_t = 10_000)]
    pub fanout_queue: usize,
    /// Serve /metrics and instrument requests (`--metrics false` to measure the cost).
    #[arg(long, env = "FEED_APP_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
}

impl FeedConfig {
    /// Settings for tests and embedding: defaults with the given database.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        use clap::Parser;
        let mut c = FeedConfig::parse_from(["feed-app"]);
        c.database_url = database_url.into();
        c
    }
}

//! Collector configuration: a TOML file, `NUNCHI_COLLECTOR_*` environment variables and
//! flags, flags winning over the environment and both over the file. Every field is
//! documented where it is declared; that text is the reference.
//!
//! [`CollectorConfig::validate`] is pure (no I/O); errors name the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use clap::Parser;
use nunchi_cli::invalid;
use nunchi_scrape::ScrapeTarget;
use serde::{Deserialize, Serialize};

pub use nunchi_cli::ConfigError;

/// A bearer token allowed to write, with its own new-series budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and metrics (the `token` label of the ingest counters).
    pub name: String,
    /// The secret, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// New series this token may create per minute. Default: `limits.max_new_series_per_minute`.
    #[serde(default)]
    pub max_new_series_per_minute: Option<u64>,
}

/// Limits on what a write may carry. Over a limit, the whole request is refused with a
/// 4xx that says which limit, and counted; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestLimits {
    /// Largest compressed request body. Default `16MiB`.
    pub max_body_size: ByteSize,
    /// Largest decompressed request (guards against snappy bombs). Default `64MiB`.
    pub max_decompressed_size: ByteSize,
    /// Most labels per series, `__name__` included. Default `40`.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes. Default `256`.
    pub max_label_name_length: usize,
    /// Longest label value, in bytes. Default `2048`.
    pub max_label_value_length: usize,
    /// New series one writer (token, or everyone when no tokens are configured) may
    /// create per minute. Default `200000`.
    pub max_new_series_per_minute: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_size: ByteSize::mib(16),
            max_decompressed_size: ByteSize::mib(64),
            max_labels_per_series: 40,
            max_label_name_length: 256,
            max_label_value_length: 2048,
            max_new_series_per_minute: 200_000,
        }
    }
}

/// Limits on queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Most samples one query may hold: those it loads, plus one for every subquery step
    /// and every sample a subquery or a range query produces, counted before they are
    /// computed (Prometheus' `--query.max-samples`). Default `50000000`.
    pub max_samples: usize,
    /// Longest a query may run, waiting for a slot included; evaluation checks it at every
    /// step (Prometheus' `--query.timeout`). Default `2m`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most client queries evaluated at once; more wait for a slot (Prometheus'
    /// `--query.max-concurrency`). Rule evaluation does not count. Default `20`.
    pub max_concurrency: usize,
    /// Longest query text, in bytes; a longer one is refused before it is parsed.
    /// Default `65536`.
    pub max_length: usize,
    /// Deepest expression: nested calls, parentheses, operators and ranges, bounded from
    /// the query's tokens before it is parsed. Applies to rule files too. Default `1000`.
    pub max_depth: usize,
    /// How far back an instant selector looks for a sample. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Memory for range query answers kept for the next time they are asked (a refreshing
    /// dashboard then computes only its new steps); `0` turns the cache off. Default
    /// `128MiB`.
    pub result_cache_size: ByteSize,
    /// Steps of a range query this close to now are always computed, never kept; a write of
    /// a sample older than this empties the result cache. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub result_cache_fresh_window: Duration,
    /// Memory for decoded compacted blocks, so a time range read again is neither read from
    /// the database nor decompressed again; `0` keeps none. Default `256MiB`.
    pub block_cache_size: ByteSize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_concurrency: 20,
            max_length: 64 * 1024,
            max_depth: 1000,
            lookback_delta: Duration::from_secs(300),
            result_cache_size: ByteSize::mib(128),
            result_cache_fresh_window: Duration::from_secs(300),
            block_cache_size: ByteSize::mib(256),
        }
    }
}

/// Remote storage mode: the collector keeps no series; writes are forwarded to, and
/// queries answered by, a Prometheus-compatible TSDB (VictoriaMetrics, Mimir, Thanos
/// Receive, Prometheus itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Its remote_write endpoint, e.g. `http://vminsert:8480/insert/0/prometheus/api/v1/write`
    /// or `http://victoria-metrics:8428/api/v1/write`. Required.
    pub write_url: url::Url,
    /// Base of its Prometheus HTTP API (`/api/v1/query` is appended), e.g.
    /// `http://vmselect:8481/select/0/prometheus` or `http://victoria-metrics:8428`. Required.
    pub query_url: url::Url,
    /// Bearer token sent with every request to it. Default: none.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Time limit of each request to it. Default `30s`.
    #[serde(with = "humantime_serde", default = "RemoteConfig::default_timeout")]
    pub timeout: Duration,
}

impl RemoteConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

/// The collector's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address of the HTTP API (remote_write, queries, `/metrics`). Default `127.0.0.1:9300`.
    pub listen: SocketAddr,
    /// Directory for the write-ahead log and the default SQLite database. Default `data/collector`.
    pub data_dir: PathBuf,
    /// Database for persisted chunks: `sqlite://PATH` or `postgres://...`. Default: a SQLite
    /// file `nunchi.db` in `data_dir`.
    pub database_url: Option<String>,
    /// How long samples are kept. Default `15d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How far behind a series' newest sample a sample may arrive and still be stored
    /// (several writers' requests interleave). Default `10m`.
    #[serde(with = "humantime_serde")]
    pub out_of_order_window: Duration,
    /// How often in-memory samples are written to the database; the write-ahead log covers
    /// them until then. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Width of a compacted block per series. Default `6h`.
    #[serde(with = "humantime_serde")]
    pub block_span: Duration,
    /// Bucket width of the rollups read by long-range queries. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub rollup_resolution: Duration,
    /// `fdatasync` the write-ahead log before acknowledging a write (survives power loss,
    /// not only a crash). Default `true`.
    pub wal_sync: bool,
    /// Bearer tokens allowed to write. Default: none (anyone may write).
    pub tokens: Vec<TokenConfig>,
    /// Ingest limits.
    pub limits: IngestLimits,
    /// Query limits.
    pub query: QueryConfig,
    /// Targets to scrape (for those that cannot push). Default: none.
    pub scrape: Vec<ScrapeTarget>,
    /// How often targets are scraped. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub scrape_interval: Duration,
    /// Scrape time limit, capped at the interval. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub scrape_timeout: Duration,
    /// Remote storage mode (see [`RemoteConfig`]). Default: off, series stored locally.
    pub remote: Option<RemoteConfig>,
    /// Prometheus rule files to evaluate: paths or glob patterns (`rules/*.yml`).
    /// Default: none. The shipped set is `collector/rules/default.yml`.
    pub rules: Vec<String>,
    /// Interval of rule groups that set none. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Alert delivery configuration in Alertmanager's YAML (routes, receivers, silences'
    /// home). Default: none (alerts are evaluated and shown, not sent).
    pub alerting_config: Option<PathBuf>,
    /// Notifications each delivery queue holds in memory (each Slack channel's, and the
    /// webhooks' and scale hooks' together); one that finds its queue full is counted in
    /// `nunchi_notifications_overflowed_total`, logged and dead-lettered. Default `10000`.
    pub notification_queue_capacity: usize,
    /// The URL users reach the collector (and dashboard) at, for links in alerts.
    /// Default: `http://` + `listen`.
    pub external_url: Option<String>,
    /// Directory holding the dashboard's browser bundle (`nunchi_dashboard.js` and
    /// `nunchi_dashboard_bg.wasm`, built by `scripts/build-dashboard`). Without it pages are
    /// served rendered but not interactive. Default: `dashboard/pkg` beside the directory
    /// of the collector binary (`target/dashboard/pkg` for a build in this repository).
    pub dashboard_assets: Option<PathBuf>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            data_dir: PathBuf::from("data/collector"),
            database_url: None,
            retention: Duration::from_secs(15 * 86400),
            out_of_order_window: Duration::from_secs(600),
            flush_interval: Duration::from_secs(600),
            block_span: Duration::from_secs(6 * 3600),
            rollup_resolution: Duration::from_secs(300),
            wal_sync: true,
            tokens: Vec::new(),
            limits: IngestLimits::default(),
            query: QueryConfig::default(),
            scrape: Vec::new(),
            scrape_interval: Duration::from_secs(15),
            scrape_timeout: Duration::from_secs(10),
            remote: None,
            rules: Vec::new(),
            evaluation_interval: Duration::from_secs(1),
            alerting_config: None,
            notification_queue_capacity: nunchi_alerts::delivery::DEFAULT_QUEUE_CAPACITY,
            external_url: None,
            dashboard_assets: None,
        }
    }
}

impl CollectorConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        nunchi_cli::parse_toml(text, path)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        nunchi_cli::read_toml(path)
    }

    /// Checks every value; no I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(1) {
            return Err(invalid("retention", "must be at least 1s"));
        }
        if self.flush_interval < Duration::from_millis(100) {
            return Err(invalid("flush_interval", "must be at least 100ms"));
        }
        if self.block_span < Duration::from_secs(60) {
            return Err(invalid("block_span", "must be at least 1m"));
        }
        if self.rollup_resolution < Duration::from_secs(1)
            || self.rollup_resolution > self.block_span
        {
            return Err(invalid(
                "rollup_resolution",
                "must be between 1s and block_span",
            ));
        }
        if let Some(url) = &self.database_url
            && !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return Err(invalid(
                "database_url",
                format!("{url:?}: use sqlite://PATH or postgres://..."),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tokens {
            if t.token.len() < 8 {
                return Err(invalid(
                    "tokens",
                    format!("token {:?} is shorter than 8 characters", t.name),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    "tokens",
                    format!("name {:?} is used twice", t.name),
                ));
            }
        }
        let l = &self.limits;
        if l.max_body_size.as_u64() == 0 || l.max_decompressed_size < l.max_body_size {
            return Err(invalid(
                "limits.max_decompressed_size",
                "must be at least limits.max_body_size (and that above 0)",
            ));
        }
        if l.max_labels_per_series == 0
            || l.max_label_name_length == 0
            || l.max_label_value_length == 0
        {
            return Err(invalid("limits", "label limits must be above 0"));
        }
        if self.query.max_samples == 0
            || self.query.timeout.is_zero()
            || self.query.lookback_delta.is_zero()
        {
            return Err(invalid(
                "query",
                "max_samples, timeout and lookback_delta must be above 0",
            ));
        }
        if self.query.max_concurrency == 0 || self.query.max_concurrency > 10_000 {
            return Err(invalid(
                "query.max_concurrency",
                "must be between 1 and 10000",
            ));
        }
        if self.query.max_length < 16 {
            return Err(invalid("query.max_length", "must be at least 16 bytes"));
        }
        // Parsing, planning and dropping a tree recurse on the runtime's 2 MiB stacks.
        if !(8..=2_000).contains(&self.query.max_depth) {
            return Err(invalid("query.max_depth", "must be between 8 and 2000"));
        }
        if self.query.result_cache_fresh_window.is_zero() {
            return Err(invalid(
                "query.result_cache_fresh_window",
                "must be above 0 (samples arrive some time after they are taken)",
            ));
        }
        for t in &self.scrape {
            if !matches!(t.url.scheme(), "http" | "https") {
                return Err(invalid(
                    "scrape",
                    format!("{}: scheme must be http or https", t.url),
                ));
            }
        }
        if let Some(r) = &self.remote {
            for (key, url) in [
                ("remote.write_url", &r.write_url),
                ("remote.query_url", &r.query_url),
            ] {
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(key, format!("{url}: scheme must be http or https")));
                }
            }
            if r.timeout.is_zero() {
                return Err(invalid("remote.timeout", "must be above 0"));
            }
        }
        if self.evaluation_interval < Duration::from_millis(100) {
            return Err(invalid("evaluation_interval", "must be at least 100ms"));
        }
        if self.notification_queue_capacity == 0 {
            return Err(invalid("notification_queue_capacity", "must be at least 1"));
        }
        if let Some(u) = &self.external_url
            && url::Url::parse(u).is_err()
        {
            return Err(invalid("external_url", format!("{u:?} is not a URL")));
        }
        if self.scrape_interval < Duration::from_millis(100) || self.scrape_timeout.is_zero() {
            return Err(invalid(
                "scrape_interval",
                "must be at least 100ms, with a scrape_timeout above 0",
            ));
        }
        Ok(())
    }
}

/// Command line of `nunchi-collector`. Each flag may also be set through the environment
/// variable shown, and in the `--config` file under the key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "nunchi-collector",
    version,
    about = "Receives Prometheus remote_write (and scrapes targets that cannot push), stores \
             the series in an embedded time-series store (write-ahead log, compressed chunks \
             in SQLite or PostgreSQL), answers PromQL on the Prometheus HTTP API, evaluates \
             Prometheus rule files and delivers alerts to Slack, webhooks and autoscalers.",
    long_about = None,
    after_help = "Endpoints: POST /api/v1/write (remote_write 1.0), GET|POST /api/v1/query, \
                  /api/v1/query_range, /api/v1/series, /api/v1/labels, \
                  /api/v1/label/NAME/values, /api/v1/metadata, /api/v1/query_exemplars, \
                  /api/v1/status/buildinfo, /api/v1/status/storage, /api/v1/rules, \
                  /api/v1/alerts, /api/v2/silences, /api/v1/deliveries, \
                  POST /api/v1/admin/compact, POST /-/reload, /metrics, /-/healthy, /-/ready.\n\
                  Rules (--rules, Prometheus rule files) are evaluated every group interval; \
                  alerts go to the receivers of --alerting-config (Alertmanager YAML: Slack, \
                  webhooks, scale hooks). SIGHUP or POST /-/reload re-reads both; a broken \
                  file is reported and the running rules stay.\n\
                  Remote storage mode (--remote-write-url with --remote-query-url): no series \
                  are kept here; writes go to, and queries are answered by, a \
                  Prometheus-compatible TSDB such as a VictoriaMetrics cluster or Mimir.\n\
                  Precedence: flags > NUNCHI_COLLECTOR_* environment > --config file > defaults.\n\
                  Durations take units (250ms, 10s, 5m, 15d); sizes too (64KiB, 16MiB).\n\
                  Logging: NUNCHI_LOG=info (default), or e.g. NUNCHI_LOG=debug,sqlx=warn.\n\
                  Stops cleanly on SIGTERM or Ctrl-C, flushing memory to the database."
)]
pub struct Cli {
    /// TOML config file; keys as named in each option's help (see collector.example.toml).
    #[arg(long, env = "NUNCHI_COLLECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API [key: listen] [default: 127.0.0.1:9300].
    #[arg(long, env = "NUNCHI_COLLECTOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the write-ahead log and the SQLite file [key: data_dir] [default: data/collector].
    #[arg(long, env = "NUNCHI_COLLECTOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, sqlite://PATH or postgres://... [key: database_url] [default: SQLite in the data dir].
    #[arg(
        long,
        env = "NUNCHI_COLLECTOR_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// How long samples are kept [key: retention] [default: 15d].
    #[arg(long, env = "NUNCHI_COLLECTOR_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retention: Option<Duration>,
    /// Accept samples this far behind a series' newest [key: out_of_order_window] [default: 10m].
    #[arg(long, env = "NUNCHI_COLLECTOR_OUT_OF_ORDER_WINDOW", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub out_of_order_window: Option<Duration>,
    /// How often memory is written to the database [key: flush_interval] [default: 10m].
    #[arg(long, env = "NUNCHI_COLLECTOR_FLUSH_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub flush_interval: Option<Duration>,
    /// fdatasync the write-ahead log before acknowledging writes [key: wal_sync] [default: true].
    #[arg(long, env = "NUNCHI_COLLECTOR_WAL_SYNC", value_name = "BOOL")]
    pub wal_sync: Option<bool>,
    /// Target to scrape, as [JOB=]URL; repeatable [key: scrape, tables with url and job].
    #[arg(
        long,
        env = "NUNCHI_COLLECTOR_SCRAPE",
        value_delimiter = ',',
        value_name = "[JOB=]URL"
    )]
    pub scrape: Vec<ScrapeTarget>,
    /// How often targets are scraped [key: scrape_interval] [default: 15s].
    #[arg(long, env = "NUNCHI_COLLECTOR_SCRAPE_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub scrape_interval: Option<Duration>,
    /// Remote storage mode: forward writes to this remote_write URL (needs
    /// --remote-query-url too) [key: remote.write_url] [default: off].
    #[arg(
        long,
        env = "NUNCHI_COLLECTOR_REMOTE_WRITE_URL",
        value_name = "URL",
        requires = "remote_query_url"
    )]
    pub remote_write_url: Option<url::Url>,
    /// Remote storage mode: answer queries from the Prometheus API at this base URL
    /// [key: remote.query_url] [default: off].
    #[arg(
        long,
        env = "NUNCHI_COLLECTOR_REMOTE_QUERY_URL",
        value_name = "URL",
        requires = "remote_write_url"
    )]
    pub remote_query_url: Option<url::Url>,
    /// Rule file or glob pattern; repeatable [key: rules] [default: none].
    #[arg(
        long = "rules",
        env = "NUNCHI_COLLECTOR_RULES",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub rules: Vec<String>,
    /// Interval of rule groups that set none [key: evaluation_interval] [default: 1s].
    #[arg(long, env = "NUNCHI_COLLECTOR_EVALUATION_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub evaluation_interval: Option<Duration>,
    /// Alert delivery configuration, Alertmanager YAML [key: alerting_config] [default: none].
    #[arg(long, env = "NUNCHI_COLLECTOR_ALERTING_CONFIG", value_name = "FILE")]
    pub alerting_config: Option<PathBuf>,
    /// Notifications each delivery queue holds in memory; more are dead-lettered [key: notification_queue_capacity] [default: 10000].
    #[arg(
        long,
        env = "NUNCHI_COLLECTOR_NOTIFICATION_QUEUE_CAPACITY",
        value_name = "N"
    )]
    pub notification_queue_capacity: Option<usize>,
    /// URL the collector is reached at, for links in alerts [key: external_url] [default: http://LISTEN].
    #[arg(long, env = "NUNCHI_COLLECTOR_EXTERNAL_URL", value_name = "URL")]
    pub external_url: Option<String>,
    /// Directory of the dashboard's browser bundle [key: dashboard_assets] [default: BINARY_DIR/../dashboard/pkg].
    #[arg(long, env = "NUNCHI_COLLECTOR_DASHBOARD_ASSETS", value_name = "DIR")]
    pub dashboard_assets: Option<PathBuf>,
    /// Most samples one query may hold [key: query.max_samples] [default: 50000000].
    #[arg(
        long = "query.max-samples",
        env = "NUNCHI_COLLECTOR_QUERY_MAX_SAMPLES",
        value_name = "N"
    )]
    pub query_max_samples: Option<usize>,
    /// Longest a query may run [key: query.timeout] [default: 2m].
    #[arg(long = "query.timeout", env = "NUNCHI_COLLECTOR_QUERY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub query_timeout: Option<Duration>,
    /// Most client queries evaluated at once [key: query.max_concurrency] [default: 20].
    #[arg(
        long = "query.max-concurrency",
        env = "NUNCHI_COLLECTOR_QUERY_MAX_CONCURRENCY",
        value_name = "N"
    )]
    pub query_max_concurrency: Option<usize>,
    /// How far back an instant selector looks [key: query.lookback_delta] [default: 5m].
    #[arg(long = "query.lookback-delta", env = "NUNCHI_COLLECTOR_QUERY_LOOKBACK_DELTA", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub query_lookback_delta: Option<Duration>,
    /// Longest query text in bytes [key: query.max_length] [default: 65536].
    #[arg(
        long = "query.max-length",
        env = "NUNCHI_COLLECTOR_QUERY_MAX_LENGTH",
        value_name = "BYTES"
    )]
    pub query_max_length: Option<usize>,
    /// Deepest expression, in levels [key: query.max_depth] [default: 1000].
    #[arg(
        long = "query.max-depth",
        env = "NUNCHI_COLLECTOR_QUERY_MAX_DEPTH",
        value_name = "N"
    )]
    pub query_max_depth: Option<usize>,
    /// Validate the configuration, print it as TOML and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl Cli {
    /// Resolves the final configuration: the file (if any), overridden by flags and
    /// environment, then validated.
    pub fn resolve(&self) -> Result<CollectorConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => CollectorConfig::from_file(path)?,
            None => CollectorConfig::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        take!(
            listen,
            data_dir,
            retention,
            out_of_order_window,
            flush_interval,
            wal_sync,
            scrape_interval,
            evaluation_interval,
            notification_queue_capacity
        );
        macro_rules! take_query {
            ($($flag:ident => $field:ident),*) => { $( if let Some(v) = self.$flag { c.query.$field = v; } )* };
        }
        take_query!(
            query_max_samples => max_samples,
            query_timeout => timeout,
            query_max_concurrency => max_concurrency,
            query_lookback_delta => lookback_delta,
            query_max_length => max_length,
            query_max_depth => max_depth
        );
        if self.alerting_config.is_some() {
            c.alerting_config = self.alerting_config.clone();
        }
        if self.external_url.is_some() {
            c.external_url = self.external_url.clone();
        }
        if self.dashboard_assets.is_some() {
            c.dashboard_assets = self.dashboard_assets.clone();
        }
        if !self.rules.is_empty() {
            c.rules = self.rules.clone();
        }
        if self.database_url.is_some() {
            c.database_url = self.database_url.clone();
        }
        if !self.scrape.is_empty() {
            c.scrape = self.scrape.clone();
        }
        if let (Some(write_url), Some(query_url)) = (&self.remote_write_url, &self.remote_query_url)
        {
            let (bearer_token, timeout) = c
                .remote
                .take()
                .map_or((None, RemoteConfig::default_timeout()), |r| {
                    (r.bearer_token, r.timeout)
                });
            c.remote = Some(RemoteConfig {
                write_url: write_url.clone(),
                query_url: query_url.clone(),
                bearer_token,
                timeout,
            });
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/collector.example.toml"
        ));
        let c = CollectorConfig::from_file(path).expect("example parses");
        c.validate().expect("example validates");
        assert_eq!(c.retention, Duration::from_secs(15 * 86400));
        assert_eq!(c.tokens.len(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let p = Path::new("x.toml");
        let e = CollectorConfig::from_toml("retension = \"1d\"\n", p).expect_err("unknown key");
        assert!(e.to_string().contains("retension"), "{e}");
        let e = CollectorConfig::from_toml("[limits]\nmax_labels_per_series = \"many\"\n", p)
            .expect_err("type");
        assert!(e.to_string().contains("max_labels_per_series"), "{e}");
        let e = CollectorConfig::from_toml("database_url = \"mysql://x\"\n", p)
            .expect("parses")
            .validate()
            .expect_err("bad url");
        assert!(e.to_string().contains("database_url"), "{e}");
        let cli = Cli::try_parse_from([
            "nunchi-collector",
            "--retention",
            "2h",
            "--data-dir",
            "/tmp/x",
        ])
        .expect("parses");
        let c = cli.resolve().expect("resolves");
        assert_eq!(
            (c.retention, c.data_dir),
            (Duration::from_secs(7200), PathBuf::from("/tmp/x"))
        );
    }
}

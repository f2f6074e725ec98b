//! Agent configuration: a TOML file, `NUNCHI_AGENT_*` environment variables and flags,
//! flags winning over the environment and both over the file. Every field below is
//! documented where it is declared; that text is the reference (`--help` shows it too).
//!
//! [`AgentConfig::validate`] is pure (no I/O); errors name the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use clap::Parser;
use nunchi_cli::invalid;
use nunchi_model::{is_valid_label_name, parse_label_pair};
use serde::{Deserialize, Serialize};

pub use nunchi_cli::ConfigError;
use std::collections::BTreeMap;
use url::Url;

/// How buffered data is replayed after an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayOrder {
    /// Live samples are sent at once; the backlog drains behind them, oldest first. For
    /// receivers that accept out-of-order samples (nunchi's collector, VictoriaMetrics).
    LiveFirst,
    /// Live samples wait behind the backlog, so every series arrives in time order. For
    /// receivers that reject out-of-order samples (a stock Prometheus).
    InOrder,
}

/// A local Prometheus endpoint the agent scrapes.
pub use nunchi_scrape::ScrapeTarget;

/// The agent's settings. Field docs are the reference documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// How often host metrics are collected, targets scraped and a batch pushed.
    /// Default `1s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Address of the agent's own `/metrics` page. Default `127.0.0.1:9101`.
    pub listen: SocketAddr,
    /// remote_write endpoints to push to, each with its own buffer and retry state.
    /// Default: none (the agent then only serves `/metrics`).
    pub push_url: Vec<Url>,
    /// Bearer token sent with every push. Default: none.
    pub token: Option<String>,
    /// File holding the bearer token (trailing whitespace trimmed); re-read at start.
    /// Default: none.
    pub token_file: Option<PathBuf>,
    /// PEM file of extra CA certificates trusted for `https` push and scrape URLs, in
    /// addition to the system's (for a private CA or a self-signed receiver). Default: none.
    pub ca_file: Option<PathBuf>,
    /// Local Prometheus endpoints to scrape every interval. Default: none.
    pub scrape: Vec<ScrapeTarget>,
    /// How long a scrape may take before it counts as failed (`up` = 0). Default `10s`,
    /// capped at the interval.
    #[serde(with = "humantime_serde")]
    pub scrape_timeout: Duration,
    /// Value of the `host` label on every series. Default: this machine's hostname.
    pub hostname: Option<String>,
    /// Extra labels added to every series.
    pub labels: BTreeMap<String, String>,
    /// Directory of the on-disk buffer (one subdirectory per push URL).
    /// Default `data/agent-buffer`.
    pub buffer_dir: PathBuf,
    /// Most disk the buffer may use per push URL; when full the oldest data is dropped and
    /// counted in `nunchi_agent_samples_dropped_total`. Default `256 MiB`, minimum `64 KiB`.
    pub buffer_max_size: ByteSize,
    /// Replay order after an outage: `live-first` (default) or `in-order`.
    pub replay: ReplayOrder,
    /// Time limit for one push request. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub push_timeout: Duration,
    /// First retry delay after a failed push; doubles per failure, with jitter.
    /// Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub retry_min_backoff: Duration,
    /// Longest retry delay. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            interval: Duration::from_secs(1),
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            push_url: Vec::new(),
            token: None,
            token_file: None,
            ca_file: None,
            scrape: Vec::new(),
            scrape_timeout: Duration::from_secs(10),
            hostname: None,
            labels: BTreeMap::new(),
            buffer_dir: PathBuf::from("data/agent-buffer"),
            buffer_max_size: ByteSize::mib(256),
            replay: ReplayOrder::LiveFirst,
            push_timeout: Duration::from_secs(10),
            retry_min_backoff: Duration::from_millis(250),
            retry_max_backoff: Duration::from_secs(5),
        }
    }
}

impl AgentConfig {
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
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("interval", "must be between 10ms and 1h"));
        }
        for url in &self.push_url {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "push_url",
                    format!("{url}: scheme must be http or https"),
                ));
            }
        }
        for t in &self.scrape {
            if !matches!(t.url.scheme(), "http" | "https") {
                return Err(invalid(
                    "scrape",
                    format!("{}: scheme must be http or https", t.url),
                ));
            }
            if t.job.is_empty() {
                return Err(invalid(
                    "scrape",
                    format!("{}: job must not be empty", t.url),
                ));
            }
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid(
                "token_file",
                "set either token or token_file, not both",
            ));
        }
        if self.scrape_timeout.is_zero() {
            return Err(invalid("scrape_timeout", "must be greater than zero"));
        }
        if self.push_timeout.is_zero() {
            return Err(invalid("push_timeout", "must be greater than zero"));
        }
        if self.retry_min_backoff.is_zero() || self.retry_min_backoff > self.retry_max_backoff {
            return Err(invalid(
                "retry_min_backoff",
                "must be greater than zero and at most retry_max_backoff",
            ));
        }
        if self.buffer_max_size.as_u64() < 64 * 1024 {
            return Err(invalid("buffer_max_size", "must be at least 64 KiB"));
        }
        if let Some(h) = &self.hostname
            && h.is_empty()
        {
            return Err(invalid("hostname", "must not be empty"));
        }
        for name in self.labels.keys() {
            if !is_valid_label_name(name) || name.starts_with("__") {
                return Err(invalid(
                    "labels",
                    format!("{name:?} is not a usable label name"),
                ));
            }
            if matches!(name.as_str(), "host" | "instance" | "job") {
                return Err(invalid(
                    "labels",
                    format!("{name:?} is set by the agent itself"),
                ));
            }
        }
        Ok(())
    }

    /// The scrape timeout in force: the configured one, capped at the interval.
    pub fn effective_scrape_timeout(&self) -> Duration {
        self.scrape_timeout.min(self.interval)
    }
}

/// Command line of `nunchi-agent`. Each flag may also be set through the environment
/// variable shown, and in the `--config` file under the key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "nunchi-agent",
    version,
    about = "Per-host agent: collects host metrics in node_exporter's names, scrapes local \
             Prometheus endpoints, and pushes everything with Prometheus remote_write, \
             buffering on disk while the receiver is unreachable.",
    long_about = None,
    after_help = "Precedence: flags > NUNCHI_AGENT_* environment > --config file > defaults.\n\
                  Durations take units (250ms, 10s, 5m); sizes too (64KiB, 256MiB, 1GB).\n\
                  Logging: NUNCHI_LOG=info (default), or e.g. NUNCHI_LOG=debug,hyper=info.\n\
                  Stops cleanly on SIGTERM or Ctrl-C, writing undelivered samples to the buffer."
)]
pub struct Cli {
    /// TOML config file; keys as named in each option's help.
    #[arg(long, env = "NUNCHI_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Collection and push interval [key: interval] [default: 1s].
    #[arg(long, env = "NUNCHI_AGENT_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,
    /// Address for the agent's own /metrics [key: listen] [default: 127.0.0.1:9101].
    #[arg(long, env = "NUNCHI_AGENT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// remote_write endpoint; repeat for several (comma-separated in the env var) [key: push_url].
    #[arg(
        long = "push-url",
        env = "NUNCHI_AGENT_PUSH_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub push_url: Vec<Url>,
    /// Bearer token for pushes [key: token].
    #[arg(
        long,
        env = "NUNCHI_AGENT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File containing the bearer token [key: token_file].
    #[arg(long, env = "NUNCHI_AGENT_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Extra trusted CA certificates (PEM) for https URLs [key: ca_file].
    #[arg(long, env = "NUNCHI_AGENT_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Local /metrics endpoint to scrape, as [JOB=]URL; repeatable [key: scrape, tables with url and job] [default job: scrape].
    #[arg(
        long,
        env = "NUNCHI_AGENT_SCRAPE",
        value_delimiter = ',',
        value_name = "[JOB=]URL"
    )]
    pub scrape: Vec<ScrapeTarget>,
    /// Scrape time limit, capped at the interval [key: scrape_timeout] [default: 10s].
    #[arg(long, env = "NUNCHI_AGENT_SCRAPE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub scrape_timeout: Option<Duration>,
    /// Value of the `host` label [key: hostname] [default: this machine's hostname].
    #[arg(long, env = "NUNCHI_AGENT_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Extra label for every series, as NAME=VALUE; repeatable [key: labels, a table].
    #[arg(long = "label", env = "NUNCHI_AGENT_LABEL", value_delimiter = ',', value_name = "NAME=VALUE", value_parser = parse_label_arg)]
    pub labels: Vec<(String, String)>,
    /// Directory for the on-disk buffer [key: buffer_dir] [default: data/agent-buffer].
    #[arg(long, env = "NUNCHI_AGENT_BUFFER_DIR", value_name = "DIR")]
    pub buffer_dir: Option<PathBuf>,
    /// Disk cap per push URL; oldest data is dropped past it [key: buffer_max_size] [default: 256MiB].
    #[arg(long, env = "NUNCHI_AGENT_BUFFER_MAX_SIZE", value_name = "SIZE")]
    pub buffer_max_size: Option<ByteSize>,
    /// Replay order after an outage [key: replay] [default: live-first].
    #[arg(long, env = "NUNCHI_AGENT_REPLAY", value_enum, value_name = "ORDER")]
    pub replay: Option<ReplayOrder>,
    /// Time limit per push request [key: push_timeout] [default: 10s].
    #[arg(long, env = "NUNCHI_AGENT_PUSH_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub push_timeout: Option<Duration>,
    /// First retry delay, doubled per failure with jitter [key: retry_min_backoff] [default: 250ms].
    #[arg(long, env = "NUNCHI_AGENT_RETRY_MIN_BACKOFF", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retry_min_backoff: Option<Duration>,
    /// Longest retry delay [key: retry_max_backoff] [default: 5s].
    #[arg(long, env = "NUNCHI_AGENT_RETRY_MAX_BACKOFF", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retry_max_backoff: Option<Duration>,
    /// Validate the configuration, print it as TOML and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn parse_label_arg(s: &str) -> Result<(String, String), String> {
    parse_label_pair(s).map_err(|e| e.to_string())
}

impl Cli {
    /// Resolves the final configuration: the file (if any), overridden by flags and
    /// environment, then validated.
    pub fn resolve(&self) -> Result<AgentConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => AgentConfig::from_file(path)?,
            None => AgentConfig::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        take!(
            interval,
            listen,
            scrape_timeout,
            buffer_dir,
            buffer_max_size,
            replay,
            push_timeout,
            retry_min_backoff,
            retry_max_backoff
        );
        if self.token.is_some() || self.token_file.is_some() {
            c.token = self.token.clone();
            c.token_file = self.token_file.clone();
        }
        if self.hostname.is_some() {
            c.hostname = self.hostname.clone();
        }
        if self.ca_file.is_some() {
            c.ca_file = self.ca_file.clone();
        }
        if !self.push_url.is_empty() {
            c.push_url = self.push_url.clone();
        }
        if !self.scrape.is_empty() {
            c.scrape = self.scrape.clone();
        }
        for (k, v) in &self.labels {
            c.labels.insert(k.clone(), v.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nunchi-agent").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agent.example.toml"));
        let c = AgentConfig::from_file(path).expect("example parses");
        c.validate().expect("example validates");
        assert_eq!(c.replay, ReplayOrder::LiveFirst);
        assert_eq!(c.scrape[0].job, "feed-app");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.toml");
        std::fs::write(
            &file,
            "interval = \"5s\"\nreplay = \"in-order\"\n[labels]\ndc = \"eu\"\n",
        )
        .expect("write");
        let c = cli(&[
            "--config",
            file.to_str().expect("utf8"),
            "--interval",
            "2s",
            "--label",
            "rack=r1",
        ])
        .resolve()
        .expect("resolves");
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.replay, ReplayOrder::InOrder);
        assert_eq!(c.labels.get("dc").map(String::as_str), Some("eu"));
        assert_eq!(c.labels.get("rack").map(String::as_str), Some("r1"));
    }

    #[test]
    fn errors_name_the_key() {
        let p = Path::new("x.toml");
        let e = AgentConfig::from_toml("intervall = \"1s\"\n", p).expect_err("unknown key");
        assert!(e.to_string().contains("intervall"), "{e}");
        let e = AgentConfig::from_toml("interval = \"soon\"\n", p).expect_err("bad duration");
        assert!(e.to_string().contains("interval"), "{e}");
        let e = AgentConfig::from_toml("buffer_max_size = \"1KiB\"\n", p)
            .expect("parses")
            .validate()
            .expect_err("too small");
        assert!(e.to_string().contains("buffer_max_size"), "{e}");
        let e = AgentConfig::from_toml("[labels]\njob = \"x\"\n", p)
            .expect("parses")
            .validate()
            .expect_err("reserved");
        assert!(e.to_string().contains("labels"), "{e}");
        assert!(Cli::try_parse_from(["nunchi-agent", "--label", "1a=b"]).is_err());
    }

    #[test]
    fn scrape_flag_takes_an_optional_job() {
        let t: ScrapeTarget = "feed=http://127.0.0.1:8080/metrics"
            .parse()
            .expect("parses");
        assert_eq!((t.job.as_str(), t.url.port()), ("feed", Some(8080)));
        let t: ScrapeTarget = "http://127.0.0.1:8080/metrics?a=b".parse().expect("parses");
        assert_eq!(t.job, "scrape");
    }
}

//! `feed-loadgen`: creates a population (users and a skewed follow graph) on a running
//! feed service, then drives feed reads and posts at a target rate, open-loop: requests
//! start on schedule whether or not earlier ones finished, and latency is measured from
//! the scheduled start, so a slow server cannot hide its queueing (no coordinated
//! omission). Popularity is Zipf-distributed: a few users are followed by many and a few
//! readers are very active.
//!
//! Profiles: `steady` holds the rate; `flash-sale` multiplies it at `spike_at` for
//! `spike_for`, then returns to it (the "special sale at 2 pm").

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use tokio::sync::Semaphore;

/// Load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A constant rate.
    Steady,
    /// The rate times `spike_multiplier` from `spike_at` for `spike_for`.
    FlashSale,
}

/// Command line of `feed-loadgen`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "feed-loadgen",
    version,
    about = "Load generator for feed-app: builds a population with a skewed follow graph, then \
             drives feed reads and posts at a target rate (open-loop), printing progress every \
             second and throughput and latency percentiles at the end."
)]
pub struct LoadgenConfig {
    /// Base URL of the feed service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Requests per second (the base rate).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long to drive load (after setup).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load shape.
    #[arg(long, value_enum, default_value = "steady")]
    pub profile: Profile,
    /// Users to create.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Follows per user (Zipf-distributed over followees).
    #[arg(long, default_value_t = 50)]
    pub follows: usize,
    /// Share of requests that read a feed; the rest post.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Most requests in flight; beyond it new requests wait (and their wait counts in
    /// their latency).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Read every user's feed once before the run, so reads start from a warm cache.
    #[arg(long)]
    pub warm: bool,
    /// Flash sale: when the spike starts, from the start of the run.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub spike_at: Duration,
    /// Flash sale: how long the spike lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub spike_for: Duration,
    /// Flash sale: the spike's multiple of the base rate.
    #[arg(long, default_value_t = 5.0)]
    pub spike_multiplier: f64,
}

impl LoadgenConfig {
    /// The target rate at `t` into the run.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self.profile {
            Profile::Steady => self.rate,
            Profile::FlashSale if t >= self.spike_at && t < self.spike_at + self.spike_for => {
                self.rate * self.spike_multiplier
            }
            Profile::FlashSale => self.rate,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return Err("--rate must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err("--read-ratio must be between 0 and 1".into());
        }
        if self.users < 2 {
            return Err("--users must be at least 2".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if !self.spike_multiplier.is_finite() || self.spike_multiplier <= 0.0 {
            return Err("--spike-multiplier must be positive".into());
        }
        Ok(())
    }
}

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A setup request failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
}

/// Latency and outcome of one kind of request.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency in microseconds, successes only.
    pub latency_us: Histogram<u64>,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed or were answered otherwise.
    pub errors: u64,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("histogram")),
            ok: 0,
            errors: 0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Feed reads.
    pub reads: OpStats,
    /// Posts.
    pub posts: OpStats,
    /// Wall time of the load phase.
    pub elapsed: Duration,
}

impl Report {
    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        (self.reads.ok + self.posts.ok) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A human-readable summary: throughput and p50/p90/p99/max per request kind.
    pub fn render(&self) -> String {
        let mut out = format!(
            "load: {:.1}s, {:.0} requests/s completed\n",
            self.elapsed.as_secs_f64(),
            self.throughput()
        );
        for (name, s) in [("feed reads", &self.reads), ("posts", &self.posts)] {
            let ms = |q: f64| s.latency_us.value_at_quantile(q) as f64 / 1000.0;
            out.push_str(&format!(
                "{name:>10}: {} ok, {} errors, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                s.ok,
                s.errors,
                ms(0.5),
                ms(0.9),
                ms(0.99),
                s.latency_us.max() as f64 / 1000.0
            ));
        }
        out
    }
}

/// Creates the population; returns user ids (index 0 is the most popular).
pub async fn setup(
    client: &reqwest::Client,
    cfg: &LoadgenConfig,
) -> Result<Vec<i64>, LoadgenError> {
    let run: u32 = rand::rng().random();
    let names: Vec<String> = (0..cfg.users).map(|i| format!("lg{run:08x}_{i}")).collect();
    let created: Vec<Result<i64, String>> =
        futures_util::stream::iter(names.iter().map(|name| async move {
            let resp = client
                .post(format!("{}/api/users", cfg.target))
                .json(&serde_json::json!({ "name": name }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            v["id"]
                .as_i64()
                .ok_or_else(|| format!("HTTP {status}: {v}"))
        }))
        .buffered(32)
        .collect()
        .await;
    let users: Vec<i64> = created
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(LoadgenError::Setup)?;
    eprintln!("setup: {} users created", users.len());
    let zipf =
        Zipf::new(users.len() as f64, 1.1).map_err(|e| LoadgenError::Setup(e.to_string()))?;
    let mut pairs = Vec::new();
    {
        let mut rng = rand::rng();
        for (i, u) in users.iter().enumerate() {
            let mut chosen = std::collections::HashSet::new();
            for _ in 0..cfg.follows.min(users.len() - 1) * 2 {
                let j = (zipf.sample(&mut rng) as usize)
                    .saturating_sub(1)
                    .min(users.len() - 1);
                if j != i && chosen.insert(j) && chosen.len() >= cfg.follows {
                    break;
                }
            }
            pairs.extend(chosen.into_iter().map(|j| (*u, users[j])));
        }
    }
    let total = pairs.len();
    let failures: usize = futures_util::stream::iter(pairs.into_iter().map(|(a, b)| async move {
        let r = client
            .put(format!("{}/api/follows/{b}", cfg.target))
            .header("x-user-id", a.to_string())
            .send()
            .await;
        usize::from(!r.is_ok_and(|r| r.status().is_success()))
    }))
    .buffer_unordered(32)
    .fold(0, |acc, f| async move { acc + f })
    .await;
    if failures > 0 {
        return Err(LoadgenError::Setup(format!(
            "{failures} of {total} follows failed"
        )));
    }
    eprintln!("setup: {total} follows created");
    if cfg.warm {
        futures_util::stream::iter(users.iter().map(|u| {
            client
                .get(format!("{}/api/feed", cfg.target))
                .header("x-user-id", u.to_string())
                .send()
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
        eprintln!("setup: {} feeds read once (cache warm)", users.len());
    }
    Ok(users)
}

/// Drives load on `users` for `cfg.duration`, printing progress each second.
pub async fn drive(client: &reqwest::Client, cfg: &LoadgenConfig, users: &[i64]) -> Report {
    let stats = Arc::new(Mutex::new((OpStats::new(), OpStats::new())));
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let zipf = Zipf::new(users.len() as f64, 1.0).ok();
    let users: Arc<Vec<i64>> = Arc::new(users.to_vec());
    let start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut scheduled = 0f64;
    let mut last_counts = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        let t = start.elapsed();
        if t >= cfg.duration {
            break;
        }
        scheduled += cfg.rate_at(t) / 1000.0;
        while scheduled >= 1.0 {
            scheduled -= 1.0;
            let (user, read) = {
                let mut rng = rand::rng();
                let i = zipf.map_or(0, |z| (z.sample(&mut rng) as usize).saturating_sub(1));
                (
                    users[i.min(users.len() - 1)],
                    rng.random_bool(cfg.read_ratio),
                )
            };
            let due = Instant::now();
            let (client, stats, permits, target) = (
                client.clone(),
                stats.clone(),
                permits.clone(),
                cfg.target.clone(),
            );
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else { return };
                let req = if read {
                    client.get(format!("{target}/api/feed?limit=20")).header("x-user-id", user.to_string())
                } else {
                    client
                        .post(format!("{target}/api/posts"))
                        .header("x-user-id", user.to_string())
                        .json(&serde_json::json!({ "text": "flash sale! 50% off until 3 pm", "link": "https://shop.example/sale" }))
                };
                let ok = match req.send().await {
                    Ok(r) => {
                        let s = r.status().is_success();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => false,
                };
                let us = due.elapsed().as_micros() as u64;
                if let Ok(mut g) = stats.lock() {
                    let op = if read { &mut g.0 } else { &mut g.1 };
                    if ok {
                        op.ok += 1;
                        let _ = op.latency_us.record(us.max(1));
                    } else {
                        op.errors += 1;
                    }
                }
            });
        }
        while tasks.try_join_next().is_some() {}
        if t >= next_report {
            next_report += Duration::from_secs(1);
            if let Ok(g) = stats.lock() {
                let done = (g.0.ok + g.1.ok, g.0.errors + g.1.errors);
                let p99 = g.0.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
                eprintln!(
                    "t={:>4}s target {:>6.0}/s  done {:>6}/s  errors {:>4}  in flight {:>4}  read p99 {:.2} ms",
                    t.as_secs(),
                    cfg.rate_at(t),
                    done.0 - last_counts.0,
                    done.1 - last_counts.1,
                    cfg.concurrency - permits.available_permits(),
                    p99
                );
                last_counts = done;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let (reads, posts) = stats
        .lock()
        .map(|g| (g.0.clone(), g.1.clone()))
        .unwrap_or((OpStats::new(), OpStats::new()));
    Report {
        reads,
        posts,
        elapsed,
    }
}

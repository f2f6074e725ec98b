//! `nunchi-stack`: the whole stack on this machine (see the crate docs), until Ctrl-C; or,
//! with `--scenario flash-sale`, the flash-sale story, step by step, then exit.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nunchi_stack::{Stack, StackOptions, absolute, scenario};

/// The whole nunchi stack on this machine: the collector with its default rules, the
/// scaling rules and the dashboard; feed-app instances, each with a nunchi-agent, behind a
/// round-robin load balancer; a local Slack API that logs what it would have posted; a
/// local autoscaler that consumes the scale webhooks and adds or removes instances; and
/// the load generator on a steady profile. Ctrl-C stops everything.
#[derive(Parser, Debug)]
#[command(name = "nunchi-stack", version)]
struct Cli {
    /// Directory holding nunchi-collector, nunchi-agent, feed-app and feed-loadgen.
    #[arg(long, default_value = "target/release", value_name = "DIR")]
    bin_dir: PathBuf,
    /// Where every part keeps its data and logs (wiped at start).
    #[arg(long, default_value = "data/stack", value_name = "DIR")]
    data_dir: PathBuf,
    /// Port of the collector (Prometheus API and dashboard).
    #[arg(long, default_value_t = 9300)]
    port: u16,
    /// Port of the load balancer in front of the feed-app instances.
    #[arg(long, default_value_t = 8080)]
    balancer_port: u16,
    /// Use PostgreSQL (collector and feed-app) at this URL instead of SQLite files.
    #[arg(long, env = "NUNCHI_STACK_POSTGRES", value_name = "URL")]
    postgres: Option<String>,
    /// Use Redis (feed-app's cache) at this URL instead of in-process caches.
    #[arg(long, env = "NUNCHI_STACK_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Steady load, requests/s through the balancer (0: none).
    #[arg(long, default_value_t = 8.0)]
    rate: f64,
    /// Instances at start, and the fewest scale-in leaves.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Most instances scale-out adds up to.
    #[arg(long, default_value_t = 4)]
    max_instances: usize,
    /// Cooldown between scale actions.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    cooldown: Duration,
    /// Run a scenario, then stop: `flash-sale`.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Extra requests/s during the flash sale.
    #[arg(long, default_value_t = 22.0)]
    spike_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    nunchi_cli::init_logging("NUNCHI_LOG", &[]);
    if let Some(s) = &cli.scenario
        && s != "flash-sale"
    {
        anyhow::bail!("--scenario: unknown scenario {s:?} (known: flash-sale)");
    }
    let data_dir = absolute(&cli.data_dir);
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let o = StackOptions {
        bin_dir: absolute(&cli.bin_dir),
        data_dir,
        collector_port: cli.port,
        balancer_port: cli.balancer_port,
        postgres_url: cli.postgres.clone(),
        redis_url: cli.redis.clone(),
        instances: cli.instances.max(1),
        max_instances: cli.max_instances,
        cooldown: cli.cooldown,
        load_rate: cli.rate,
        ..StackOptions::default()
    };
    let stack = Stack::start(o, |step| eprintln!("nunchi-stack: starting {step}")).await?;
    println!("dashboard:    {}/", stack.collector_url);
    println!("feed service: {}/", stack.balancer_url);
    println!("Slack (local): messages are logged here; Ctrl-C stops everything.");
    let outcome = match cli.scenario.as_deref() {
        Some(_) => {
            let run = scenario::flash_sale(&stack, cli.spike_rate, |s| {
                println!("+{:>6.1} s  {}", s.after.as_secs_f64(), s.what)
            });
            tokio::select! {
                r = run => r.map(|r| {
                    if let Some(p) = r.page_after {
                        println!("load jump to Slack page: {:.1} s", p.as_secs_f64());
                    }
                }).map_err(anyhow::Error::from),
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        None => {
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    };
    eprintln!("nunchi-stack: stopping");
    stack.stop().await;
    outcome
}

//! `feed-loadgen`: sets up a population on a feed-app and drives load at it. See
//! `feed-loadgen --help`.

use anyhow::Context;
use clap::Parser;
use nunchi_feed_app::loadgen::{self, LoadgenConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = LoadgenConfig::parse();
    if let Err(e) = cfg.validate() {
        eprintln!("feed-loadgen: {e}");
        std::process::exit(2);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let users = loadgen::setup(&client, &cfg)
        .await
        .context("cannot set up the population")?;
    eprintln!(
        "load: {:?} profile at {} requests/s for {:?}",
        cfg.profile, cfg.rate, cfg.duration
    );
    let report = loadgen::drive(&client, &cfg, &users).await;
    print!("{}", report.render());
    Ok(())
}

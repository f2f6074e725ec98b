//! Pulling `/metrics` pages from configured targets on an interval, with Prometheus'
//! semantics (`up`, `scrape_duration_seconds`, `job`/`instance` labels, staleness markers;
//! see `nunchi_scrape`). Scraped samples take the same path as pushed ones: WAL, then head
//! (or the remote storage).

use std::time::Duration;

use nunchi_model::Labels;
use nunchi_scrape::{ScrapeTarget, Scraper};
use tokio::sync::watch;

use crate::storage::now_ms;
use crate::store::SharedStore;

/// Scrapes `targets` every `interval` until `shutdown` turns true.
pub async fn run(
    backend: SharedStore,
    client: reqwest::Client,
    targets: Vec<ScrapeTarget>,
    interval: Duration,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if targets.is_empty() {
        return;
    }
    let mut scraper = Scraper::new(client, &targets, timeout.min(interval));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let none = Labels::new();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        out.clear();
        scraper.scrape_all(&none, now_ms(), &mut out).await;
        if let Err(e) = backend.write_series(&out).await {
            tracing::error!(error = %e, "storing scraped samples failed");
        }
    }
}

//! The load generator against a real feed service: it builds its population, drives both
//! kinds of request, and the flash-sale profile raises the rate only inside the spike.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{CacheKind, Service, Store};
use nunchi_feed_app::loadgen::{self, LoadgenConfig, Profile};

#[test]
fn flash_sale_multiplies_the_rate_only_during_the_spike() {
    let cfg = LoadgenConfig::parse_from([
        "feed-loadgen",
        "--profile",
        "flash-sale",
        "--rate",
        "100",
        "--spike-at",
        "10s",
        "--spike-for",
        "5s",
        "--spike-multiplier",
        "4",
    ]);
    assert_eq!(cfg.profile, Profile::FlashSale);
    assert_eq!(cfg.rate_at(Duration::from_secs(9)), 100.0);
    assert_eq!(cfg.rate_at(Duration::from_secs(10)), 400.0);
    assert_eq!(cfg.rate_at(Duration::from_millis(14_999)), 400.0);
    assert_eq!(cfg.rate_at(Duration::from_secs(15)), 100.0);
    assert!(
        LoadgenConfig::parse_from(["feed-loadgen", "--read-ratio", "1.5"])
            .validate()
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_reads_and_posts_against_the_service() {
    let s = Service::start(Store::Sqlite, CacheKind::Memory, |_| {}).await;
    let cfg = LoadgenConfig::parse_from([
        "feed-loadgen",
        "--target",
        &s.base,
        "--users",
        "30",
        "--follows",
        "5",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--read-ratio",
        "0.8",
        "--warm",
    ]);
    let client = reqwest::Client::new();
    let users = loadgen::setup(&client, &cfg).await.expect("setup");
    assert_eq!(users.len(), 30);
    let report = loadgen::drive(&client, &cfg, &users).await;
    assert_eq!(
        report.reads.errors + report.posts.errors,
        0,
        "{}",
        report.render()
    );
    assert!(
        report.reads.ok > 100 && report.posts.ok > 10,
        "{}",
        report.render()
    );
    assert!(report.render().contains("p99"));
    assert!(s.metric("feed_posts_total").await >= report.posts.ok as f64);
    assert!(s.metric("feed_dau").await >= 1.0);
    s.stop().await;
}

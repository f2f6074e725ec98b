//! The metrics move with what the service does: cache hits and misses for a known sequence
//! of reads, pool gauges under real concurrent use, DAU/MAU equal to the users who acted,
//! request counts by route, and no instrumentation at all with `--metrics false`.

#[macro_use]
mod common;

use common::{CacheKind, Service, Store};
use reqwest::StatusCode;

async fn cache_hits_and_misses_follow_a_known_sequence(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let (author, reader) = (s.user("author").await, s.user("reader").await);
    s.follow(reader, author).await;
    let p1 = s.post(author, "one").await; // cached as written
    let q = |cache: &str, result: &str| {
        format!(r#"feed_cache_requests_total{{cache="{cache}",result="{result}"}}"#)
    };
    // Read 1: feed miss (rebuilt from the database), celebrity list miss, post hit.
    assert_eq!(s.feed(reader, "").await.0, vec![p1]);
    assert_eq!(s.metric(&q("feed", "miss")).await, 1.0);
    assert_eq!(s.metric(&q("feed", "hit")).await, 0.0);
    assert_eq!(s.metric(&q("celebrities", "miss")).await, 1.0);
    assert_eq!(s.metric(&q("post", "hit")).await, 1.0);
    assert_eq!(s.metric(&q("post", "miss")).await, 0.0);
    // Reads 2 and 3: everything from the cache.
    s.feed(reader, "").await;
    s.feed(reader, "").await;
    assert_eq!(s.metric(&q("feed", "hit")).await, 2.0);
    assert_eq!(s.metric(&q("feed", "miss")).await, 1.0);
    assert_eq!(s.metric(&q("celebrities", "hit")).await, 2.0);
    assert_eq!(s.metric(&q("post", "hit")).await, 3.0);
    // Following someone invalidates the reader's feed: one more miss.
    let other = s.user("other").await;
    s.follow(reader, other).await;
    s.feed(reader, "").await;
    assert_eq!(s.metric(&q("feed", "miss")).await, 2.0);
    assert_eq!(
        s.metric(r#"http_requests_total{route="/api/feed",method="GET",status="200"}"#)
            .await,
        4.0
    );
    assert_eq!(s.metric("feed_reads_total").await, 4.0);
    assert_eq!(s.metric("feed_posts_total").await, 1.0);
    s.stop().await;
}

async fn pool_gauges_reflect_connections_in_use(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |c| c.db_max_connections = 6).await;
    assert_eq!(s.metric("feed_db_pool_max_connections").await, 6.0);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(s.state.db.acquire().await.expect("connection"));
    }
    assert_eq!(
        s.metric(r#"feed_db_pool_connections{state="in_use"}"#)
            .await,
        3.0
    );
    let acquires = s.metric("feed_db_pool_acquire_seconds_count").await;
    assert!(acquires >= 3.0);
    drop(held);
    s.eventually("connections returned", || async {
        s.metric(r#"feed_db_pool_connections{state="in_use"}"#)
            .await
            == 0.0
    })
    .await;
    assert!(s.metric(r#"feed_db_pool_connections{state="idle"}"#).await >= 3.0);
    s.stop().await;
}

async fn dau_and_mau_count_distinct_users_who_acted(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let users: Vec<i64> = futures_util::future::join_all((0..6).map(|i| {
        let s = &s;
        async move { s.user(&format!("u{i}")).await }
    }))
    .await;
    assert_eq!(
        s.metric("feed_dau").await,
        0.0,
        "creating an account is not activity"
    );
    s.feed(users[0], "").await;
    s.feed(users[0], "").await;
    s.post(users[1], "hello").await;
    s.follow(users[2], users[0]).await;
    s.feed(users[3], "limit=5").await;
    assert_eq!(s.metric("feed_dau").await, 4.0);
    assert_eq!(s.metric("feed_mau").await, 4.0);
    s.stop().await;
}

mod on_all_backends {
    use super::*;
    on_every_backend!([(Store::Sqlite, CacheKind::Memory), (Store::Postgres, CacheKind::Redis)];
        cache_hits_and_misses_follow_a_known_sequence,
        pool_gauges_reflect_connections_in_use,
        dau_and_mau_count_distinct_users_who_acted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_switched_off() {
    let s = Service::start(Store::Sqlite, CacheKind::Memory, |c| c.metrics = false).await;
    let u = s.user("quiet").await;
    assert_eq!(s.feed(u, "").await.0, Vec::<i64>::new());
    let (status, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failures_are_503_json_and_counted() {
    let s = Service::start(Store::Sqlite, CacheKind::Memory, |_| {}).await;
    let u = s.user("victim").await;
    s.feed(u, "").await;
    assert_eq!(s.metric("feed_db_errors_total").await, 0.0);
    s.state.db.pool().close().await;
    let (status, v) = s
        .call(
            "POST",
            "/api/posts",
            Some(u),
            Some(serde_json::json!({ "text": "lost?" })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        v["error"], "database unavailable",
        "internals are not leaked"
    );
    assert!(s.metric("feed_db_errors_total").await >= 1.0);
}

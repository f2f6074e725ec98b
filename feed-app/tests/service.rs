//! The feed service over real HTTP, against SQLite with the in-process cache and against
//! the PostgreSQL and Redis servers on this machine. Each scenario runs on every backend.

#[macro_use]
mod common;

use common::{CacheKind, Service, Store};
use reqwest::StatusCode;
use serde_json::json;

const BACKENDS: [(Store, CacheKind); 3] = [
    (Store::Sqlite, CacheKind::Memory),
    (Store::Postgres, CacheKind::Redis),
    (Store::Sqlite, CacheKind::Redis),
];

async fn feed_order_and_pagination(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let (a, b, reader) = (s.user("a").await, s.user("b").await, s.user("reader").await);
    assert_eq!(s.follow(reader, a).await, StatusCode::NO_CONTENT);
    assert_eq!(s.follow(reader, b).await, StatusCode::NO_CONTENT);
    assert_eq!(
        s.follow(reader, b).await,
        StatusCode::NO_CONTENT,
        "following twice is harmless"
    );
    let stranger = s.user("stranger").await;
    s.post(stranger, "not followed").await;
    let mut posted = Vec::new();
    for i in 0..25 {
        posted.push(
            s.post(if i % 2 == 0 { a } else { b }, &format!("story {i}"))
                .await,
        );
    }
    posted.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let q = match cursor {
            Some(c) => format!("limit=10&cursor={c}"),
            None => "limit=10".into(),
        };
        let (ids, next) = s.feed(reader, &q).await;
        assert!(ids.len() <= 10);
        seen.extend(ids);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen, posted,
        "every followed story once, newest first, none from strangers"
    );
    s.stop().await;
}

async fn fan_out_reaches_cached_feeds(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let (author, f1, f2) = (
        s.user("author").await,
        s.user("f1").await,
        s.user("f2").await,
    );
    s.follow(f1, author).await;
    s.follow(f2, author).await;
    // Cache both followers' (empty) feeds, then post: the post must reach the cached feeds.
    assert!(s.feed(f1, "").await.0.is_empty());
    assert!(s.feed(f2, "").await.0.is_empty());
    let lag_before = s.metric("feed_fanout_lag_seconds_count").await;
    let post = s.post(author, "fresh").await;
    s.eventually("fan-out done", || async {
        s.metric("feed_fanout_lag_seconds_count").await > lag_before
    })
    .await;
    let misses = s
        .metric(r#"feed_cache_requests_total{cache="feed",result="miss"}"#)
        .await;
    for f in [f1, f2] {
        assert_eq!(s.feed(f, "").await.0, vec![post]);
    }
    assert_eq!(
        s.metric(r#"feed_cache_requests_total{cache="feed",result="miss"}"#)
            .await,
        misses,
        "served from the cached feeds that fan-out updated, not rebuilt from the database"
    );
    s.stop().await;
}

async fn celebrities_are_merged_at_read_time(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |c| c.celebrity_threshold = 2).await;
    let celeb = s.user("celeb").await;
    let normal = s.user("normal").await;
    let reader = s.user("reader").await;
    for name in ["fan1", "fan2"] {
        let fan = s.user(name).await;
        s.follow(fan, celeb).await;
    }
    s.follow(reader, celeb).await; // third follower: now above the threshold
    s.follow(reader, normal).await;
    assert!(s.feed(reader, "").await.0.is_empty());
    let lag_before = s.metric("feed_fanout_lag_seconds_count").await;
    let p1 = s.post(normal, "from a normal user").await;
    s.eventually("normal post fanned out", || async {
        s.metric("feed_fanout_lag_seconds_count").await > lag_before
    })
    .await;
    let p2 = s.post(celeb, "from a celebrity").await;
    let p3 = s.post(normal, "normal again").await;
    s.eventually("second normal post fanned out", || async {
        s.metric("feed_fanout_lag_seconds_count").await >= lag_before + 2.0
    })
    .await;
    assert_eq!(
        s.feed(reader, "").await.0,
        vec![p3, p2, p1],
        "celebrity post merged in time order"
    );
    assert_eq!(
        s.metric("feed_fanout_lag_seconds_count").await,
        lag_before + 2.0,
        "the celebrity's post was not fanned out on write"
    );
    s.stop().await;
}

/// Method, path, acting user, JSON body, expected status.
type Case = (
    &'static str,
    String,
    Option<i64>,
    Option<serde_json::Value>,
    StatusCode,
);

async fn bad_input_gets_4xx_json(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let u = s.user("valid_name").await;
    let long = "x".repeat(281);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/users".into(),
            None,
            Some(json!({ "name": "" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/users".into(),
            None,
            Some(json!({ "name": "has space" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/users".into(),
            None,
            Some(json!({ "name": "valid_name" })),
            StatusCode::CONFLICT,
        ),
        (
            "POST",
            "/api/users".into(),
            None,
            Some(json!({ "nom": "x" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/posts".into(),
            None,
            Some(json!({ "text": "hi" })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/api/posts".into(),
            Some(999_999),
            Some(json!({ "text": "hi" })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/api/posts".into(),
            Some(u),
            Some(json!({ "text": long })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/posts".into(),
            Some(u),
            Some(json!({ "text": "hi", "link": "javascript:alert(1)" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/posts".into(),
            Some(u),
            Some(json!({ "text": 5 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/feed?limit=0".into(),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/feed?limit=101".into(),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/feed?cursor=abc".into(),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/feed?cursor=-4".into(),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            format!("/api/follows/{u}"),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/follows/424242".into(),
            Some(u),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "PUT",
            "/api/follows/x1".into(),
            Some(u),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/nothing".into(),
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, user, body, want) in cases {
        let (status, v) = s.call(method, &path, user, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: error JSON, got {v}"
        );
    }
    let (status, v) = s
        .raw(
            s.client()
                .post(format!("{}/api/posts", s.base))
                .header("x-user-id", u.to_string())
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().is_some());
    s.stop().await;
}

async fn the_follow_limit_is_enforced(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |c| c.max_follows = 3).await;
    let me = s.user("me").await;
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(s.user(&format!("o{i}")).await);
    }
    for o in &others[..3] {
        assert_eq!(s.follow(me, *o).await, StatusCode::NO_CONTENT);
    }
    let (status, v) = s
        .call(
            "PUT",
            &format!("/api/follows/{}", others[3]),
            Some(me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().is_some_and(|m| m.contains('3')), "{v}");
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/api/follows/{}", others[0]),
            Some(me),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.follow(me, others[3]).await,
        StatusCode::NO_CONTENT,
        "unfollowing frees a place"
    );
    s.stop().await;
}

/// Pairs of users following each other at the same moment: no deadlock, no failure.
async fn opposite_follows_at_once_all_succeed(store: Store, cache: CacheKind) {
    let s = Service::start(store, cache, |_| {}).await;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(s.user(&format!("m{i}")).await);
    }
    let mut calls = Vec::new();
    for &a in &users {
        for &b in &users {
            if a != b {
                calls.push(s.follow(a, b));
            }
        }
    }
    let total = calls.len();
    let statuses = futures_util::future::join_all(calls).await;
    let failed = statuses
        .iter()
        .filter(|st| **st != StatusCode::NO_CONTENT)
        .count();
    assert_eq!(
        failed, 0,
        "{failed} of {total} follows failed: {statuses:?}"
    );
    s.stop().await;
}

mod on_all_backends {
    use super::*;
    on_every_backend!(BACKENDS;
        feed_order_and_pagination,
        fan_out_reaches_cached_feeds,
        celebrities_are_merged_at_read_time,
        bad_input_gets_4xx_json,
        the_follow_limit_is_enforced,
        opposite_follows_at_once_all_succeed
    );
}

/// The real limit: 5,000 follows succeed, the 5,001st is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_5001st_follow_is_refused() {
    let s = Service::start(Store::Sqlite, CacheKind::Memory, |_| {}).await;
    assert_eq!(s.state.config.max_follows, 5000);
    let me = s.user("me").await;
    let first = s.user("first").await;
    // Create the other users in one statement; the follows go over HTTP.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
         INSERT INTO users (name, created_at) SELECT 'u' || i, 0 FROM n",
    )
    .execute(s.state.db.pool())
    .await
    .expect("bulk users");
    let ids: Vec<i64> = (first + 1..=first + 5000).collect();
    use futures_util::StreamExt;
    let statuses: Vec<StatusCode> =
        futures_util::stream::iter(ids[..4999].iter().map(|id| s.follow(me, *id)))
            .buffer_unordered(16)
            .collect()
            .await;
    assert!(statuses.iter().all(|st| *st == StatusCode::NO_CONTENT));
    assert_eq!(
        s.follow(me, first).await,
        StatusCode::NO_CONTENT,
        "the 5,000th"
    );
    let (status, v) = s
        .call(
            "PUT",
            &format!("/api/follows/{}", ids[4999]),
            Some(me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the 5,001st: {v}");
    s.stop().await;
}

/// Paging past the newest 500 ids (what a cached feed holds) continues from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_beyond_the_cached_feed_come_from_the_database() {
    let s = Service::start(Store::Sqlite, CacheKind::Memory, |_| {}).await;
    let (author, reader) = (s.user("prolific").await, s.user("reader").await);
    s.follow(reader, author).await;
    let total = nunchi_feed_app::cache::FEED_LEN + 37;
    use futures_util::StreamExt;
    let mut posted: Vec<i64> = futures_util::stream::iter((0..total).map(|i| {
        let s = &s;
        async move { s.post(author, &format!("post {i}")).await }
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    posted.sort_unstable_by(|a, b| b.cmp(a));
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let q = cursor.map_or("limit=100".to_owned(), |c: i64| {
            format!("limit=100&cursor={c}")
        });
        let (ids, next) = s.feed(reader, &q).await;
        seen.extend(ids);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert_eq!(seen, posted);
    s.stop().await;
}

//! Runs the real service on a loopback port against a chosen database and cache: a
//! temporary SQLite file, or a fresh database on the PostgreSQL server at 127.0.0.1:5432;
//! the in-process cache, or the Redis server at 127.0.0.1:6379 under a key prefix of its
//! own.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::Duration;

use nunchi_feed_app::{AppState, FeedConfig, app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The PostgreSQL server (without a database name); `FEED_TEST_POSTGRES` overrides it.
pub fn postgres() -> String {
    std::env::var("FEED_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The Redis server; `FEED_TEST_REDIS` overrides it.
pub fn redis() -> String {
    std::env::var("FEED_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Debug, Clone, Copy)]
pub enum Store {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy)]
pub enum CacheKind {
    Memory,
    Redis,
}

/// Defines one `#[tokio::test]` per scenario `async fn(Store, CacheKind)` in the parent
/// module, running it on each of `$backends` in turn.
#[allow(unused_macros)] // not every test file runs scenarios on several backends
macro_rules! on_every_backend {
    ($backends:expr; $($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for (store, cache) in $backends {
                eprintln!("{} on {store:?} + {cache:?}", stringify!($name));
                super::$name(store, cache).await;
            }
        }
    )*};
}

pub struct Service {
    pub base: String,
    pub state: AppState,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

fn unique(tag: &str) -> String {
    use rand::Rng;
    format!(
        "{tag}_{}_{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

async fn admin_exec(sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&format!("{}/test", postgres()))
        .await
        .expect("connect to PostgreSQL database test");
    sqlx::query(sql).execute(&mut c).await.expect(sql);
}

impl Service {
    pub async fn start(
        store: Store,
        cache: CacheKind,
        tweak: impl FnOnce(&mut FeedConfig),
    ) -> Service {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pg_database = None;
        let url = match store {
            Store::Sqlite => format!("sqlite://{}", dir.path().join("feed.db").display()),
            Store::Postgres => {
                let name = unique("feed_test");
                admin_exec(&format!("CREATE DATABASE {name}")).await;
                pg_database = Some(name.clone());
                format!("{}/{name}", postgres())
            }
        };
        let mut config = FeedConfig::with_database(url);
        if let CacheKind::Redis = cache {
            config.redis_url = Some(redis());
            config.redis_prefix = format!("{}:", unique("feedtest"));
        }
        tweak(&mut config);
        let state = AppState::build(config).await.expect("service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = app(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Service {
            base,
            state,
            client: reqwest::Client::new(),
            _dir: dir,
            pg_database,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<i64>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.header("x-user-id", u.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn raw(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn user(&self, name: &str) -> i64 {
        let (status, v) = self
            .call("POST", "/api/users", None, Some(json!({ "name": name })))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_i64().expect("id")
    }

    pub async fn follow(&self, follower: i64, followee: i64) -> StatusCode {
        self.call(
            "PUT",
            &format!("/api/follows/{followee}"),
            Some(follower),
            None,
        )
        .await
        .0
    }

    pub async fn post(&self, author: i64, text: &str) -> i64 {
        let (status, v) = self
            .call(
                "POST",
                "/api/posts",
                Some(author),
                Some(json!({ "text": text })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_i64().expect("id")
    }

    /// One feed page: (post ids, next cursor).
    pub async fn feed(&self, user: i64, query: &str) -> (Vec<i64>, Option<i64>) {
        let (status, v) = self
            .call("GET", &format!("/api/feed?{query}"), Some(user), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let ids = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["id"].as_i64().expect("id"))
            .collect();
        (ids, v["next_cursor"].as_i64())
    }

    /// The value of one sample on /metrics (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(s, _)| matches_selector(s, series))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls until `f` holds.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    pub async fn stop(self) {
        if let Some(db) = &self.pg_database {
            self.state.db.pool().close().await;
            admin_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
        }
    }
}

/// Whether an exposition line's series (`name{a="b",c="d"}`) has the selector's name and
/// every one of its labels (the service's label values hold no commas or quotes).
fn matches_selector(series: &str, selector: &str) -> bool {
    let split = |s: &str| -> (String, Vec<String>) {
        let (name, rest) = s.split_once('{').unwrap_or((s, ""));
        let labels = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        (name.to_owned(), labels)
    };
    let (name, labels) = split(series);
    let (want_name, want) = split(selector);
    name == want_name && want.iter().all(|w| labels.contains(w))
}

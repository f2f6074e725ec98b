//! The database: SQLite or PostgreSQL behind sqlx's `Any` driver, so every query is
//! written once (`$n` placeholders work in both). Migrations for each backend live in
//! `migrations/<backend>/` and run at start-up.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout, so readers never
//! wait for the writer.

use std::time::Instant;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Row};

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// A query or connection failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite file's directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Which backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A stored post.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Post {
    /// Post id; ids grow with time, so id order is time order.
    pub id: i64,
    /// Author's user id.
    pub author: i64,
    /// The text.
    pub text: String,
    /// Optional link.
    pub link: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The connection pool, with a hook that times every acquire.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    max_connections: u32,
    on_acquire: Option<std::sync::Arc<dyn Fn(f64) + Send + Sync>>,
}

impl Db {
    /// Connects, tunes SQLite, and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default().to_owned();
            if let Some(dir) = std::path::Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| DbError::Dir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=NORMAL",
                            "PRAGMA busy_timeout=5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Db {
            pool,
            max_connections: max_connections.max(1),
            on_acquire: None,
        })
    }

    /// Calls `f` with the seconds each acquire waited (for the pool-wait histogram).
    pub fn set_acquire_observer(&mut self, f: impl Fn(f64) + Send + Sync + 'static) {
        self.on_acquire = Some(std::sync::Arc::new(f));
    }

    /// A connection from the pool, timing the wait.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, DbError> {
        let start = Instant::now();
        let conn = self.pool.acquire().await?;
        if let Some(f) = &self.on_acquire {
            f(start.elapsed().as_secs_f64());
        }
        Ok(conn)
    }

    /// The pool (for tests and metrics).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// (in use, idle, max) connections.
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let size = self.pool.size();
        let idle = self.pool.num_idle() as u32;
        (size.saturating_sub(idle), idle, self.max_connections)
    }

    /// Creates a user, or `None` if the name is taken.
    pub async fn create_user(&self, name: &str, now_ms: i64) -> Result<Option<i64>, DbError> {
        let mut c = self.acquire().await?;
        let row = sqlx::query("INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id")
            .bind(name)
            .bind(now_ms)
            .fetch_optional(&mut *c)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// Whether the user exists.
    pub async fn user_exists(&self, id: i64) -> Result<bool, DbError> {
        let mut c = self.acquire().await?;
        let row = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        Ok(row.is_some())
    }

    /// Makes `follower` follow `followee`. Returns `Ok(false)` when the follower is at
    /// `max_follows` already; following someone twice is not an error.
    pub async fn follow(
        &self,
        follower: i64,
        followee: i64,
        max_follows: i64,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let mut c = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        let inserted = sqlx::query(
            "INSERT INTO follows (follower, followee, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(follower)
        .bind(followee)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(true);
        }
        // Both users' rows are updated in id order, so two opposite follows committing at
        // once cannot deadlock on PostgreSQL.
        let count_following = async |tx: &mut sqlx::Transaction<'_, Any>| {
            sqlx::query(
                "UPDATE users SET following_count = following_count + 1 WHERE id = $1 AND following_count < $2",
            )
            .bind(follower)
            .bind(max_follows)
            .execute(&mut **tx)
            .await
            .map(|r| r.rows_affected() > 0)
        };
        let count_follower = async |tx: &mut sqlx::Transaction<'_, Any>| {
            sqlx::query("UPDATE users SET follower_count = follower_count + 1 WHERE id = $1")
                .bind(followee)
                .execute(&mut **tx)
                .await
                .map(|_| ())
        };
        let counted = if follower < followee {
            let ok = count_following(&mut tx).await?;
            if ok {
                count_follower(&mut tx).await?;
            }
            ok
        } else {
            count_follower(&mut tx).await?;
            count_following(&mut tx).await?
        };
        if !counted {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a follow if present.
    pub async fn unfollow(&self, follower: i64, followee: i64) -> Result<(), DbError> {
        let mut c = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        let removed = sqlx::query("DELETE FROM follows WHERE follower = $1 AND followee = $2")
            .bind(follower)
            .bind(followee)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed > 0 {
            // In id order, as in `follow`.
            let mut updates = [
                (
                    follower,
                    "UPDATE users SET following_count = following_count - 1 WHERE id = $1",
                ),
                (
                    followee,
                    "UPDATE users SET follower_count = follower_count - 1 WHERE id = $1",
                ),
            ];
            updates.sort_by_key(|(id, _)| *id);
            for (id, sql) in updates {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a post; returns it with its id.
    pub async fn create_post(
        &self,
        author: i64,
        text: &str,
        link: Option<&str>,
        now_ms: i64,
    ) -> Result<Post, DbError> {
        let mut c = self.acquire().await?;
        let row = sqlx::query("INSERT INTO posts (author, body, link, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(author)
            .bind(text)
            .bind(link)
            .bind(now_ms)
            .fetch_one(&mut *c)
            .await?;
        Ok(Post {
            id: row.get(0),
            author,
            text: text.to_owned(),
            link: link.map(str::to_owned),
            created_at: now_ms,
        })
    }

    /// The number of followers of a user.
    pub async fn follower_count(&self, user: i64) -> Result<i64, DbError> {
        let mut c = self.acquire().await?;
        let row = sqlx::query("SELECT follower_count FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    /// Ids of a user's followers.
    pub async fn followers(&self, user: i64) -> Result<Vec<i64>, DbError> {
        let mut c = self.acquire().await?;
        let rows = sqlx::query("SELECT follower FROM follows WHERE followee = $1")
            .bind(user)
            .fetch_all(&mut *c)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The newest post ids, older than `before`, by non-celebrity authors the user follows.
    pub async fn fanned_out_feed(
        &self,
        user: i64,
        celebrity_threshold: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<i64>, DbError> {
        let mut c = self.acquire().await?;
        let rows = sqlx::query(
            "SELECT p.id FROM follows f JOIN users u ON u.id = f.followee JOIN posts p ON p.author = f.followee \
             WHERE f.follower = $1 AND u.follower_count <= $2 AND p.id < $3 ORDER BY p.id DESC LIMIT $4",
        )
        .bind(user)
        .bind(celebrity_threshold)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Celebrities (more than `celebrity_threshold` followers) the user follows.
    pub async fn followed_celebrities(
        &self,
        user: i64,
        celebrity_threshold: i64,
    ) -> Result<Vec<i64>, DbError> {
        let mut c = self.acquire().await?;
        let rows = sqlx::query(
            "SELECT f.followee FROM follows f JOIN users u ON u.id = f.followee WHERE f.follower = $1 AND u.follower_count > $2",
        )
        .bind(user)
        .bind(celebrity_threshold)
        .fetch_all(&mut *c)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The newest post ids older than `before` by any of `authors`.
    pub async fn posts_by(
        &self,
        authors: &[i64],
        before: i64,
        limit: i64,
    ) -> Result<Vec<i64>, DbError> {
        if authors.is_empty() {
            return Ok(Vec::new());
        }
        let list = placeholders(3, authors.len());
        let sql = format!(
            "SELECT id FROM posts WHERE id < $1 AND author IN ({list}) ORDER BY id DESC LIMIT $2"
        );
        let mut q = sqlx::query(&sql).bind(before).bind(limit);
        for a in authors {
            q = q.bind(*a);
        }
        let mut c = self.acquire().await?;
        let rows = q.fetch_all(&mut *c).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Posts by id (missing ids are left out).
    pub async fn posts(&self, ids: &[i64]) -> Result<Vec<Post>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, author, body, link, created_at FROM posts WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let mut c = self.acquire().await?;
        let rows = q.fetch_all(&mut *c).await?;
        Ok(rows.iter().map(post_from_row).collect())
    }

    /// Records that `user` was active on `day` (days since the epoch).
    pub async fn record_activity(&self, user: i64, day: i64) -> Result<(), DbError> {
        let mut c = self.acquire().await?;
        sqlx::query("INSERT INTO activity (user_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(day)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// Distinct active users on `day`, and over the 30 days ending on `day`.
    pub async fn dau_mau(&self, day: i64) -> Result<(i64, i64), DbError> {
        let mut c = self.acquire().await?;
        let dau: i64 = sqlx::query("SELECT COUNT(*) FROM activity WHERE day = $1")
            .bind(day)
            .fetch_one(&mut *c)
            .await?
            .get(0);
        let mau: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT user_id) FROM activity WHERE day > $1 AND day <= $2",
        )
        .bind(day - 30)
        .bind(day)
        .fetch_one(&mut *c)
        .await?
        .get(0);
        Ok((dau, mau))
    }
}

fn post_from_row(r: &AnyRow) -> Post {
    Post {
        id: r.get(0),
        author: r.get(1),
        text: r.get(2),
        link: r.get(3),
        created_at: r.get(4),
    }
}

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

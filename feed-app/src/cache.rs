//! The cache, in front of the database (cache-aside): feeds (newest-first post ids per
//! user, at most [`FEED_LEN`]), posts by id, and each user's followed celebrities.
//! In-process (`moka`, bounded with LRU-style eviction and a TTL) by default; Redis when a
//! URL is given (lists for feeds, JSON strings for posts, every key with the TTL).
//!
//! Every lookup reports a hit or a miss to the caller so the metrics count them; a Redis
//! failure is an error for the caller to surface, never a silent miss.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use crate::db::Post;

/// Most post ids kept in one cached feed; older pages are read from the database.
pub const FEED_LEN: usize = 500;

/// Cache errors.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis could not be reached or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A cached value was not valid JSON.
    #[error("cache value: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Which kind of entry a lookup was for (the `cache` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user's feed.
    Feed,
    /// A post.
    Post,
    /// A user's followed celebrities.
    Celebrities,
}

impl Kind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Feed => "feed",
            Kind::Post => "post",
            Kind::Celebrities => "celebrities",
        }
    }
}

/// In-process or Redis.
#[derive(Clone)]
pub enum Cache {
    /// In-process, bounded.
    Memory(Arc<Memory>),
    /// Redis.
    Redis(Arc<RedisCache>),
}

/// The in-process caches.
pub struct Memory {
    feeds: moka::future::Cache<i64, Arc<Vec<i64>>>,
    posts: moka::future::Cache<i64, Arc<Post>>,
    celebrities: moka::future::Cache<i64, Arc<Vec<i64>>>,
}

/// A Redis connection and key layout.
pub struct RedisCache {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    ttl_secs: u64,
}

impl Cache {
    /// An in-process cache of at most `capacity` entries, each living `ttl`.
    pub fn memory(capacity: u64, ttl: Duration) -> Cache {
        fn build<V: Clone + Send + Sync + 'static>(
            cap: u64,
            ttl: Duration,
        ) -> moka::future::Cache<i64, V> {
            moka::future::Cache::builder()
                .max_capacity(cap.max(1))
                .time_to_live(ttl)
                .build()
        }
        Cache::Memory(Arc::new(Memory {
            feeds: build(capacity / 2, ttl),
            posts: build(capacity / 2, ttl),
            celebrities: build(capacity / 4, ttl),
        }))
    }

    /// A Redis cache; every key starts with `prefix`.
    pub async fn redis(url: &str, prefix: &str, ttl: Duration) -> Result<Cache, CacheError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Cache::Redis(Arc::new(RedisCache {
            conn,
            prefix: prefix.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
        })))
    }

    /// Entries held: `(feeds, posts)` for the in-process cache; Redis reports `None`.
    pub async fn entries(&self) -> Option<(u64, u64)> {
        match self {
            Cache::Memory(m) => {
                m.feeds.run_pending_tasks().await;
                m.posts.run_pending_tasks().await;
                Some((m.feeds.entry_count(), m.posts.entry_count()))
            }
            Cache::Redis(_) => None,
        }
    }

    /// A user's cached feed.
    pub async fn feed(&self, user: i64) -> Result<Option<Arc<Vec<i64>>>, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.feeds.get(&user).await),
            Cache::Redis(r) => {
                let key = r.key("f", user);
                let mut c = r.conn.clone();
                let (exists, ids): (bool, Vec<i64>) = redis::pipe()
                    .exists(&key)
                    .lrange(&key, 0, -1)
                    .query_async(&mut c)
                    .await?;
                Ok(exists.then(|| Arc::new(ids.into_iter().filter(|id| *id >= 0).collect())))
            }
        }
    }

    /// Stores a user's feed (newest first, at most [`FEED_LEN`] ids).
    pub async fn set_feed(&self, user: i64, ids: Vec<i64>) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.feeds.insert(user, Arc::new(ids)).await;
                Ok(())
            }
            Cache::Redis(r) => {
                let key = r.key("f", user);
                let mut c = r.conn.clone();
                let mut p = redis::pipe();
                p.atomic().del(&key);
                if ids.is_empty() {
                    // An empty feed is cached as a one-element marker list.
                    p.rpush(&key, -1i64);
                } else {
                    p.rpush(&key, &ids);
                }
                p.expire(&key, r.ttl_secs as i64);
                let () = p.query_async(&mut c).await?;
                Ok(())
            }
        }
    }

    /// Adds a new post id at the head of a user's feed, if that feed is cached.
    pub async fn push_to_feed(&self, user: i64, post: i64) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.feeds
                    .entry(user)
                    .and_compute_with(|entry| async move {
                        match entry {
                            Some(e) => {
                                let old = e.into_value();
                                let mut ids = Vec::with_capacity((old.len() + 1).min(FEED_LEN));
                                ids.push(post);
                                ids.extend(old.iter().copied().take(FEED_LEN - 1));
                                moka::ops::compute::Op::Put(Arc::new(ids))
                            }
                            None => moka::ops::compute::Op::Nop,
                        }
                    })
                    .await;
                Ok(())
            }
            Cache::Redis(r) => {
                let key = r.key("f", user);
                let mut c = r.conn.clone();
                let () = redis::pipe()
                    .atomic()
                    .cmd("LPUSHX")
                    .arg(&key)
                    .arg(post)
                    .ignore()
                    .lrem(&key, 0, -1i64)
                    .ignore()
                    .ltrim(&key, 0, FEED_LEN as isize - 1)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    }

    /// Forgets a user's feed and celebrity list (after they follow or unfollow someone).
    pub async fn invalidate_user(&self, user: i64) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.feeds.invalidate(&user).await;
                m.celebrities.invalidate(&user).await;
                Ok(())
            }
            Cache::Redis(r) => {
                let mut c = r.conn.clone();
                let () = c.del(&[r.key("f", user), r.key("c", user)]).await?;
                Ok(())
            }
        }
    }

    /// Cached posts for `ids`, in the same order, `None` where missing.
    pub async fn posts(&self, ids: &[i64]) -> Result<Vec<Option<Arc<Post>>>, CacheError> {
        match self {
            Cache::Memory(m) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.push(m.posts.get(id).await);
                }
                Ok(out)
            }
            Cache::Redis(r) => {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> = ids.iter().map(|id| r.key("p", *id)).collect();
                let mut c = r.conn.clone();
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                values
                    .into_iter()
                    .map(|v| {
                        v.map(|s| serde_json::from_str(&s).map(Arc::new))
                            .transpose()
                            .map_err(CacheError::from)
                    })
                    .collect()
            }
        }
    }

    /// Stores posts.
    pub async fn set_posts(&self, posts: &[Post]) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                for p in posts {
                    m.posts.insert(p.id, Arc::new(p.clone())).await;
                }
                Ok(())
            }
            Cache::Redis(r) => {
                if posts.is_empty() {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                for p in posts {
                    pipe.set_ex(r.key("p", p.id), serde_json::to_string(p)?, r.ttl_secs)
                        .ignore();
                }
                let mut c = r.conn.clone();
                let () = pipe.query_async(&mut c).await?;
                Ok(())
            }
        }
    }

    /// A user's cached list of followed celebrities.
    pub async fn celebrities(&self, user: i64) -> Result<Option<Arc<Vec<i64>>>, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.celebrities.get(&user).await),
            Cache::Redis(r) => {
                let mut c = r.conn.clone();
                let v: Option<String> = c.get(r.key("c", user)).await?;
                Ok(
                    v.map(|s| serde_json::from_str::<Vec<i64>>(&s).map(Arc::new))
                        .transpose()?,
                )
            }
        }
    }

    /// Stores a user's list of followed celebrities.
    pub async fn set_celebrities(&self, user: i64, ids: Vec<i64>) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.celebrities.insert(user, Arc::new(ids)).await;
                Ok(())
            }
            Cache::Redis(r) => {
                let mut c = r.conn.clone();
                let () = c
                    .set_ex(r.key("c", user), serde_json::to_string(&ids)?, r.ttl_secs)
                    .await?;
                Ok(())
            }
        }
    }
}

impl RedisCache {
    fn key(&self, kind: &str, id: i64) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }
}

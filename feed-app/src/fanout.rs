//! Fan-out on write: a bounded queue of new posts and a fixed pool of workers that push
//! each post's id into the cached feed of every follower of its author. Authors above the
//! celebrity threshold are skipped here; their posts are merged at read time
//! ([`crate::feed`]). A follower whose feed is not cached is skipped too: the feed is
//! rebuilt from the database on its next read.
//!
//! Posting waits when the queue is full (back-pressure), so no accepted post is dropped.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, mpsc};

use crate::FeedConfig;
use crate::cache::Cache;
use crate::db::{Db, Post};
use crate::metrics::Metrics;

/// One post to fan out.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Post id.
    pub post: i64,
    /// Its author.
    pub author: i64,
    /// When it was created, ms since the epoch.
    pub created_at: i64,
}

/// The queue's sending side.
#[derive(Clone)]
pub struct FanoutQueue {
    tx: mpsc::Sender<Job>,
    metrics: Option<Arc<Metrics>>,
}

impl FanoutQueue {
    /// Starts `config.fanout_workers` workers.
    pub fn start(
        db: Db,
        cache: Cache,
        metrics: Option<Arc<Metrics>>,
        config: &FeedConfig,
    ) -> FanoutQueue {
        let (tx, rx) = mpsc::channel(config.fanout_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.fanout_workers.max(1) {
            let worker = Worker {
                rx: rx.clone(),
                db: db.clone(),
                cache: cache.clone(),
                metrics: metrics.clone(),
                celebrity_threshold: config.celebrity_threshold,
            };
            tokio::spawn(worker.run());
        }
        FanoutQueue { tx, metrics }
    }

    /// Queues a post, waiting while the queue is full.
    pub async fn enqueue(&self, post: &Post) {
        let job = Job {
            post: post.id,
            author: post.author,
            created_at: post.created_at,
        };
        if self.tx.send(job).await.is_err() {
            tracing::error!(
                post = post.id,
                "fan-out workers are gone; post stays readable from the database"
            );
        }
        if let Some(m) = &self.metrics {
            m.fanout_queue_depth
                .set((self.tx.max_capacity() - self.tx.capacity()) as i64);
        }
    }
}

struct Worker {
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    db: Db,
    cache: Cache,
    metrics: Option<Arc<Metrics>>,
    celebrity_threshold: i64,
}

impl Worker {
    async fn run(self) {
        loop {
            let job = {
                let mut rx = self.rx.lock().await;
                match rx.recv().await {
                    Some(j) => {
                        if let Some(m) = &self.metrics {
                            m.fanout_queue_depth.set(rx.len() as i64);
                        }
                        j
                    }
                    None => return,
                }
            };
            if let Err(e) = self.fan_out(job).await {
                tracing::warn!(post = job.post, error = %e, "fan-out failed; followers will read the post from the database");
                if let Some(m) = &self.metrics {
                    m.db_errors.inc();
                }
            }
        }
    }

    async fn fan_out(&self, job: Job) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.db.follower_count(job.author).await? > self.celebrity_threshold {
            return Ok(());
        }
        for follower in self.db.followers(job.author).await? {
            self.cache.push_to_feed(follower, job.post).await?;
        }
        if let Some(m) = &self.metrics {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            m.fanout_lag
                .observe((now - job.created_at).max(0) as f64 / 1000.0);
        }
        Ok(())
    }
}

//! The durable side of delivery, in the collector's database (SQLite or PostgreSQL via
//! sqlx): the outbox of notifications (pending, delivered, dead), the log of every delivery
//! attempt, the notification log (what was last sent per group, so a restart does not page
//! twice), Slack message references (to update or thread on resolve), silences, scale
//! cooldowns, and the rule evaluator's alert state.
//!
//! A notification is in the outbox before the first attempt; one still pending after a
//! crash is attempted again at start. Ids are assigned here (time-ordered), so the schema
//! is the same on both databases.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::silence::Silence;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row does not decode.
    #[error("stored {what} does not decode: {source}")]
    Decode {
        /// Which table.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The URL is neither SQLite nor PostgreSQL.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

pub use nunchi_model::api::{Attempt, OutboxEntry, OutboxState};

/// What was last notified for a group and receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyRecord {
    /// Fingerprints of the firing alerts notified.
    pub firing: Vec<u64>,
    /// Fingerprints of resolved alerts notified.
    pub resolved: Vec<u64>,
    /// Fingerprints of alerts notified as flapping.
    #[serde(default)]
    pub flapping: Vec<u64>,
    /// When (ms).
    pub sent_at: i64,
}

/// A posted Slack message, for updating or threading on resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackRef {
    /// Channel id as Slack returned it.
    pub channel: String,
    /// Message timestamp.
    pub ts: String,
    /// Whether it is a digest of several groups (thread, don't overwrite).
    pub digest: bool,
}

/// The delivery database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

static LAST_ID: AtomicI64 = AtomicI64::new(0);

/// A time-ordered unique id (ms × 1000 + a counter).
pub fn next_id(now_ms: i64) -> i64 {
    let candidate = now_ms * 1000;
    let mut prev = LAST_ID.load(Ordering::Relaxed);
    loop {
        let id = candidate.max(prev + 1);
        match LAST_ID.compare_exchange(prev, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(p) => prev = p,
        }
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alert_outbox (id BIGINT PRIMARY KEY, created_at BIGINT NOT NULL, receiver TEXT NOT NULL, integration TEXT NOT NULL, target BIGINT NOT NULL, group_key TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL, last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS alert_outbox_state ON alert_outbox (state, id)",
    "CREATE TABLE IF NOT EXISTS alert_attempts (id BIGINT PRIMARY KEY, outbox_id BIGINT NOT NULL, at BIGINT NOT NULL, receiver TEXT NOT NULL, integration TEXT NOT NULL, ok BIGINT NOT NULL, status BIGINT, latency_ms BIGINT NOT NULL, response TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_nflog (group_key TEXT NOT NULL, receiver TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (group_key, receiver))",
    "CREATE TABLE IF NOT EXISTS alert_slack_refs (group_key TEXT NOT NULL, target TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (group_key, target))",
    "CREATE TABLE IF NOT EXISTS alert_silences (id TEXT PRIMARY KEY, ends_at BIGINT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_scale_cooldowns (target_group TEXT PRIMARY KEY, until_ms BIGINT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_rule_state (rule_key TEXT PRIMARY KEY, body TEXT NOT NULL)",
];

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and creates the tables.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for p in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=NORMAL",
                            "PRAGMA busy_timeout=10000",
                        ] {
                            sqlx::query(p).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        for s in SCHEMA {
            sqlx::query(s).execute(&pool).await?;
        }
        Ok(Store { pool })
    }

    /// Queues a notification; returns its id.
    pub async fn enqueue(&self, e: &OutboxEntry) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO alert_outbox (id, created_at, receiver, integration, target, group_key, payload, state, attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(e.id)
            .bind(e.created_at)
            .bind(&e.receiver)
            .bind(&e.integration)
            .bind(e.target as i64)
            .bind(&e.group_key)
            .bind(json(&e.payload))
            .bind(e.state.as_str())
            .bind(i64::from(e.attempts))
            .bind(e.last_error.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a notification's state, attempts and last error.
    pub async fn set_state(
        &self,
        id: i64,
        state: OutboxState,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_outbox SET state = $1, attempts = $2, last_error = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(i64::from(attempts))
        .bind(error.map(str::to_owned))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Outbox entries in `state`, oldest first.
    pub async fn outbox(
        &self,
        state: OutboxState,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query("SELECT id, created_at, receiver, integration, target, group_key, payload, state, attempts, last_error FROM alert_outbox WHERE state = $1 ORDER BY id LIMIT $2")
            .bind(state.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// One outbox entry.
    pub async fn outbox_entry(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError> {
        let row = sqlx::query("SELECT id, created_at, receiver, integration, target, group_key, payload, state, attempts, last_error FROM alert_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(outbox_row).transpose()
    }

    /// Logs an attempt.
    pub async fn log_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO alert_attempts (id, outbox_id, at, receiver, integration, ok, status, latency_ms, response) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(next_id(a.at))
            .bind(a.outbox_id)
            .bind(a.at)
            .bind(&a.receiver)
            .bind(&a.integration)
            .bind(i64::from(a.ok))
            .bind(a.status.map(i64::from))
            .bind(a.latency_ms)
            .bind(&a.response)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The most recent attempts, newest first.
    pub async fn attempts(&self, limit: i64) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query("SELECT outbox_id, at, receiver, integration, ok, status, latency_ms, response FROM alert_attempts ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Attempt {
                outbox_id: r.get(0),
                at: r.get(1),
                receiver: r.get(2),
                integration: r.get(3),
                ok: r.get::<i64, _>(4) != 0,
                status: r.get::<Option<i64>, _>(5).map(|s| s as u16),
                latency_ms: r.get(6),
                response: r.get(7),
            })
            .collect())
    }

    /// Every notification-log record.
    pub async fn nflog(&self) -> Result<Vec<(String, String, NotifyRecord)>, StoreError> {
        let rows = sqlx::query("SELECT group_key, receiver, body FROM alert_nflog")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    r.get(1),
                    decode("notification log", r.get::<&str, _>(2))?,
                ))
            })
            .collect()
    }

    /// Records what was notified for a group (`None` forgets the group).
    pub async fn set_nflog(
        &self,
        group_key: &str,
        receiver: &str,
        rec: Option<&NotifyRecord>,
    ) -> Result<(), StoreError> {
        let Some(rec) = rec else {
            sqlx::query("DELETE FROM alert_nflog WHERE group_key = $1 AND receiver = $2")
                .bind(group_key)
                .bind(receiver)
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        {
            sqlx::query("INSERT INTO alert_nflog (group_key, receiver, body) VALUES ($1, $2, $3) ON CONFLICT (group_key, receiver) DO UPDATE SET body = excluded.body")
                .bind(group_key)
                .bind(receiver)
                .bind(json(rec))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The Slack message posted for a group at a destination.
    pub async fn slack_ref(
        &self,
        group_key: &str,
        target: &str,
    ) -> Result<Option<SlackRef>, StoreError> {
        let row =
            sqlx::query("SELECT body FROM alert_slack_refs WHERE group_key = $1 AND target = $2")
                .bind(group_key)
                .bind(target)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| decode("slack reference", r.get::<&str, _>(0)))
            .transpose()
    }

    /// Remembers (or forgets) the Slack message of a group.
    pub async fn set_slack_ref(
        &self,
        group_key: &str,
        target: &str,
        r: Option<&SlackRef>,
    ) -> Result<(), StoreError> {
        let Some(r) = r else {
            sqlx::query("DELETE FROM alert_slack_refs WHERE group_key = $1 AND target = $2")
                .bind(group_key)
                .bind(target)
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        {
            sqlx::query("INSERT INTO alert_slack_refs (group_key, target, body) VALUES ($1, $2, $3) ON CONFLICT (group_key, target) DO UPDATE SET body = excluded.body")
                .bind(group_key)
                .bind(target)
                .bind(json(r))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every silence not expired before `since`.
    pub async fn silences(&self, since: i64) -> Result<Vec<Silence>, StoreError> {
        let rows = sqlx::query("SELECT body FROM alert_silences WHERE ends_at >= $1 ORDER BY id")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode("silence", r.get::<&str, _>(0)))
            .collect()
    }

    /// Creates or replaces a silence.
    pub async fn put_silence(&self, s: &Silence) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO alert_silences (id, ends_at, body) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET ends_at = excluded.ends_at, body = excluded.body")
            .bind(&s.id)
            .bind(s.ends_at)
            .bind(json(s))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A group's scale cooldown: until when, and the last request.
    pub async fn cooldown(
        &self,
        group: &str,
    ) -> Result<Option<(i64, serde_json::Value)>, StoreError> {
        let row =
            sqlx::query("SELECT until_ms, body FROM alert_scale_cooldowns WHERE target_group = $1")
                .bind(group)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((r.get(0), decode("scale cooldown", r.get::<&str, _>(1))?)))
            .transpose()
    }

    /// Sets a group's cooldown.
    pub async fn set_cooldown(
        &self,
        group: &str,
        until: i64,
        last: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO alert_scale_cooldowns (target_group, until_ms, body) VALUES ($1, $2, $3) ON CONFLICT (target_group) DO UPDATE SET until_ms = excluded.until_ms, body = excluded.body")
            .bind(group)
            .bind(until)
            .bind(json(last))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The rule evaluator's saved state, by rule key.
    pub async fn rule_states(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT rule_key, body FROM alert_rule_state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Saves (or with `None` deletes) one rule's state.
    pub async fn set_rule_state(&self, key: &str, body: Option<&str>) -> Result<(), StoreError> {
        let Some(b) = body else {
            sqlx::query("DELETE FROM alert_rule_state WHERE rule_key = $1")
                .bind(key)
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        {
            sqlx::query("INSERT INTO alert_rule_state (rule_key, body) VALUES ($1, $2) ON CONFLICT (rule_key) DO UPDATE SET body = excluded.body")
                .bind(key)
                .bind(b)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

fn outbox_row(r: &sqlx::any::AnyRow) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        id: r.get(0),
        created_at: r.get(1),
        receiver: r.get(2),
        integration: r.get(3),
        target: r.get::<i64, _>(4) as usize,
        group_key: r.get(5),
        payload: decode("notification", r.get::<&str, _>(6))?,
        state: OutboxState::parse(r.get::<&str, _>(7)),
        attempts: r.get::<i64, _>(8) as u32,
        last_error: r.get(9),
    })
}

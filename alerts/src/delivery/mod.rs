//! Delivery: every notification goes into the outbox ([`crate::store`]) first, then to its
//! integration. Webhooks and scale hooks are retried with growing delays and jitter (1 s,
//! 5 s, 30 s, 2 min by default), honouring `Retry-After`; Slack goes through one queue per
//! channel with a token bucket of one message a second, honours 429 `Retry-After`, and
//! folds a backlog into one digest message. A notification that fails every attempt
//! becomes a dead letter and its receiver's policy applies (hold, retry, ignore, notify).
//! Every attempt is logged with status, latency and response.
//!
//! What waits in memory is bounded ([`DeliveryOptions::queue_capacity`]): a notification
//! that finds its queue full is not held; it is counted
//! ([`DeliveryOptions::overflow`]), logged and dead-lettered with the reason, so it stays
//! in the outbox and its receiver's dead-letter policy applies to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nunchi_model::now_ms;
use rand::Rng;
use tokio::sync::mpsc;

use crate::config::{Config, DeadLetterAction};
use crate::notify::{AttemptError, Notification, Reason, scale, slack, webhook};
use crate::store::{Attempt, OutboxEntry, OutboxState, Store, next_id};

mod slack_queue;

/// The one-message-a-second pace Slack documents per channel.
pub const SLACK_INTERVAL: Duration = Duration::from_secs(1);

/// Messages a channel may take at once before the one-a-second pace applies (Slack
/// allows short bursts).
pub const SLACK_BURST: f64 = 3.0;

/// Notifications waiting for one channel that are folded into a digest.
pub const DIGEST_MIN: usize = 3;

/// Notifications a delivery queue holds by default (Prometheus' notification queue
/// capacity).
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// The name of the overflow counter [`DeliveryOptions::default`] makes.
pub const OVERFLOW_METRIC: &str = "nunchi_notifications_overflowed_total";

/// How notifications are sent.
#[derive(Clone)]
pub struct DeliveryOptions {
    /// The client webhooks and scale hooks are posted with (its own timeouts, proxy and
    /// TLS settings apply; each target's `timeout` bounds every request too).
    pub http: reqwest::Client,
    /// Notifications one queue holds in memory: each Slack channel's queue, and the
    /// webhooks' and scale hooks' together. Default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Counts the notifications that found their queue full.
    pub overflow: prometheus::IntCounter,
}

impl Default for DeliveryOptions {
    /// A client with rustls over the `ring` provider (installed as the process default
    /// unless one already is), the default queue capacity and an unregistered counter.
    fn default() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        DeliveryOptions {
            http: reqwest::Client::builder()
                .user_agent(concat!("nunchi/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            overflow: overflow_counter(),
        }
    }
}

/// A new, unregistered [`OVERFLOW_METRIC`] counter.
pub fn overflow_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new(
        OVERFLOW_METRIC,
        "Notifications dead-lettered because their delivery queue was full.",
    )
    .unwrap_or_else(|_| unreachable!("the metric's name is valid"))
}

/// One Slack channel's queue and how much it holds.
struct SlackQueue {
    tx: mpsc::UnboundedSender<OutboxEntry>,
    held: Arc<AtomicUsize>,
}

/// Sends outbox entries.
pub struct Delivery {
    store: Store,
    http: reqwest::Client,
    slack: slack::Slack,
    config: Arc<RwLock<Arc<Config>>>,
    queues: Mutex<HashMap<String, SlackQueue>>,
    /// Webhook and scale-hook notifications being sent or waiting for a retry.
    http_held: Arc<AtomicUsize>,
    capacity: usize,
    overflow: prometheus::IntCounter,
    external_url: String,
}

/// Gives a queue's place back when dropped.
struct Held(Arc<AtomicUsize>, usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Takes a place in a queue of `capacity`, or `false` when it is full.
fn take_place(held: &AtomicUsize, capacity: usize) -> bool {
    held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < capacity).then_some(n + 1)
    })
    .is_ok()
}

fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}

impl Delivery {
    /// A delivery loop over `store`.
    pub fn new(
        store: Store,
        config: Arc<RwLock<Arc<Config>>>,
        external_url: String,
        options: DeliveryOptions,
    ) -> Arc<Delivery> {
        Arc::new(Delivery {
            store,
            http: options.http,
            slack: slack::Slack::default(),
            config,
            queues: Mutex::new(HashMap::new()),
            http_held: Arc::new(AtomicUsize::new(0)),
            capacity: options.queue_capacity.max(1),
            overflow: options.overflow,
            external_url,
        })
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues `n` for every integration of its receiver.
    pub async fn notify(self: &Arc<Self>, n: &Notification) {
        let config = self.config();
        let Some(r) = config.receivers.get(&n.receiver) else {
            tracing::error!(receiver = %n.receiver, "notification for an unknown receiver dropped");
            return;
        };
        let only_resolved = n.firing().next().is_none();
        let kinds = r
            .slack
            .iter()
            .enumerate()
            .map(|(i, s)| ("slack", i, s.send_resolved))
            .chain(
                r.webhooks
                    .iter()
                    .enumerate()
                    .map(|(i, w)| ("webhook", i, w.send_resolved)),
            );
        for (kind, i, send_resolved) in kinds {
            let mut n = n.clone();
            if !send_resolved {
                if only_resolved {
                    continue;
                }
                let at = n.at;
                n.alerts.retain(|a| !a.resolved_at(at));
            }
            self.submit(
                kind,
                &n.receiver.clone(),
                i,
                &n.group_key.clone(),
                serde_json::to_value(&n).unwrap_or_default(),
            )
            .await;
        }
    }

    /// Puts one entry in the outbox and starts it.
    pub async fn submit(
        self: &Arc<Self>,
        kind: &str,
        receiver: &str,
        target: usize,
        group_key: &str,
        payload: serde_json::Value,
    ) {
        let now = now_ms();
        let e = OutboxEntry {
            id: next_id(now),
            created_at: now,
            receiver: receiver.to_owned(),
            integration: kind.to_owned(),
            target,
            group_key: group_key.to_owned(),
            payload,
            state: OutboxState::Pending,
            attempts: 0,
            last_error: None,
        };
        if let Err(err) = self.store.enqueue(&e).await {
            tracing::error!(error = %err, receiver, "cannot record notification; sending anyway");
        }
        self.start(e);
    }

    /// Starts delivering an entry already in the outbox; one that finds its queue full
    /// is dead-lettered.
    pub fn start(self: &Arc<Self>, e: OutboxEntry) {
        if e.integration == "slack" {
            let key = self.slack_key(&e);
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let q = queues.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let held = Arc::new(AtomicUsize::new(0));
                tokio::spawn(self.clone().slack_worker(key.clone(), rx, held.clone()));
                SlackQueue { tx, held }
            });
            if take_place(&q.held, self.capacity) {
                let _ = q.tx.send(e);
            } else {
                drop(queues);
                self.overflowed(e, &format!("Slack channel {key}"));
            }
        } else if take_place(&self.http_held, self.capacity) {
            let held = Held(self.http_held.clone(), 1);
            let this = self.clone();
            tokio::spawn(async move {
                this.http_worker(e).await;
                drop(held);
            });
        } else {
            self.overflowed(e, "webhooks and scale hooks");
        }
    }

    /// Counts, logs and dead-letters `e`, whose queue (`queue`) is full.
    fn overflowed(self: &Arc<Self>, mut e: OutboxEntry, queue: &str) {
        self.overflow.inc();
        let why = format!(
            "delivery queue full: the queue of {queue} holds {} notifications",
            self.capacity
        );
        tracing::warn!(receiver = %e.receiver, kind = %e.integration, id = e.id, capacity = self.capacity, "notification not queued: {why}");
        let this = self.clone();
        tokio::spawn(async move { this.dead(&mut e, &why).await });
    }

    /// Re-sends what was pending when the process stopped.
    pub async fn resume(self: &Arc<Self>) {
        match self.store.outbox(OutboxState::Pending, 10_000).await {
            Ok(entries) => {
                if !entries.is_empty() {
                    tracing::info!(
                        count = entries.len(),
                        "resuming notifications pending at the last stop"
                    );
                }
                for e in entries {
                    self.start(e);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read pending notifications"),
        }
    }

    /// An operator's retry of a dead letter.
    pub async fn retry(self: &Arc<Self>, id: i64) -> Result<bool, crate::store::StoreError> {
        let Some(mut e) = self.store.outbox_entry(id).await? else {
            return Ok(false);
        };
        if e.state != OutboxState::Dead {
            return Ok(false);
        }
        e.state = OutboxState::Pending;
        e.attempts = 0;
        if let Ok(mut n) = serde_json::from_value::<Notification>(e.payload.clone()) {
            n.reason = Reason::ManualRetry;
            e.payload = serde_json::to_value(&n).unwrap_or(e.payload);
        }
        self.store
            .set_state(id, OutboxState::Pending, 0, None)
            .await?;
        self.start(e);
        Ok(true)
    }

    /// An operator's discard of a dead letter.
    pub async fn discard(&self, id: i64) -> Result<bool, crate::store::StoreError> {
        match self.store.outbox_entry(id).await? {
            Some(e) if e.state == OutboxState::Dead => {
                self.store
                    .set_state(
                        id,
                        OutboxState::Discarded,
                        e.attempts,
                        e.last_error.as_deref(),
                    )
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Re-tries dead letters of receivers whose policy is `retry`, each `retry_every`.
    pub async fn retry_dead_periodically(self: Arc<Self>) {
        let mut last: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let config = self.config();
            let Ok(dead) = self.store.outbox(OutboxState::Dead, 1000).await else {
                continue;
            };
            for e in dead {
                let Some(r) = config.receivers.get(&e.receiver) else {
                    continue;
                };
                if r.dead_letter.policy != DeadLetterAction::Retry {
                    continue;
                }
                let every = r
                    .dead_letter
                    .retry_every
                    .unwrap_or(Duration::from_secs(300));
                if last.get(&e.receiver).is_some_and(|t| t.elapsed() < every) {
                    continue;
                }
                last.insert(e.receiver.clone(), Instant::now());
                let _ = self.retry(e.id).await;
            }
        }
    }

    async fn log(
        &self,
        e: &OutboxEntry,
        started: Instant,
        result: &Result<(u16, String), AttemptError>,
    ) {
        let (ok, status, response) = match result {
            Ok((s, body)) => (true, Some(*s), body.clone()),
            Err(err) => (false, err.status, err.message.clone()),
        };
        let a = Attempt {
            outbox_id: e.id,
            at: now_ms(),
            receiver: e.receiver.clone(),
            integration: e.integration.clone(),
            ok,
            status,
            latency_ms: started.elapsed().as_millis() as i64,
            response: response.chars().take(1000).collect(),
        };
        if let Err(err) = self.store.log_attempt(&a).await {
            tracing::warn!(error = %err, "cannot log delivery attempt");
        }
    }

    async fn http_worker(self: Arc<Self>, mut e: OutboxEntry) {
        let config = self.config();
        let (delays, url, token, secret, timeout, body) = if e.integration == "scale" {
            let Some(h) = config.scale_hooks.iter().find(|h| h.name == e.receiver) else {
                return self.dead(&mut e, "scale hook no longer configured").await;
            };
            let req: nunchi_model::ScaleRequest =
                match serde_json::from_value(e.payload["request"].clone()) {
                    Ok(r) => r,
                    Err(err) => {
                        return self
                            .dead(&mut e, &format!("bad scale payload: {err}"))
                            .await;
                    }
                };
            let alert: Option<nunchi_model::Alert> =
                serde_json::from_value(e.payload["alert"].clone()).ok();
            (
                crate::config::DEFAULT_RETRY_DELAYS.to_vec(),
                h.url.clone(),
                None,
                h.hmac_secret.clone(),
                h.timeout,
                scale::body(&h.name, &req, alert.as_ref(), &self.external_url),
            )
        } else {
            let Some(t) = config
                .receivers
                .get(&e.receiver)
                .and_then(|r| r.webhooks.get(e.target))
            else {
                return self.dead(&mut e, "receiver no longer configured").await;
            };
            let n: Notification = match serde_json::from_value(e.payload.clone()) {
                Ok(n) => n,
                Err(err) => return self.dead(&mut e, &format!("bad payload: {err}")).await,
            };
            (
                t.retry_delays.clone(),
                t.url.clone(),
                t.token.clone(),
                t.hmac_secret.clone(),
                t.timeout,
                webhook::body(&n, t.max_alerts, &self.external_url),
            )
        };
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let started = Instant::now();
            let result = webhook::post(
                &self.http,
                &url,
                token.as_deref(),
                secret.as_deref(),
                timeout,
                &body,
            )
            .await;
            e.attempts += 1;
            self.log(&e, started, &result).await;
            match result {
                Ok(_) => {
                    let _ = self
                        .store
                        .set_state(e.id, OutboxState::Delivered, e.attempts, None)
                        .await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(receiver = %e.receiver, kind = %e.integration, attempt = e.attempts, error = %err.message, "delivery failed");
                    e.last_error = Some(err.message.clone());
                    let next = delays.get(e.attempts as usize - 1);
                    match next {
                        Some(d) if err.is_retryable() => {
                            wait = jitter(*d).max(err.retry_after.unwrap_or_default());
                            let _ = self
                                .store
                                .set_state(
                                    e.id,
                                    OutboxState::Pending,
                                    e.attempts,
                                    Some(&err.message),
                                )
                                .await;
                        }
                        _ => return self.dead(&mut e, &err.message).await,
                    }
                }
            }
        }
    }

    async fn dead(self: &Arc<Self>, e: &mut OutboxEntry, why: &str) {
        let config = self.config();
        let policy = config
            .receivers
            .get(&e.receiver)
            .map(|r| r.dead_letter.clone())
            .unwrap_or_default();
        let state = if policy.policy == DeadLetterAction::Ignore {
            OutboxState::Discarded
        } else {
            OutboxState::Dead
        };
        tracing::error!(receiver = %e.receiver, kind = %e.integration, id = e.id, attempts = e.attempts, error = why, policy = ?policy.policy, "notification dead-lettered");
        let _ = self
            .store
            .set_state(e.id, state, e.attempts, Some(why))
            .await;
        if let (DeadLetterAction::Notify, Some(to)) = (policy.policy, policy.notify_receiver) {
            if to == e.receiver {
                return;
            }
            let now = now_ms();
            let labels: BTreeMap<String, String> = [
                (
                    "alertname".to_owned(),
                    "NotificationDeadLettered".to_owned(),
                ),
                ("receiver".to_owned(), e.receiver.clone()),
                ("integration".to_owned(), e.integration.clone()),
                ("severity".to_owned(), "warning".to_owned()),
            ]
            .into();
            let annotations = [(
                "summary".to_owned(),
                format!(
                    "A notification to {} failed every attempt: {why}",
                    e.receiver
                ),
            )]
            .into();
            let n = Notification {
                receiver: to.clone(),
                group_key: format!("dead-letter:{}", e.id),
                group_labels: labels.clone(),
                alerts: vec![nunchi_model::Alert {
                    labels,
                    annotations,
                    starts_at: now,
                    ends_at: now + 3_600_000,
                    generator_url: String::new(),
                    value: f64::from(e.attempts),
                    threshold: None,
                    flapping: false,
                }],
                reason: Reason::NewGroup,
                at: now,
                dashboard_url: config.dashboard_url.clone(),
            };
            let this = self.clone();
            tokio::spawn(async move { this.notify(&n).await });
        }
    }
}

//! Delivery: every notification goes into the outbox ([`crate::store`]) first, then to its
//! integration. Webhooks and scale hooks are retried with growing delays and jitter (1 s,
//! 5 s, 30 s, 2 min by default), honouring `Retry-After`; Slack goes through one queue per
//! channel with a token bucket of one message a second, honours 429 `Retry-After`, and
//! folds a backlog into one digest message. A notification that fails every attempt
//! becomes a dead letter and its receiver's policy applies (hold, retry, ignore, notify).
//! Every attempt is logged with status, latency and response.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;

use crate::config::{Config, DeadLetterAction};
use crate::notify::{AttemptError, Notification, Reason, scale, slack, webhook};
use crate::store::{Attempt, OutboxEntry, OutboxState, SlackRef, Store, next_id};

/// The one-message-a-second pace Slack documents per channel.
pub const SLACK_INTERVAL: Duration = Duration::from_secs(1);

/// Messages a channel may take at once before the one-a-second pace applies (Slack
/// allows short bursts).
pub const SLACK_BURST: f64 = 3.0;

/// Notifications waiting for one channel that are folded into a digest.
pub const DIGEST_MIN: usize = 3;

/// Sends outbox entries.
pub struct Delivery {
    store: Store,
    http: reqwest::Client,
    slack: slack::Slack,
    config: Arc<RwLock<Arc<Config>>>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<OutboxEntry>>>,
    external_url: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
    ) -> Arc<Delivery> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("nunchi/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(Delivery {
            store,
            http,
            slack: slack::Slack::default(),
            config,
            queues: Mutex::new(HashMap::new()),
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

    /// Starts delivering an entry already in the outbox.
    pub fn start(self: &Arc<Self>, e: OutboxEntry) {
        if e.integration == "slack" {
            let key = self.slack_key(&e);
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let tx = queues.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().slack_worker(key.clone(), rx));
                tx
            });
            let _ = tx.send(e);
        } else {
            tokio::spawn(self.clone().http_worker(e));
        }
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

    fn slack_key(&self, e: &OutboxEntry) -> String {
        let config = self.config();
        config
            .receivers
            .get(&e.receiver)
            .and_then(|r| r.slack.get(e.target))
            .map_or_else(
                || e.receiver.clone(),
                |t| format!("{}#{}", t.url, t.channel.clone().unwrap_or_default()),
            )
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

    async fn slack_worker(
        self: Arc<Self>,
        key: String,
        mut rx: mpsc::UnboundedReceiver<OutboxEntry>,
    ) {
        let mut next_send = Instant::now();
        let mut tokens = SLACK_BURST;
        let mut refilled = Instant::now();
        let mut queue: VecDeque<OutboxEntry> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match rx.recv().await {
                    Some(e) => queue.push_back(e),
                    None => return,
                }
            }
            tokens = (tokens + refilled.elapsed().as_secs_f64() / SLACK_INTERVAL.as_secs_f64())
                .min(SLACK_BURST);
            refilled = Instant::now();
            if tokens < 1.0 {
                let wait = SLACK_INTERVAL.mul_f64(1.0 - tokens);
                next_send = next_send.max(Instant::now() + wait);
            }
            tokio::time::sleep_until(next_send.into()).await;
            tokens = (tokens + refilled.elapsed().as_secs_f64() / SLACK_INTERVAL.as_secs_f64())
                .min(SLACK_BURST);
            refilled = Instant::now();
            while let Ok(e) = rx.try_recv() {
                queue.push_back(e);
            }
            // A backlog (several notifications waiting for the channel's turn) goes out as
            // one digest; otherwise one notification per message.
            let mut batch: Vec<OutboxEntry> = if queue.len() >= DIGEST_MIN {
                queue.drain(..).collect()
            } else {
                queue.pop_front().into_iter().collect()
            };
            let mut attempt = 0usize;
            loop {
                let started = Instant::now();
                let result = self.send_slack(&batch).await;
                tokens = (tokens - 1.0).max(0.0);
                attempt += 1;
                let logged = result
                    .as_ref()
                    .map(|_| (200, "ok".to_owned()))
                    .map_err(|x| AttemptError {
                        status: x.status,
                        message: x.message.clone(),
                        retry_after: x.retry_after,
                        retryable: x.retryable,
                    });
                for e in &mut batch {
                    e.attempts += 1;
                    self.log(e, started, &logged).await;
                }
                match result {
                    Ok(()) => {
                        for e in &batch {
                            let _ = self
                                .store
                                .set_state(e.id, OutboxState::Delivered, e.attempts, None)
                                .await;
                        }
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(channel = %key, attempt, error = %err.message, "Slack delivery failed");
                        let delay = crate::config::DEFAULT_RETRY_DELAYS
                            .get(attempt - 1)
                            .copied();
                        match (err.retry_after, delay) {
                            (Some(ra), _) if attempt < 20 => next_send = Instant::now() + ra,
                            (None, Some(d)) if err.is_retryable() => {
                                next_send = Instant::now() + jitter(d)
                            }
                            _ => {
                                for e in &mut batch {
                                    self.dead(e, &err.message).await;
                                }
                                break;
                            }
                        }
                        tokio::time::sleep_until(next_send.into()).await;
                        while let Ok(e) = rx.try_recv() {
                            queue.push_back(e);
                        }
                        if batch.len() + queue.len() >= DIGEST_MIN {
                            batch.extend(queue.drain(..));
                        }
                    }
                }
            }
        }
    }

    async fn send_slack(&self, batch: &[OutboxEntry]) -> Result<(), AttemptError> {
        let config = self.config();
        let gone = || AttemptError {
            status: None,
            message: "receiver no longer configured".into(),
            retry_after: None,
            retryable: false,
        };
        let first = &batch[0];
        let target = config
            .receivers
            .get(&first.receiver)
            .and_then(|r| r.slack.get(first.target))
            .ok_or_else(gone)?;
        let ns: Vec<Notification> = batch
            .iter()
            .filter_map(|e| serde_json::from_value(e.payload.clone()).ok())
            .collect();
        if ns.is_empty() {
            return Err(AttemptError {
                status: None,
                message: "bad payload".into(),
                retry_after: None,
                retryable: false,
            });
        }
        let ref_key = |e: &OutboxEntry| format!("{}/{}", e.receiver, e.target);
        if ns.len() == 1 {
            let n = &ns[0];
            let old = self
                .store
                .slack_ref(&n.group_key, &ref_key(first))
                .await
                .ok()
                .flatten();
            let content = slack::message(n, target.title.as_deref());
            let resolved_only = n.firing().next().is_none();
            let (update, thread) = match (&old, resolved_only) {
                (Some(r), true) if !r.digest => (Some(r), None),
                (Some(r), true) => (None, Some(r)),
                _ => (None, None),
            };
            let posted = self.slack.send(target, content, update, thread).await?;
            let keep = if resolved_only { None } else { posted };
            let _ = self
                .store
                .set_slack_ref(&n.group_key, &ref_key(first), keep.as_ref())
                .await;
            return Ok(());
        }
        tracing::info!(count = ns.len(), "Slack backlog folded into one digest");
        let posted = self
            .slack
            .send(target, slack::digest(&ns), None, None)
            .await?;
        for (e, n) in batch.iter().zip(&ns) {
            let r = posted.clone().map(|p| SlackRef { digest: true, ..p });
            let keep = if n.firing().next().is_none() { None } else { r };
            let _ = self
                .store
                .set_slack_ref(&n.group_key, &ref_key(e), keep.as_ref())
                .await;
        }
        Ok(())
    }
}

//! The Slack side of delivery: one queue per channel, paced by a token bucket, a backlog
//! folded into one digest, and the message threads kept per alert group.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{DIGEST_MIN, Delivery, Held, SLACK_BURST, SLACK_INTERVAL, jitter};
use crate::notify::{AttemptError, Notification, slack};
use crate::store::{OutboxEntry, OutboxState, SlackRef};

impl Delivery {
    pub(super) fn slack_key(&self, e: &OutboxEntry) -> String {
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

    pub(super) async fn slack_worker(
        self: Arc<Self>,
        key: String,
        mut rx: mpsc::UnboundedReceiver<OutboxEntry>,
        held: Arc<AtomicUsize>,
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
            // The batch's places are given back once it is delivered or dead-lettered.
            let mut places = Held(held.clone(), batch.len());
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
                            places.1 += queue.len();
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

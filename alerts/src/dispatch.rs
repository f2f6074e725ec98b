//! The dispatcher: alerts in, notifications out, in Alertmanager's model. Each alert goes
//! to the routes it matches; within a route, alerts with equal `group_by` labels form a
//! group. A new group is flushed after `group_wait`, a changed one every `group_interval`,
//! an unchanged firing one every `repeat_interval`. Silenced and inhibited alerts are left
//! out at flush time. What each flush sent is kept in the notification log (durable), so
//! after a restart an alert that was already paged is not paged again, and one that
//! resolved meanwhile still gets its resolved notice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use nunchi_model::{Alert, ScaleAction, ScaleRequest, now_ms};
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::delivery::{Delivery, DeliveryOptions};
use crate::inhibit::inhibited;
use crate::notify::{Notification, Reason};
use crate::silence::{Silence, SilenceError};
use crate::store::{NotifyRecord, Store, StoreError, next_id};

/// An error from the dispatcher's API.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A silence is invalid.
    #[error(transparent)]
    Silence(#[from] SilenceError),
    /// No such silence.
    #[error("silence {0} not found")]
    NoSuchSilence(String),
}

struct Group {
    receiver: String,
    labels: BTreeMap<String, String>,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    alerts: BTreeMap<u64, Alert>,
    created: i64,
    last_flush: Option<i64>,
}

impl Group {
    fn due(&self) -> i64 {
        match self.last_flush {
            None => self.created + self.group_wait.as_millis() as i64,
            Some(t) => t + self.group_interval.as_millis() as i64,
        }
    }
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    firing: HashMap<u64, Alert>,
    silences: Vec<Silence>,
    nflog: HashMap<(String, String), NotifyRecord>,
    /// Holds sent per (group, reason) since the group's last action, so a repeated hold is
    /// sent once however many rules share the reason.
    scale_last: HashMap<(String, String), (ScaleAction, String)>,
}

/// A group as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupView {
    /// Group key.
    pub key: String,
    /// Receiver.
    pub receiver: String,
    /// Group labels.
    pub labels: BTreeMap<String, String>,
    /// Alerts in it.
    pub alerts: Vec<Alert>,
}

/// What happened to a scale request.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleOutcome {
    /// Sent to this many hooks.
    Sent(usize),
    /// Not sent: the group is cooling down until this time (ms).
    CoolingDown(i64),
    /// Not sent: the same hold was already sent.
    Repeated,
}

/// The alert dispatcher (in-process Alertmanager).
#[derive(Clone)]
pub struct Alertmanager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<RwLock<Arc<Config>>>,
    store: Store,
    delivery: Arc<Delivery>,
    state: Mutex<State>,
    wake: Notify,
}

fn group_key(route: &str, labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{route}}}:{{{}}}", l.join(","))
}

impl Alertmanager {
    /// A dispatcher over `store` with `config`, sending as `delivery` says; loads silences
    /// and the notification log and resumes notifications left pending by the last run.
    pub async fn start(
        config: Config,
        store: Store,
        external_url: String,
        delivery: DeliveryOptions,
    ) -> Result<Alertmanager, StoreError> {
        let config = Arc::new(RwLock::new(Arc::new(config)));
        let delivery = Delivery::new(store.clone(), config.clone(), external_url, delivery);
        let mut state = State {
            silences: store.silences(now_ms()).await?,
            ..State::default()
        };
        for (g, r, rec) in store.nflog().await? {
            state.nflog.insert((g, r), rec);
        }
        delivery.resume().await;
        tokio::spawn(delivery.clone().retry_dead_periodically());
        Ok(Alertmanager {
            inner: Arc::new(Inner {
                config,
                store,
                delivery,
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> Arc<Config> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration (hot reload). Existing groups keep their alerts and are
    /// re-routed on the next update.
    pub fn reload(&self, config: Config) {
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.inner.wake.notify_one();
    }

    /// The delivery store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The delivery loop (dead-letter retry and discard).
    pub fn delivery(&self) -> &Arc<Delivery> {
        &self.inner.delivery
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes alerts from the rule evaluator: firing ones (ends_at in the future) and
    /// resolved ones.
    pub fn put(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let config = self.config();
        let now = now_ms();
        let mut st = self.lock();
        for a in alerts {
            let fp = a.fingerprint();
            if a.resolved_at(now) {
                st.firing.remove(&fp);
            } else {
                st.firing.insert(fp, a.clone());
            }
            for route in config.route.matching(&a.labels) {
                let labels = route.group_labels(&a.labels);
                let key = group_key(&route.id, &labels);
                let g = st.groups.entry(key).or_insert_with(|| Group {
                    receiver: route.receiver.clone(),
                    labels,
                    group_wait: route.group_wait,
                    group_interval: route.group_interval,
                    repeat_interval: route.repeat_interval,
                    alerts: BTreeMap::new(),
                    created: now,
                    last_flush: None,
                });
                g.alerts.insert(fp, a.clone());
            }
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Runs the flush loop until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.flush_due().await;
            let sleep = next.map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64)
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn flush_due(&self) -> Option<i64> {
        let now = now_ms();
        let config = self.config();
        let mut out = Vec::new();
        let mut records = Vec::new();
        let next = {
            let mut st = self.lock();
            let firing_all: Vec<Alert> = st.firing.values().cloned().collect();
            let st = &mut *st;
            st.silences.retain(|s| s.ends_at > now - 3_600_000);
            let due: Vec<String> = st
                .groups
                .iter()
                .filter(|(_, g)| g.due() <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                let Some(g) = st.groups.get_mut(&key) else {
                    continue;
                };
                g.last_flush = Some(now);
                let muted = |a: &Alert| {
                    st.silences.iter().any(|s| s.mutes(&a.labels, now))
                        || inhibited(&config.inhibit_rules, &firing_all, &a.labels)
                };
                let firing: Vec<&Alert> = g
                    .alerts
                    .values()
                    .filter(|a| !a.resolved_at(now) && !muted(a))
                    .collect();
                let nk = (key.clone(), g.receiver.clone());
                let rec = st.nflog.get(&nk);
                let before: BTreeSet<u64> = rec
                    .map(|r| r.firing.iter().copied().collect())
                    .unwrap_or_default();
                let resolved: Vec<&Alert> = g
                    .alerts
                    .values()
                    .filter(|a| a.resolved_at(now) && before.contains(&a.fingerprint()))
                    .collect();
                let now_firing: BTreeSet<u64> = firing.iter().map(|a| a.fingerprint()).collect();
                let flap_before: BTreeSet<u64> = rec
                    .map(|r| r.flapping.iter().copied().collect())
                    .unwrap_or_default();
                let flap_now: BTreeSet<u64> = firing
                    .iter()
                    .filter(|a| a.flapping)
                    .map(|a| a.fingerprint())
                    .collect();
                let reason = if !now_firing.is_subset(&before)
                    || (rec.is_none() && !firing.is_empty())
                {
                    Some(if rec.is_none() {
                        Reason::NewGroup
                    } else {
                        Reason::NewAlerts
                    })
                } else if !resolved.is_empty() {
                    Some(Reason::Resolved)
                } else if !flap_now.is_subset(&flap_before) {
                    Some(Reason::Flapping)
                } else if !firing.is_empty()
                    && rec.is_some_and(|r| now - r.sent_at >= g.repeat_interval.as_millis() as i64)
                {
                    Some(Reason::Repeat)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    let mut alerts: Vec<Alert> = firing.iter().map(|a| (*a).clone()).collect();
                    alerts.extend(resolved.iter().map(|a| (*a).clone()));
                    out.push(Notification {
                        receiver: g.receiver.clone(),
                        group_key: key.clone(),
                        group_labels: g.labels.clone(),
                        alerts,
                        reason,
                        at: now,
                        dashboard_url: config.dashboard_url.clone(),
                    });
                    let rec = (!now_firing.is_empty()).then(|| NotifyRecord {
                        firing: now_firing.iter().copied().collect(),
                        resolved: Vec::new(),
                        flapping: flap_now.iter().copied().collect(),
                        sent_at: now,
                    });
                    match &rec {
                        Some(r) => {
                            st.nflog.insert(nk.clone(), r.clone());
                        }
                        None => {
                            st.nflog.remove(&nk);
                        }
                    }
                    records.push((nk, rec));
                } else if now_firing.len() < before.len() {
                    // Alerts muted since the last notification: they are no longer counted as sent.
                    let rec = NotifyRecord {
                        firing: now_firing.iter().copied().collect(),
                        resolved: Vec::new(),
                        flapping: flap_now.iter().copied().collect(),
                        sent_at: rec.map_or(now, |r| r.sent_at),
                    };
                    st.nflog.insert(nk.clone(), rec.clone());
                    records.push((nk, Some(rec)));
                }
                g.alerts.retain(|_, a| !a.resolved_at(now));
                if g.alerts.is_empty() {
                    st.groups.remove(&key);
                }
            }
            st.groups.values().map(Group::due).min()
        };
        for ((g, r), rec) in records {
            if let Err(e) = self.inner.store.set_nflog(&g, &r, rec.as_ref()).await {
                tracing::error!(error = %e, "cannot record notification log");
            }
        }
        for n in out {
            tracing::info!(receiver = %n.receiver, group = %n.group_key, reason = ?n.reason, alerts = n.alerts.len(), "notifying");
            self.inner.delivery.notify(&n).await;
        }
        next
    }

    /// Groups currently held.
    pub fn groups(&self) -> Vec<GroupView> {
        let st = self.lock();
        st.groups
            .iter()
            .map(|(k, g)| GroupView {
                key: k.clone(),
                receiver: g.receiver.clone(),
                labels: g.labels.clone(),
                alerts: g.alerts.values().cloned().collect(),
            })
            .collect()
    }

    /// Whether an active silence mutes `labels` now.
    pub fn silenced(&self, labels: &BTreeMap<String, String>) -> bool {
        let now = now_ms();
        self.lock().silences.iter().any(|s| s.mutes(labels, now))
    }

    /// Creates (or, with an existing id, replaces) a silence; returns its id.
    pub async fn put_silence(&self, mut s: Silence) -> Result<String, AlertsError> {
        s.validate()?;
        if s.id.is_empty() {
            s.id = format!("{:016x}", next_id(now_ms()));
        }
        self.inner.store.put_silence(&s).await?;
        let mut st = self.lock();
        st.silences.retain(|x| x.id != s.id);
        st.silences.push(s.clone());
        Ok(s.id)
    }

    /// Ends a silence now.
    pub async fn expire_silence(&self, id: &str) -> Result<(), AlertsError> {
        let now = now_ms();
        let s = {
            let st = self.lock();
            st.silences.iter().find(|s| s.id == id).cloned()
        };
        let mut s = s.ok_or_else(|| AlertsError::NoSuchSilence(id.to_owned()))?;
        s.ends_at = now.max(s.starts_at + 1).min(s.ends_at);
        if s.starts_at > now {
            s.starts_at = now - 1;
            s.ends_at = now;
        }
        self.inner.store.put_silence(&s).await?;
        let mut st = self.lock();
        st.silences.retain(|x| x.id != s.id);
        st.silences.push(s);
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Silences, newest first (expired ones of the last hour included).
    pub fn silences(&self) -> Vec<Silence> {
        let mut v = self.lock().silences.clone();
        v.sort_by_key(|s| std::cmp::Reverse(s.starts_at));
        v
    }

    /// Sends a scale request to the hooks serving its group. Scale actions respect the
    /// group's cooldown; holds are sent once per reason (not at every evaluation).
    pub async fn scale(
        &self,
        mut req: ScaleRequest,
        alert: Option<&Alert>,
    ) -> Result<ScaleOutcome, AlertsError> {
        let config = self.config();
        let hooks: Vec<_> = config
            .scale_hooks
            .iter()
            .filter(|h| h.groups.is_empty() || h.groups.contains(&req.target_group))
            .collect();
        if hooks.is_empty() {
            return Ok(ScaleOutcome::Sent(0));
        }
        let now = req.at;
        let cooldown = hooks.iter().map(|h| h.cooldown).max().unwrap_or_default();
        let stored = self.inner.store.cooldown(&req.target_group).await?;
        let until = stored.as_ref().map_or(0, |(u, _)| *u);
        if req.action == ScaleAction::Hold {
            let mut st = self.lock();
            let key = (req.target_group.clone(), req.reason.clone());
            let last = st.scale_last.get(&key);
            if last.is_some_and(|(a, r)| *a == ScaleAction::Hold && *r == req.reason) {
                return Ok(ScaleOutcome::Repeated);
            }
            st.scale_last
                .insert(key, (ScaleAction::Hold, req.reason.clone()));
            req.cooldown_until = until;
            if req.idempotency_key.is_empty() {
                req.idempotency_key = format!("{}:hold:{}:{now}", req.target_group, req.rule);
            }
        } else {
            if until > now {
                return Ok(ScaleOutcome::CoolingDown(until));
            }
            req.cooldown_until = now + cooldown.as_millis() as i64;
            if req.idempotency_key.is_empty() {
                req.idempotency_key = format!(
                    "{}:{}:{}:{now}",
                    req.target_group,
                    serde_json::to_value(req.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    req.rule
                );
            }
            self.inner
                .store
                .set_cooldown(
                    &req.target_group,
                    req.cooldown_until,
                    &serde_json::to_value(&req).unwrap_or_default(),
                )
                .await?;
            // After an action, a hold for any rule of the group is news again.
            let mut st = self.lock();
            st.scale_last.retain(|(g, _), _| *g != req.target_group);
            st.scale_last.insert(
                (req.target_group.clone(), req.reason.clone()),
                (req.action, req.reason.clone()),
            );
        }
        tracing::info!(group = %req.target_group, action = ?req.action, reason = %req.reason, key = %req.idempotency_key, "scale request");
        let payload = serde_json::json!({"request": req, "alert": alert});
        for h in &hooks {
            self.inner
                .delivery
                .submit(
                    "scale",
                    &h.name,
                    0,
                    &format!("scale:{}", req.target_group),
                    payload.clone(),
                )
                .await;
        }
        Ok(ScaleOutcome::Sent(hooks.len()))
    }

    /// The cooldown of each group that has one: (group, until ms, last request).
    pub async fn cooldown(
        &self,
        group: &str,
    ) -> Result<Option<(i64, serde_json::Value)>, AlertsError> {
        Ok(self.inner.store.cooldown(group).await?)
    }
}

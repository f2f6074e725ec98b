//! Alerts as the rule evaluator hands them to delivery, and the scale actions sent to
//! autoscalers. Timestamps are milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an alert is in its lifecycle, as Prometheus names the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for `for` (or is kept by `keep_firing_for`).
    Firing,
}

impl AlertState {
    /// The name Prometheus uses (`ALERTS{alertstate=...}`, `/api/v1/alerts`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// An alert sent to delivery: firing while `ends_at` lies in the future, resolved once it
/// has passed (Alertmanager's convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identifying labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing.
    pub starts_at: i64,
    /// When it resolved, or until when it counts as firing without another update.
    pub ends_at: i64,
    /// Link to the expression that produced it.
    pub generator_url: String,
    /// The value of the expression at the last evaluation.
    pub value: f64,
    /// The threshold the expression compares with, when it has one.
    pub threshold: Option<f64>,
    /// Whether the alert is held because it changes state too often.
    pub flapping: bool,
}

impl Alert {
    /// Alertmanager's fingerprint of the label set: FNV-1a over names and values.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    /// Whether the alert has resolved at `now`.
    pub fn resolved_at(&self, now: i64) -> bool {
        self.ends_at <= now
    }

    /// The alert's name.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// FNV-1a (64 bit) of `labels`, names and values separated by 0xff as in Prometheus'
/// `model.LabelSet.Fingerprint`.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// What a scale hook asks an autoscaler to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleAction {
    /// Add capacity.
    ScaleOut,
    /// Remove capacity.
    ScaleIn,
    /// Change nothing (the data needed to decide is missing).
    Hold,
}

/// A scale trigger produced by a rule: the `scale` object of a scale hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// What to do.
    pub action: ScaleAction,
    /// How many instances to add or remove.
    pub step: u32,
    /// The group of instances the action is for.
    pub target_group: String,
    /// The value that caused it (absent for a hold on missing data).
    pub value: Option<f64>,
    /// The threshold it crossed.
    pub threshold: Option<f64>,
    /// Why (for holds: what was missing).
    pub reason: String,
    /// The rule that produced it.
    pub rule: String,
    /// The same key for the same decision, so a receiver can drop repeats.
    pub idempotency_key: String,
    /// No further scale action for the group is sent before this (ms).
    pub cooldown_until: i64,
    /// When it was decided (ms).
    pub at: i64,
}

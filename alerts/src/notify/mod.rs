//! Notifications and the integrations that deliver them. A [`Notification`] is what one
//! group flush sends to one receiver; [`webhook`] turns it into Alertmanager's webhook JSON
//! (version "4"), [`slack`] into Block Kit, and [`scale`] sends scale requests. Every body
//! that leaves is signed with [`sign`] when the destination has a secret.

pub mod scale;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use nunchi_model::Alert;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Why a notification was sent (`notification_reason` in webhook bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The group's first notification.
    NewGroup,
    /// Alerts joined the group.
    NewAlerts,
    /// Alerts in the group resolved.
    Resolved,
    /// Alerts in the group started flapping (and are held firing).
    Flapping,
    /// Nothing changed, but `repeat_interval` passed.
    Repeat,
    /// An operator retried a dead letter.
    ManualRetry,
}

/// What one group flush sends to one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The receiver.
    pub receiver: String,
    /// The group key (`{route}:{labels}`).
    pub group_key: String,
    /// The labels the group is grouped by.
    pub group_labels: BTreeMap<String, String>,
    /// Firing alerts, then resolved ones.
    pub alerts: Vec<Alert>,
    /// Why now.
    pub reason: Reason,
    /// When it was decided (ms).
    pub at: i64,
    /// Link base for the dashboard.
    pub dashboard_url: Option<String>,
}

impl Notification {
    /// Firing alerts at the time of the notification.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| !a.resolved_at(self.at))
    }

    /// Resolved alerts.
    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| a.resolved_at(self.at))
    }

    /// `firing` when any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.firing().next().is_some() {
            "firing"
        } else {
            "resolved"
        }
    }

    /// Labels every alert shares.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    /// Annotations every alert shares.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
}

fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Nunchi-Signature";
/// The timestamp header's name (Unix seconds, part of what is signed).
pub const TIMESTAMP_HEADER: &str = "X-Nunchi-Timestamp";

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature made by [`sign`] (constant time), for receivers written in Rust.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// RFC 3339 with milliseconds, as Alertmanager writes times.
pub use nunchi_model::time::rfc3339_millis as rfc3339;

/// The result of one attempt.
#[derive(Debug)]
pub struct AttemptError {
    /// The HTTP status, if one came back.
    pub status: Option<u16>,
    /// What went wrong.
    pub message: String,
    /// Wait at least this long before the next attempt (429 Retry-After).
    pub retry_after: Option<std::time::Duration>,
    /// Whether another attempt could succeed (4xx other than 408/429 cannot).
    pub retryable: bool,
}

impl AttemptError {
    /// Whether another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

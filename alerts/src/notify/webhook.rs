//! Webhooks: Alertmanager's webhook JSON (version "4", `truncatedAlerts`), a signature
//! header when a secret is set, a per-attempt timeout. Retries and the dead-letter step are
//! the delivery loop's ([`crate::delivery`]).

use std::time::Instant;

use serde_json::json;

use super::{AttemptError, Notification, SIGNATURE_HEADER, TIMESTAMP_HEADER, rfc3339, sign};
use crate::config::WebhookTarget;

/// The JSON body Alertmanager would send for `n` (at most `max_alerts` alerts; 0: all).
pub fn body(n: &Notification, max_alerts: usize, external_url: &str) -> serde_json::Value {
    let total = n.alerts.len();
    let keep = if max_alerts == 0 {
        total
    } else {
        max_alerts.min(total)
    };
    let alerts: Vec<_> = n.alerts[..keep]
        .iter()
        .map(|a| {
            json!({
                "status": if a.resolved_at(n.at) { "resolved" } else { "firing" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": if a.resolved_at(n.at) { rfc3339(a.ends_at) } else { "0001-01-01T00:00:00Z".to_owned() },
                "generatorURL": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint()),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": total - keep,
        "status": n.status(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": external_url,
        "alerts": alerts,
        "notification_reason": n.reason,
    })
}

/// POSTs `body` to `url`, signed with `secret` when set; returns status and latency.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    secret: Option<&str>,
    timeout: std::time::Duration,
    body: &serde_json::Value,
) -> Result<(u16, String), AttemptError> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = secret {
        let ts = chrono::Utc::now().timestamp();
        req = req
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(s, ts, &bytes));
    }
    let started = Instant::now();
    let resp = req.body(bytes).send().await.map_err(|e| AttemptError {
        status: None,
        message: format!("{e}"),
        retry_after: None,
        retryable: true,
    })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(512).collect();
    tracing::debug!(
        url,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "webhook answered"
    );
    if status.is_success() {
        Ok((status.as_u16(), text))
    } else {
        Err(AttemptError {
            status: Some(status.as_u16()),
            message: format!("HTTP {status}: {text}"),
            retry_after,
            retryable: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
        })
    }
}

/// Sends `n` to `target`.
pub async fn send(
    client: &reqwest::Client,
    target: &WebhookTarget,
    n: &Notification,
    external_url: &str,
) -> Result<(u16, String), AttemptError> {
    post(
        client,
        &target.url,
        target.token.as_deref(),
        target.hmac_secret.as_deref(),
        target.timeout,
        &body(n, target.max_alerts, external_url),
    )
    .await
}

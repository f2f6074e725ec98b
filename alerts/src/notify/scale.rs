//! Scale hooks: a signed webhook in Alertmanager's shape with a `scale` object an
//! autoscaler acts on (action, step, target group, value and threshold, idempotency key,
//! cooldown). Cooldowns and the never-scale-on-missing-data rule are enforced by
//! [`crate::Alertmanager::scale`]; this module only shapes the body.

use nunchi_model::{Alert, ScaleRequest};
use serde_json::json;

use super::rfc3339;

/// The body sent to a scale hook.
pub fn body(
    hook: &str,
    req: &ScaleRequest,
    alert: Option<&Alert>,
    external_url: &str,
) -> serde_json::Value {
    let alerts: Vec<_> = alert
        .map(|a| {
            json!({
                "status": "firing",
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint()),
            })
        })
        .into_iter()
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("scale:{}", req.target_group),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": hook,
        "groupLabels": {"target_group": req.target_group},
        "commonLabels": alert.map(|a| a.labels.clone()).unwrap_or_default(),
        "commonAnnotations": alert.map(|a| a.annotations.clone()).unwrap_or_default(),
        "externalURL": external_url,
        "alerts": alerts,
        "scale": {
            "action": req.action,
            "step": req.step,
            "target_group": req.target_group,
            "value": req.value,
            "threshold": req.threshold,
            "reason": req.reason,
            "rule": req.rule,
            "idempotency_key": req.idempotency_key,
            "cooldown_until": rfc3339(req.cooldown_until),
            "at": rfc3339(req.at),
        },
    })
}

//! The bodies nunchi sends, as golden JSON files under `tests/golden/`: Alertmanager's
//! webhook JSON, the Slack Block Kit message (firing, resolved, digest) and the scale hook.
//! A difference prints the expected and actual bodies; `NUNCHI_UPDATE_GOLDEN=1` rewrites
//! the files after a deliberate change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nunchi_alerts::notify::{Notification, Reason, scale, slack, webhook};
use nunchi_model::{Alert, ScaleAction, ScaleRequest};

const T0: i64 = 1_795_000_000_000;

fn alert(instance: &str, value: f64, ends_at: i64) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname", "HostCpuHeadroomLow"),
        ("instance", instance),
        ("severity", "warning"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Alert {
        labels,
        annotations: [
            (
                "summary".to_owned(),
                format!("CPU on {instance} is {:.0}% busy", value * 100.0),
            ),
            (
                "runbook_url".to_owned(),
                "https://runbooks.example/cpu".to_owned(),
            ),
        ]
        .into(),
        starts_at: T0,
        ends_at,
        generator_url: "http://nunchi:9300/explore?query=x".to_owned(),
        value,
        threshold: Some(0.7),
        flapping: false,
    }
}

fn notification(resolved: bool) -> Notification {
    let at = T0 + 300_000;
    let ends = if resolved { at - 1000 } else { at + 240_000 };
    Notification {
        receiver: "oncall".into(),
        group_key: "{0}:{alertname=\"HostCpuHeadroomLow\"}".into(),
        group_labels: [("alertname".to_owned(), "HostCpuHeadroomLow".to_owned())].into(),
        alerts: vec![alert("web-1", 0.83, ends), alert("web-2", 0.91, ends)],
        reason: if resolved {
            Reason::Resolved
        } else {
            Reason::NewGroup
        },
        at,
        dashboard_url: Some("http://nunchi:9300".into()),
    }
}

fn check(name: &str, actual: serde_json::Value) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
        .join(format!("{name}.json"));
    let pretty = serde_json::to_string_pretty(&actual).expect("json") + "\n";
    if std::env::var_os("NUNCHI_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (NUNCHI_UPDATE_GOLDEN=1 creates it)",
            path.display()
        )
    });
    assert!(
        expected == pretty,
        "{name}: body differs from {}\n--- expected\n{expected}\n--- actual\n{pretty}",
        path.display()
    );
}

#[test]
fn webhook_bodies() {
    check(
        "webhook_firing",
        webhook::body(&notification(false), 0, "http://nunchi:9300"),
    );
    check(
        "webhook_resolved_truncated",
        webhook::body(&notification(true), 1, "http://nunchi:9300"),
    );
}

#[test]
fn slack_messages() {
    let to_json = |c| serde_json::to_value(c).expect("json");
    check(
        "slack_firing",
        to_json(slack::message(&notification(false), None)),
    );
    check(
        "slack_resolved",
        to_json(slack::message(&notification(true), None)),
    );
    check(
        "slack_digest",
        to_json(slack::digest(&[notification(false), notification(true)])),
    );
}

#[test]
fn scale_body() {
    let req = ScaleRequest {
        action: ScaleAction::ScaleOut,
        step: 2,
        target_group: "feed-app".into(),
        value: Some(0.83),
        threshold: Some(0.7),
        reason: "FeedBusy fired".into(),
        rule: "FeedBusy".into(),
        idempotency_key: "feed-app:scale_out:FeedBusy:1795000000000".into(),
        cooldown_until: T0 + 300_000,
        at: T0,
    };
    check(
        "scale_out",
        scale::body(
            "autoscaler",
            &req,
            Some(&alert("web-1", 0.83, T0 + 240_000)),
            "http://nunchi:9300",
        ),
    );
}

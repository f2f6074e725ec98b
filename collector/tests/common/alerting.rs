//! Helpers for the rule and delivery tests: start a collector with a rule file and an
//! alerting configuration, set a gauge, receiver snippets for the local Slack API and
//! webhook servers, and waits.

use std::path::Path;
use std::time::Duration;

use nunchi_stack::sinks::{SlackServer, WebhookReceiver};
use nunchi_testkit::{now_ms, wait_for};
use serde_json::Value;

use super::{Collector, api_get, push, series};

pub const SECRET: &str = "hook-secret-1234";

/// Writes the rule file and alerting config, starts the collector with them.
pub async fn start(dir: &Path, rules: &str, alerting: &str, extra: &[&str]) -> Collector {
    std::fs::write(dir.join("rules.yml"), rules).expect("rules");
    std::fs::write(dir.join("alertmanager.yml"), alerting).expect("alerting config");
    let r = dir.join("rules.yml").display().to_string();
    let a = dir.join("alertmanager.yml").display().to_string();
    let mut args = vec![
        "--rules",
        &r,
        "--alerting-config",
        &a,
        "--evaluation-interval",
        "250ms",
    ];
    args.extend_from_slice(extra);
    Collector::start(dir, &args).await
}

pub async fn set(c: &Collector, metric: &str, labels: &[(&str, &str)], v: f64) {
    let mut l = vec![("__name__", metric)];
    l.extend_from_slice(labels);
    let (status, body) = push(&c.write_url(), &[series(&l, &[(now_ms(), v)])], None).await;
    assert_eq!(status, 204, "{body}");
}

pub fn bot_slack(slack: &SlackServer) -> String {
    format!(
        "    slack_configs:\n      - api_url: {}/chat.postMessage\n        channel: '#alerts'\n        send_resolved: true\n        http_config:\n          authorization:\n            credentials: {}\n",
        slack.api_url, slack.token
    )
}

pub fn webhook(hook: &WebhookReceiver, path: &str, extra: &str) -> String {
    format!(
        "    webhook_configs:\n      - url: {}/{path}\n        hmac_secret: {SECRET}\n{extra}",
        hook.url
    )
}

pub async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    match wait_for(Duration::from_secs(secs), || {
        let r = f();
        async move { r }
    })
    .await
    {
        Some(v) => v,
        None => panic!("timed out waiting for {what}"),
    }
}

pub const CPU_RULE: &str = r#"groups:
  - name: host
    rules:
      - alert: HighCPU
        expr: cpu_usage > 0.7
        labels:
          severity: critical
        annotations:
          summary: "CPU at {{ $value | humanizePercentage }} on {{ $labels.instance }}"
          runbook_url: https://runbooks.example/high-cpu
"#;

pub async fn until_query(c: &Collector, q: &str) -> Value {
    let base = c.base.clone();
    let q = q.to_owned();
    wait_for(Duration::from_secs(10), || {
        let base = base.clone();
        let q = q.clone();
        async move {
            let r = super::query(&base, &q, now_ms()).await;
            r["data"]["result"]
                .as_array()
                .and_then(|a| a.first().cloned())
                .map(|v| v["metric"].clone())
                .map(|m| serde_json::json!({ "labels": m }))
        }
    })
    .await
    .unwrap_or_else(|| panic!("{q} never returned a series"))
}

pub async fn until_dead_letter(c: &Collector) -> Value {
    let base = c.base.clone();
    wait_for(Duration::from_secs(20), || {
        let base = base.clone();
        async move {
            let d = api_get(&base, "/api/v1/deliveries").await;
            d["data"]["deadLetters"]
                .as_array()
                .and_then(|a| a.first().cloned())
        }
    })
    .await
    .expect("a dead letter")
}

//! Alert delivery end to end: the collector binary evaluates rule files over data pushed
//! by remote_write and delivers to a local Slack API server and a webhook receiver that
//! checks the HMAC signature (both real HTTP, from `nunchi_stack::sinks`): grouping,
//! silences, inhibition, retries and dead letters, restarts, Slack's 429 and digests.
//! Scale hooks and rule states are in `rule_states.rs`.

mod common;

use std::time::Duration;

use common::alerting::*;
use common::{Collector, api_get, push, series};
use nunchi_stack::sinks::{SlackServer, WebhookReceiver};
use nunchi_testkit::{client, now_ms, wait_for};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_and_resolves_to_slack_and_a_signed_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n{}{}",
        bot_slack(&slack),
        webhook(&hook, "alerts", "")
    );
    let c = start(dir.path(), CPU_RULE, &am, &[]).await;
    set(&c, "cpu_usage", &[("instance", "host-1")], 0.9).await;

    let first = until("the firing Slack message", 15, || {
        slack.messages().into_iter().next()
    })
    .await;
    assert_eq!(first.method, "chat.postMessage");
    assert_eq!(first.channel, "#alerts");
    let text = first.all_text();
    for want in [
        "FIRING",
        "HighCPU",
        "critical",
        "host-1",
        "value *0.9* vs threshold *0.7*",
        "CPU at 90% on host-1",
        "runbook",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    let fired = until("the firing webhook", 10, || {
        hook.received().into_iter().next()
    })
    .await;
    assert!(fired.signature_ok, "signature must verify");
    let b = &fired.body;
    assert_eq!(b["version"], "4");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["receiver"], "oncall");
    assert_eq!(b["truncatedAlerts"], 0);
    assert_eq!(b["notification_reason"], "new_group");
    assert_eq!(b["groupLabels"]["alertname"], "HighCPU");
    assert_eq!(b["alerts"][0]["labels"]["instance"], "host-1");
    assert_eq!(b["alerts"][0]["status"], "firing");
    assert_eq!(
        b["alerts"][0]["fingerprint"].as_str().map(str::len),
        Some(16)
    );

    // Prometheus' APIs and series.
    let alerts = api_get(&c.base, "/api/v1/alerts").await;
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    assert_eq!(alerts["data"]["alerts"][0]["value"], "9e-01");
    let rules = api_get(&c.base, "/api/v1/rules?type=alert").await;
    let rule = &rules["data"]["groups"][0]["rules"][0];
    assert_eq!(
        (
            rule["name"].as_str(),
            rule["state"].as_str(),
            rule["health"].as_str()
        ),
        (Some("HighCPU"), Some("firing"), Some("ok")),
        "{rules}"
    );
    let recorded = api_get(&c.base, "/api/v1/rules?type=record").await;
    assert_eq!(
        recorded["data"]["groups"][0]["rules"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let q = until_query(&c, "ALERTS{alertname=\"HighCPU\",alertstate=\"firing\"}").await;
    assert_eq!(q["labels"]["instance"], "host-1");

    // Resolve: the Slack message is updated in place, the webhook says resolved.
    set(&c, "cpu_usage", &[("instance", "host-1")], 0.2).await;
    let update = until("the Slack update", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.method == "chat.update")
    })
    .await;
    assert_eq!(update.ts, first.ts, "the original message is updated");
    assert!(
        update.all_text().contains("RESOLVED"),
        "{}",
        update.all_text()
    );
    let resolved = until("the resolved webhook", 10, || {
        hook.received()
            .into_iter()
            .find(|r| r.body["status"] == "resolved")
    })
    .await;
    assert!(resolved.signature_ok);
    assert_eq!(resolved.body["notification_reason"], "resolved");
    assert_eq!(
        slack
            .messages()
            .iter()
            .filter(|m| m.method == "chat.postMessage")
            .count(),
        1,
        "no second page"
    );
    assert_eq!(slack.rate_limited(), 0, "stays within Slack's rate");

    // Every attempt is in the delivery log.
    let d = api_get(&c.base, "/api/v1/deliveries").await;
    let attempts = d["data"]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(attempts.len() >= 4, "{d}");
    assert!(attempts.iter().all(|a| a["ok"] == true), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_merges_silences_suppress_and_inhibition_mutes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    let rules = r#"groups:
  - name: g
    rules:
      - alert: HighCPU
        expr: cpu_usage > 0.7
        labels: {severity: warning}
      - alert: HostDown
        expr: host_up == 0
        labels: {severity: critical}
      - alert: DiskFull
        expr: disk_used > 0.9
        labels: {severity: warning}
      - alert: Noise
        expr: noise > 0
        labels: {severity: info}
"#;
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n{}inhibit_rules:\n  - source_matchers: [alertname=\"HostDown\"]\n    target_matchers: [severity=\"warning\"]\n    equal: [instance]\n",
        bot_slack(&slack)
    );
    let c = start(dir.path(), rules, &am, &[]).await;

    // A silence made through Alertmanager's v2 API.
    let now = chrono::Utc::now();
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "Noise", "isRegex": false, "isEqual": true}],
        "startsAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "test", "comment": "known noisy",
    });
    let r = client()
        .post(format!("{}/api/v2/silences", c.base))
        .json(&silence)
        .send()
        .await
        .expect("POST silence");
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.expect("json")["silenceID"]
        .as_str()
        .map(str::to_owned)
        .expect("id");
    let bad = client().post(format!("{}/api/v2/silences", c.base)).json(&serde_json::json!({"matchers": [], "startsAt": now.to_rfc3339(), "endsAt": now.to_rfc3339(), "createdBy": "x"})).send().await.expect("POST");
    assert_eq!(bad.status(), 400, "an empty silence is refused");

    // Two hosts breach in the same write: one message for the group.
    let t = now_ms();
    let both =
        ["a", "b"].map(|h| series(&[("__name__", "cpu_usage"), ("instance", h)], &[(t, 0.95)]));
    let (status, body) = push(&c.write_url(), &both, None).await;
    assert_eq!(status, 204, "{body}");
    set(&c, "noise", &[("instance", "a")], 1.0).await;
    let m = until("the grouped message", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("HighCPU"))
    })
    .await;
    let text = m.all_text();
    assert!(
        text.contains("`a`") && text.contains("`b`"),
        "both hosts in one message: {text}"
    );
    assert!(text.contains("(2)"), "{text}");

    // Host c is down (critical) and its disk is full (warning): the warning is inhibited.
    set(&c, "host_up", &[("instance", "c")], 0.0).await;
    set(&c, "disk_used", &[("instance", "c")], 0.95).await;
    set(&c, "disk_used", &[("instance", "d")], 0.95).await;
    until("the HostDown page", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("HostDown"))
    })
    .await;
    let disk = until("the DiskFull message", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("DiskFull"))
    })
    .await;
    let disk_lines: Vec<String> = slack
        .messages()
        .iter()
        .flat_map(|m| m.all_text().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains("DiskFull"))
        .collect();
    assert!(disk.all_text().contains("`d`"), "{}", disk.all_text());
    assert!(
        disk_lines.iter().all(|l| !l.contains("`c`")),
        "disk on c is inhibited by HostDown on c: {disk_lines:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !slack
            .messages()
            .iter()
            .any(|m| m.all_text().contains("Noise")),
        "silenced alert was sent"
    );
    let api_silences = api_get(&c.base, "/api/v2/silences").await;
    assert_eq!(
        api_silences[0]["status"]["state"], "active",
        "{api_silences}"
    );

    // Expiring the silence lets the alert through.
    let r = client()
        .delete(format!("{}/api/v2/silence/{id}", c.base))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    set(&c, "noise", &[("instance", "a")], 2.0).await;
    until("the Noise message after expiry", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("Noise"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_retries_then_a_dead_letter_that_an_operator_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = WebhookReceiver::start(SECRET).await;
    let ops = WebhookReceiver::start(SECRET).await;
    hook.set_failing(true);
    let am = format!(
        "route:\n  receiver: hook\n  group_wait: 0s\nreceivers:\n  - name: hook\n{}    dead_letter:\n      policy: notify\n      notify_receiver: ops\n  - name: ops\n{}",
        webhook(&hook, "down", "        retry_delays: [200ms, 400ms]\n"),
        webhook(&ops, "ops", "")
    );
    let c = start(dir.path(), CPU_RULE, &am, &[]).await;
    set(&c, "cpu_usage", &[("instance", "host-1")], 0.9).await;
    let dead = until_dead_letter(&c).await;
    assert_eq!(hook.attempts(), 3, "first attempt and two retries");
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"].as_str().unwrap_or("").contains("503"),
        "{dead}"
    );
    assert!(hook.received().is_empty());
    let notice = until("the dead-letter notice to ops", 10, || {
        ops.received().into_iter().next()
    })
    .await;
    assert_eq!(
        notice.body["alerts"][0]["labels"]["alertname"], "NotificationDeadLettered",
        "{}",
        notice.body
    );
    assert_eq!(notice.body["alerts"][0]["labels"]["receiver"], "hook");

    hook.set_failing(false);
    let id = dead["id"].as_i64().expect("id");
    let r = client()
        .post(format!("{}/api/v1/deliveries/{id}/retry", c.base))
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status(), 200);
    let got = until("the retried notification", 10, || {
        hook.received().into_iter().next()
    })
    .await;
    assert!(got.signature_ok);
    assert_eq!(got.body["alerts"][0]["labels"]["alertname"], "HighCPU");
    assert_eq!(got.body["notification_reason"], "manual_retry");
    let again = client()
        .post(format!("{}/api/v1/deliveries/{id}/retry", c.base))
        .send()
        .await
        .expect("retry");
    assert_eq!(
        again.status(),
        400,
        "a delivered notification is not a dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_firing_sends_no_second_page_and_the_resolve_still_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    std::fs::write(
        dir.path().join("collector.toml"),
        "[query]\nlookback_delta = \"8s\"\n",
    )
    .expect("config");
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n{}",
        bot_slack(&slack)
    );
    let cfg = dir.path().join("collector.toml").display().to_string();
    let mut c = start(dir.path(), CPU_RULE, &am, &["--config", &cfg]).await;
    let keep_high = |c: &Collector| {
        let url = c.write_url();
        tokio::spawn(async move {
            loop {
                let s = series(
                    &[("__name__", "cpu_usage"), ("instance", "host-1")],
                    &[(now_ms(), 0.9)],
                );
                let _ = push(&url, &[s], None).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let pusher = keep_high(&c);
    let first = until("the page", 15, || slack.messages().into_iter().next()).await;
    // Delivery is at least once: a page killed before its delivery is recorded is sent
    // again. Killed once it is recorded, the page is not.
    let base = c.base.clone();
    wait_for(Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let d = api_get(&base, "/api/v1/deliveries").await;
            d["data"]["pending"]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(())
        }
    })
    .await
    .expect("the page's delivery recorded");

    // Killed while firing, back with the condition still true: no second page.
    c.kill9();
    pusher.abort();
    c.restart().await;
    let pusher = keep_high(&c);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posts = slack
        .messages()
        .into_iter()
        .filter(|m| m.method == "chat.postMessage")
        .count();
    assert_eq!(
        posts,
        1,
        "paged again after a restart: {:?}",
        slack
            .messages()
            .iter()
            .map(|m| m.all_text())
            .collect::<Vec<_>>()
    );
    assert!(
        c.log_text().contains("alert state restored"),
        "{}",
        c.log_text()
    );

    // Killed while firing; the condition clears while it is down: the resolve comes.
    pusher.abort();
    c.kill9();
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.restart().await;
    let update = until("the resolve after restart", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.method == "chat.update")
    })
    .await;
    assert_eq!(update.ts, first.ts);
    assert!(update.all_text().contains("RESOLVED"));
    assert_eq!(
        slack
            .messages()
            .iter()
            .filter(|m| m.method == "chat.postMessage")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_is_honoured_and_a_storm_becomes_a_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    let hook_path = "services/T000/B000/XXXX";
    let am = format!(
        "route:\n  receiver: chat\n  group_by: [alertname, instance]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: chat\n    slack_configs:\n      - api_url: {}/{hook_path}\n        send_resolved: true\n",
        slack.base_url
    );
    let c = start(dir.path(), CPU_RULE, &am, &[]).await;
    slack.force_rate_limit(1);
    set(&c, "cpu_usage", &[("instance", "h0")], 0.9).await;
    let first = until("the first message after a 429", 15, || {
        slack.messages().into_iter().next()
    })
    .await;
    assert_eq!(first.method, "webhook");
    assert!(first.all_text().contains("h0"));
    assert_eq!(slack.rate_limited(), 1);
    let d = api_get(&c.base, "/api/v1/deliveries").await;
    assert!(
        d["data"]["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["status"] == 429)),
        "{d}"
    );

    // Twenty hosts at once: a digest, not twenty messages over twenty seconds.
    let series_now: Vec<_> = (1..=20)
        .map(|i| {
            series(
                &[("__name__", "cpu_usage"), ("instance", &format!("h{i}"))],
                &[(now_ms(), 0.95)],
            )
        })
        .collect();
    assert_eq!(push(&c.write_url(), &series_now, None).await.0, 204);
    until("a digest", 15, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("alert groups"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = slack.messages().len();
    assert!(n <= 4, "{n} messages for one storm");
    assert_eq!(
        slack.rate_limited(),
        1,
        "no further 429s: the bucket keeps to Slack's rate"
    );
}

const HOSTILE_RULE: &str = r#"groups:
  - name: hostile
    rules:
      - alert: Injected
        expr: injected > 0
        annotations:
          summary: "from {{ $labels.instance }}; see <https://runbooks.example/own|our runbook>"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_text_is_escaped_and_a_plain_ok_is_one_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    slack.answer_plain_ok(true);
    // Through the Web API: a bare `ok` is not the JSON chat.postMessage answers.
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n{}",
        bot_slack(&slack)
    );
    let c = start(dir.path(), HOSTILE_RULE, &am, &[]).await;
    set(
        &c,
        "injected",
        &[("instance", "<!channel> & <https://evil.example|innocent>")],
        1.0,
    )
    .await;
    let first = until("the Slack message", 15, || {
        slack.messages().into_iter().next()
    })
    .await;
    let body = first.body.to_string();
    let text = first.all_text();
    assert!(
        !text.contains("<!channel>"),
        "a mention got through: {text}"
    );
    assert!(
        !text.contains("<https://evil.example"),
        "a disguised link got through: {text}"
    );
    assert!(
        text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|innocent&gt;"),
        "{text}"
    );
    assert!(body.contains("&lt;!channel&gt;"), "{body}");
    // Past the 1 s and 5 s retries: a 2xx was the delivery.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(slack.messages().len(), 1, "sent again after a 2xx");
    let d = api_get(&c.base, "/api/v1/deliveries").await;
    let attempts = d["data"]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !attempts.is_empty() && attempts.iter().all(|a| a["ok"] == true),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slack_credentials_file_is_warned_of_at_load_and_read_at_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    let token_file = dir.path().join("slack-token");
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n    slack_configs:\n      - api_url: {}/chat.postMessage\n        channel: '#alerts'\n        http_config:\n          authorization:\n            credentials_file: {}\n",
        slack.api_url,
        token_file.display()
    );
    let c = start(dir.path(), CPU_RULE, &am, &[]).await;
    let log = c.log_text();
    assert!(
        log.contains("credentials_file") && log.contains("cannot read"),
        "no warning at load: {log}"
    );
    let rules = api_get(&c.base, "/api/v1/rules").await;
    let w = rules["data"]["alertingWarnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        w.contains("receivers[0].slack_configs[0].http_config.authorization.credentials_file"),
        "{rules}"
    );
    // The Rules page says so too.
    let page = common::http_get(format!("{}/rules", c.base))
        .await
        .expect("rules page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Alerting configuration") && page.contains("credentials_file"),
        "the Rules page does not show the warning"
    );
    // The file appears: the next send reads it.
    std::fs::write(&token_file, format!("{}\n", slack.token)).expect("token");
    set(&c, "cpu_usage", &[("instance", "host-1")], 0.9).await;
    let m = until("the Slack message", 20, || {
        slack.messages().into_iter().next()
    })
    .await;
    assert_eq!(m.method, "chat.postMessage");
}

//! Rule states end to end, on the collector binary: scale hooks (cooldown, holding on
//! missing data or a failing trigger query), hysteresis and flapping, and a broken rule
//! file on reload. Delivery itself is in `alerting.rs`.

mod common;

use std::time::Duration;

use common::alerting::*;
use common::{api_get, push, series};
use nunchi_stack::sinks::{SlackServer, WebhookReceiver};
use nunchi_testkit::{client, now_ms, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_hooks_respect_cooldown_and_hold_on_missing_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = WebhookReceiver::start(SECRET).await;
    std::fs::write(
        dir.path().join("collector.toml"),
        "[query]\nlookback_delta = \"2s\"\n",
    )
    .expect("config");
    let rules = r#"groups:
  - name: scaling
    rules:
      - alert: FeedBusy
        expr: avg(cpu_usage{job="feed"}) > 0.7
        labels: {scale: out, scale_group: feed-app, scale_step: "2", severity: info}
      - alert: FeedIdle
        expr: avg(cpu_usage{job="feed"}) < 0.2
        labels: {scale: in, scale_group: feed-app, severity: info}
"#;
    let am = format!(
        "route:\n  receiver: none\nreceivers:\n  - name: none\nscale_hooks:\n  - name: autoscaler\n    url: {}/scale\n    hmac_secret: {SECRET}\n    cooldown: 3s\n",
        hook.url
    );
    let cfg = dir.path().join("collector.toml").display().to_string();
    let c = start(dir.path(), rules, &am, &["--config", &cfg]).await;
    let url = c.write_url();
    let pusher = tokio::spawn(async move {
        loop {
            let s = series(
                &[
                    ("__name__", "cpu_usage"),
                    ("job", "feed"),
                    ("instance", "f1"),
                ],
                &[(now_ms(), 0.9)],
            );
            let _ = push(&url, &[s], None).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let scale = |r: &nunchi_stack::sinks::WebhookRequest| r.body["scale"].clone();
    let first = until("a scale_out", 15, || {
        hook.received()
            .into_iter()
            .find(|r| r.body["scale"]["action"] == "scale_out")
    })
    .await;
    assert!(first.signature_ok);
    let s = scale(&first);
    assert_eq!(
        (s["step"].as_u64(), s["target_group"].as_str()),
        (Some(2), Some("feed-app")),
        "{s}"
    );
    assert_eq!(s["threshold"].as_f64(), Some(0.7));
    assert!(
        (s["value"].as_f64().unwrap_or(0.0) - 0.9).abs() < 1e-9,
        "{s}"
    );
    assert!(s["idempotency_key"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(s["cooldown_until"].as_str().is_some());

    // Still breaching: nothing more inside the 3 s cooldown, the next step after it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let outs = |h: &WebhookReceiver| {
        h.received()
            .into_iter()
            .filter(|r| r.body["scale"]["action"] == "scale_out")
            .count()
    };
    assert_eq!(outs(&hook), 1, "a second scale_out inside the cooldown");
    until("the next scale_out after the cooldown", 10, || {
        (outs(&hook) >= 2).then_some(())
    })
    .await;
    let outs_seen = hook
        .received()
        .into_iter()
        .filter(|r| r.body["scale"]["action"] == "scale_out")
        .collect::<Vec<_>>();
    assert_ne!(
        outs_seen[0].body["scale"]["idempotency_key"],
        outs_seen[1].body["scale"]["idempotency_key"]
    );
    assert!(outs_seen[1].at.duration_since(outs_seen[0].at) >= Duration::from_millis(2900));

    // The data stops (the series goes stale): hold, never scale_in.
    pusher.abort();
    let hold = until("a hold", 15, || {
        hook.received()
            .into_iter()
            .find(|r| r.body["scale"]["action"] == "hold")
    })
    .await;
    assert!(
        hold.body["scale"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no data"),
        "{}",
        hold.body
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !hook
            .received()
            .iter()
            .any(|r| r.body["scale"]["action"] == "scale_in"),
        "scaled in on missing data"
    );
    let holds = hook
        .received()
        .iter()
        .filter(|r| r.body["scale"]["action"] == "hold")
        .count();
    assert!(
        holds <= 2,
        "a hold is sent once per reason, not every evaluation ({holds})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_trigger_query_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = WebhookReceiver::start(SECRET).await;
    std::fs::write(
        dir.path().join("collector.toml"),
        "[query]\nmax_samples = 3\n",
    )
    .expect("config");
    let rules = r#"groups:
  - name: scaling
    rules:
      - alert: FeedIdle
        expr: avg(avg_over_time(cpu_usage[10m])) < 0.2
        labels: {scale: in, scale_group: feed-app}
"#;
    let am = format!(
        "route:\n  receiver: none\nreceivers:\n  - name: none\nscale_hooks:\n  - name: autoscaler\n    url: {}/scale\n    hmac_secret: {SECRET}\n",
        hook.url
    );
    let cfg = dir.path().join("collector.toml").display().to_string();
    let c = start(dir.path(), rules, &am, &["--config", &cfg]).await;
    let t = now_ms();
    let s = series(
        &[("__name__", "cpu_usage"), ("instance", "f1")],
        &(0..10)
            .map(|i| (t - 60_000 + i * 5000, 0.05))
            .collect::<Vec<_>>(),
    );
    assert_eq!(push(&c.write_url(), &[s], None).await.0, 204);
    let hold = until("a hold for the failing query", 15, || {
        hook.received().into_iter().find(|r| {
            r.body["scale"]["reason"]
                .as_str()
                .is_some_and(|x| x.contains("query failed"))
        })
    })
    .await;
    assert_eq!(hold.body["scale"]["action"], "hold", "{}", hold.body);
    assert!(
        hook.received()
            .iter()
            .all(|r| r.body["scale"]["action"] == "hold"),
        "only holds"
    );
    let rules = api_get(&c.base, "/api/v1/rules").await;
    assert_eq!(
        rules["data"]["groups"][0]["rules"][0]["health"], "err",
        "{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_keeps_firing_until_the_clear_threshold_and_flapping_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = SlackServer::start().await;
    let rules = r#"groups:
  - name: g
    rules:
      - alert: HotLoad
        expr: load > 0.8
        clear_threshold: 0.6
      - alert: Flappy
        expr: flappy > 1
        flap_window: 1m
        flap_max_changes: 3
"#;
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n{}",
        bot_slack(&slack)
    );
    let c = start(dir.path(), rules, &am, &[]).await;
    let state = |name: &'static str| {
        let base = c.base.clone();
        async move {
            let a = api_get(&base, "/api/v1/alerts").await;
            a["data"]["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|x| x["labels"]["alertname"] == name)
        }
    };
    set(&c, "load", &[], 0.9).await;
    until("HotLoad page", 10, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("HotLoad"))
    })
    .await;
    set(&c, "load", &[], 0.7).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        state("HotLoad").await.map(|a| a["state"].clone()),
        Some("firing".into()),
        "0.7 is above the clear threshold"
    );
    set(&c, "load", &[], 0.5).await;
    until("HotLoad resolved", 10, || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.method == "chat.update" && m.all_text().contains("HotLoad"))
    })
    .await;

    // Flapping: once it has changed state more than 3 times, one "flapping" message, then
    // nothing while it keeps flapping.
    let flip = |i: usize| if i.is_multiple_of(2) { 2.0 } else { 0.0 };
    for i in 0..6 {
        set(&c, "flappy", &[], flip(i)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let notice = until("the flapping notice", 10, || {
        slack
            .messages()
            .into_iter()
            .position(|m| m.all_text().contains("FLAPPING"))
    })
    .await;
    for i in 6..14 {
        set(&c, "flappy", &[], flip(i)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let flappy: Vec<_> = slack
        .messages()
        .into_iter()
        .filter(|m| m.all_text().contains("Flappy"))
        .collect();
    let after = slack.messages().len() - notice - 1;
    assert_eq!(
        after,
        0,
        "messages after the flapping notice: {:?}",
        flappy
            .iter()
            .map(|m| (m.method.clone(), m.all_text()))
            .collect::<Vec<_>>()
    );
    assert!(
        flappy.len() <= 5,
        "{} messages for 14 state changes",
        flappy.len()
    );
    let a = state("Flappy").await;
    let rules = api_get(&c.base, "/api/v1/rules").await;
    let flap_alert = rules["data"]["groups"][0]["rules"][1]["alerts"]
        .as_array()
        .and_then(|v| v.first().cloned());
    assert!(
        a.is_some_and(|x| x["flapping"] == true)
            || flap_alert.is_some_and(|x| x["flapping"] == true),
        "{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_file_keeps_the_old_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(
        dir.path(),
        CPU_RULE,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        &[],
    )
    .await;
    let names = || async {
        let r = api_get(&c.base, "/api/v1/rules").await;
        r["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| r["name"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["HighCPU"]);
    let path = dir.path().join("rules.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: host\n    rules:\n      - alert: Broken\n        expr: sum(cpu_usage\n",
    )
    .expect("write");
    let r = client()
        .post(format!("{}/-/reload", c.base))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 500);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("rules.yml:4") && body.contains("could not parse expression"),
        "{body}"
    );
    assert_eq!(names().await, ["HighCPU"], "old rules keep running");
    c.hup();
    let log = until("the SIGHUP reload error", 10, || {
        let l = c.log_text();
        l.contains("SIGHUP").then_some(l)
    })
    .await;
    let _ = log;
    until("the failed reload logged", 10, || {
        c.log_text().contains("reload failed").then_some(())
    })
    .await;
    assert_eq!(names().await, ["HighCPU"]);
    std::fs::write(&path, CPU_RULE.replace("HighCPU", "VeryHighCPU")).expect("write");
    c.hup();
    let base = c.base.clone();
    wait_for(Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let r = api_get(&base, "/api/v1/rules").await;
            (r["data"]["groups"][0]["rules"][0]["name"] == "VeryHighCPU").then_some(())
        }
    })
    .await
    .expect("the fixed file is loaded on SIGHUP");
    // A broken alerting config is refused the same way.
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: nobody\nreceivers: []\n",
    )
    .expect("write");
    let r = client()
        .post(format!("{}/-/reload", c.base))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 500);
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("undefined receiver")
    );
}

//! The dashboard in a real headless Chromium (Debian's, driven through chromedriver) against
//! a collector fed by a real agent that scrapes a real feed-app under load: every page loads
//! with data, hydration makes controls work, a silence made in the UI keeps a page out of
//! Slack, a dead letter is retried from the UI, and a live chart gains points without a
//! reload. Screenshots of each page go to `target/dashboard-screenshots/`.
//!
//! Needs the browser bundle (`scripts/build-dashboard`) and the workspace's binaries
//! (`cargo build --workspace`, which `cargo test --workspace` does first).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Collector, api_get, free_port, push, series};
use fantoccini::{Client, Locator};
use nunchi_stack::sinks::{SlackServer, WebhookReceiver};
use nunchi_testkit::browser::Browser;
use nunchi_testkit::{Server, now_ms, target_dir, workspace_bin as bin};
use serde_json::Value;

const SECRET: &str = "ui-hook-secret";
const HOST: &str = "ui-host";

fn spawn(cmd: &mut Command, log: &Path) -> Server {
    let log = std::fs::File::create(log).expect("log file");
    Server(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}")),
    )
}

async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `script` (a function body) in the page.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// Points drawn by the chart titled `title`.
async fn points(c: &Client, title: &str) -> u64 {
    js(
        c,
        &format!(
            "const e = document.querySelector('section[data-title=\"{title}\"] svg.plot'); return e ? Number(e.dataset.points) : 0;"
        ),
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = target_dir().join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// `nunchi_dashboard_live_streams` from the collector's `/metrics`.
async fn live_streams(base: &str) -> Option<u64> {
    let body = nunchi_testkit::http_get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("nunchi_dashboard_live_streams "))
        .and_then(|v| v.trim().parse().ok())
}

async fn streams_become(base: &str, n: u64, why: &str) {
    until(why, 15, async || {
        (live_streams(base).await == Some(n)).then_some(())
    })
    .await;
}

/// Makes the page believe its tab was hidden or shown again.
async fn set_visibility(c: &Client, state: &str) {
    js(
        c,
        &format!(
            "Object.defineProperty(document, 'visibilityState', {{ value: '{state}', configurable: true }}); document.dispatchEvent(new Event('visibilitychange')); return null;"
        ),
    )
    .await;
}

/// Opens `path` and waits until the page is hydrated and its live stream is open.
async fn open(c: &Client, base: &str, path: &str) {
    c.goto(&format!("{base}{path}")).await.expect("goto");
    until(&format!("{path} to hydrate and go live"), 30, async || {
        (text(c, "#live-status").await == "live").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_a_real_browser() {
    let assets = target_dir().join("dashboard/pkg");
    assert!(
        nunchi_dashboard::ssr::has_bundle(&assets),
        "the browser bundle is missing from {}: run scripts/build-dashboard",
        assets.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let slack = SlackServer::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    hook.set_failing(true);

    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.yml");
    std::fs::write(
        d.join("ui.yml"),
        "groups:\n  - name: ui\n    rules:\n      - alert: Noise\n        expr: ui_test_noise > 0\n        labels: {severity: warning}\n      - alert: Control\n        expr: ui_test_control > 0\n        labels: {severity: warning}\n        annotations: {summary: control alert}\n",
    )
    .expect("rules");
    std::fs::write(
        d.join("am.yml"),
        format!(
            "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n    slack_configs:\n      - api_url: {}/chat.postMessage\n        channel: '#alerts'\n        send_resolved: true\n        http_config:\n          authorization:\n            credentials: {}\n    webhook_configs:\n      - url: {}/hook\n        hmac_secret: {SECRET}\n        retry_delays: [100ms, 200ms]\n    dead_letter:\n      policy: hold\n",
            slack.api_url, slack.token, hook.url
        ),
    )
    .expect("alerting config");
    let rules = format!("{default_rules},{}", d.join("ui.yml").display());
    let am = d.join("am.yml").display().to_string();
    let assets_arg = assets.display().to_string();
    let c = Collector::start(
        d,
        &[
            "--rules",
            &rules,
            "--alerting-config",
            &am,
            "--evaluation-interval",
            "250ms",
            "--dashboard-assets",
            &assets_arg,
        ],
    )
    .await;

    let feed_port = free_port();
    let feed = format!("http://127.0.0.1:{feed_port}");
    let _feed = spawn(
        Command::new(bin("feed-app"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{feed_port}"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", d.join("feed.db").display())),
        &d.join("feed-app.log"),
    );
    let _agent = spawn(
        Command::new(bin("nunchi-agent"))
            .args(["--interval", "1s", "--hostname", HOST])
            .arg("--push-url")
            .arg(c.write_url())
            .arg("--scrape")
            .arg(format!("feed={feed}/metrics"))
            .arg("--buffer-dir")
            .arg(d.join("agent-buffer"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port())),
        &d.join("agent.log"),
    );
    let _load = spawn(
        Command::new(bin("feed-loadgen")).args([
            "--target",
            &feed,
            "--rate",
            "30",
            "--duration",
            "300s",
            "--users",
            "200",
        ]),
        &d.join("loadgen.log"),
    );
    let base = c.base.clone();
    until("the agent's first samples", 30, async || {
        let r = common::query(&base, "node_load1", now_ms()).await;
        (r["data"]["result"].as_array().map_or(0, Vec::len) > 0).then_some(())
    })
    .await;

    let browser = Browser::start(d).await;
    let b = &browser.client;

    // Fleet: the host is listed; typing in the filter changes the view and the URL.
    open(b, &base, "/").await;
    until("the host row", 30, async || {
        b.find(Locator::Css(&format!("tr[data-host=\"{HOST}\"]")))
            .await
            .ok()
    })
    .await;
    screenshot(b, "fleet").await;
    b.find(Locator::Css("#fleet-filter"))
        .await
        .expect("filter box")
        .send_keys("no-such-host")
        .await
        .expect("type");
    until("the filter to hide every host", 10, async || {
        text(b, "#fleet-summary")
            .await
            .contains("0 shown")
            .then_some(())
    })
    .await;
    let url = b.current_url().await.expect("url");
    assert!(url.as_str().contains("q=no-such-host"), "{url}");

    // Host: charts with data; a live chart gains points without a reload.
    open(b, &base, &format!("/host/{HOST}?range=5m")).await;
    until("CPU points", 30, async || {
        (points(b, "CPU by mode").await > 0).then_some(())
    })
    .await;
    js(b, "window.__sameDocument = true; return null;").await;
    let before = points(b, "Load").await;
    until("the Load chart to gain points", 20, async || {
        (points(b, "Load").await > before).then_some(())
    })
    .await;
    assert_eq!(
        js(b, "return window.__sameDocument === true;").await,
        Value::Bool(true),
        "updated without a reload"
    );
    screenshot(b, "host").await;

    // The live stream closes while the tab is hidden or paused, and opens again after.
    streams_become(&base, 1, "one open live stream").await;
    set_visibility(b, "hidden").await;
    streams_become(&base, 0, "the stream to close with the tab hidden").await;
    set_visibility(b, "visible").await;
    streams_become(&base, 1, "the stream to reopen").await;
    let toggle = b
        .find(Locator::Css("#live-toggle"))
        .await
        .expect("pause button");
    toggle.click().await.expect("pause");
    streams_become(&base, 0, "the stream to close when paused").await;
    assert_eq!(text(b, "#live-status").await, "paused");
    toggle.click().await.expect("resume");
    streams_become(&base, 1, "the stream to reopen on resume").await;

    // Service: the feed-app's figures through the agent's scrape.
    open(b, &base, "/service?range=5m").await;
    until("request-rate points", 40, async || {
        (points(b, "Requests").await > 0).then_some(())
    })
    .await;
    screenshot(b, "service").await;

    // Rules: every group, the test rules among them.
    open(b, &base, "/rules").await;
    until("the Noise rule", 10, async || {
        b.find(Locator::Css("tr[data-rule=\"Noise\"]")).await.ok()
    })
    .await;
    screenshot(b, "rules").await;

    // Alerts: a silence created in the UI keeps Noise out of Slack; Control still pages.
    open(b, &base, "/alerts").await;
    b.find(Locator::Css("#silence-matchers"))
        .await
        .expect("matchers box")
        .send_keys("alertname=\"Noise\"")
        .await
        .expect("type");
    b.find(Locator::Css("#silence-author"))
        .await
        .expect("author box")
        .send_keys("ui-test")
        .await
        .expect("type");
    b.find(Locator::Css("#silence-create"))
        .await
        .expect("create button")
        .click()
        .await
        .expect("click");
    until("the silence to be listed", 10, async || {
        b.find(Locator::Css("#silence-table tr[data-silence]"))
            .await
            .ok()
    })
    .await;
    assert!(text(b, "#silence-message").await.contains("created"));
    let silences = api_get(&base, "/api/v2/silences").await;
    assert_eq!(silences[0]["createdBy"], "ui-test", "{silences}");
    let t = now_ms();
    let (status, body) = push(
        &c.write_url(),
        &[
            series(
                &[("__name__", "ui_test_noise"), ("host", HOST)],
                &[(t, 1.0)],
            ),
            series(
                &[("__name__", "ui_test_control"), ("host", HOST)],
                &[(t, 1.0)],
            ),
        ],
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    until("the Control page in Slack", 15, async || {
        slack
            .messages()
            .into_iter()
            .find(|m| m.all_text().contains("Control"))
    })
    .await;
    until("Noise firing on the alerts page", 15, async || {
        b.find(Locator::Css("tr[data-alert=\"Noise\"]")).await.ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !slack
            .messages()
            .iter()
            .any(|m| m.all_text().contains("Noise")),
        "the silenced alert reached Slack"
    );
    screenshot(b, "alerts").await;

    // Deliveries: the webhook is down, Control's notification becomes a dead letter; the
    // receiver comes back and the Retry button delivers it.
    until("a dead letter", 20, async || {
        let d = api_get(&base, "/api/v1/deliveries").await;
        (d["data"]["deadLetters"].as_array().map_or(0, Vec::len) > 0).then_some(())
    })
    .await;
    hook.set_failing(false);
    open(b, &base, "/deliveries").await;
    let retry = until("the Retry button", 10, async || {
        b.find(Locator::Css("tr[data-dead] button.retry"))
            .await
            .ok()
    })
    .await;
    screenshot(b, "deliveries").await;
    retry.click().await.expect("click retry");
    let delivered = until("the retried webhook", 15, async || {
        hook.received()
            .into_iter()
            .find(|r| r.body["groupLabels"]["alertname"] == "Control")
    })
    .await;
    assert!(delivered.signature_ok);
    until("the dead-letter list to empty", 10, async || {
        text(b, "#dead-letters h2")
            .await
            .contains("(0)")
            .then_some(())
    })
    .await;

    // Explore: the query from the URL, drawn and tabled.
    open(b, &base, "/explore?query=node_load1&range=5m").await;
    until("explore points", 20, async || {
        (points(b, "Result").await > 0).then_some(())
    })
    .await;
    assert!(text(b, "#explore-table").await.contains("node_load1"));
    screenshot(b, "explore").await;

    // Dark theme.
    open(b, &base, "/").await;
    b.find(Locator::Css("#theme-toggle"))
        .await
        .expect("theme button")
        .click()
        .await
        .expect("click");
    let theme = js(b, "return document.documentElement.dataset.theme || '';").await;
    assert!(theme == "dark" || theme == "light", "{theme}");
    screenshot(b, "fleet-other-theme").await;

    browser.client.clone().close().await.expect("close browser");
}

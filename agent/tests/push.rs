//! The real agent pushing to a real remote_write receiver on loopback: what arrives, and
//! what happens across receiver outages and agent restarts.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::routing::get;
use common::{Agent, Receiver, free_port, now_ms, wait_for};
use nunchi_model::Series;

const INTERVAL_MS: i64 = 200;

fn is_boot_time(host: &str) -> impl Fn(&Series) -> bool + '_ {
    move |s| {
        s.labels.metric_name() == Some("node_boot_time_seconds")
            && s.labels.get("host") == Some(host)
    }
}

/// A tiny Prometheus endpoint standing in for a scraped service.
async fn serve_exposition(body: &'static str) -> String {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let app = axum::Router::new().route("/metrics", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_host_and_scraped_metrics_with_labels_and_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start().await;
    rx.expect_token("s3cret");
    let target = serve_exposition(
        "# TYPE feed_requests_total counter\nfeed_requests_total{route=\"/feed\",job=\"inner\"} 42\n",
    )
    .await;
    let scrape = format!("feed-app={target}");
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "200ms",
            "--push-url",
            &rx.url(),
            "--token",
            "s3cret",
            "--hostname",
            "web-7",
            "--label",
            "dc=eu-1",
            "--scrape",
            &scrape,
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
        ],
    );
    let got = wait_for(Duration::from_secs(20), || async {
        let reqs = rx.requests();
        let all: Vec<Series> = reqs.into_iter().flat_map(|r| r.series).collect();
        let has = |name: &str| all.iter().any(|s| s.labels.metric_name() == Some(name));
        (has("node_cpu_seconds_total") && has("feed_requests_total") && has("up")).then_some(all)
    })
    .await
    .unwrap_or_else(|| panic!("no complete push arrived; agent log:\n{}", agent.log_text()));
    assert!(rx.header_errors().is_empty(), "{:?}", rx.header_errors());

    let cpu = got
        .iter()
        .find(|s| {
            s.labels.metric_name() == Some("node_cpu_seconds_total")
                && s.labels.get("mode") == Some("idle")
        })
        .expect("idle cpu series");
    assert_eq!(cpu.labels.get("host"), Some("web-7"));
    assert_eq!(cpu.labels.get("dc"), Some("eu-1"));
    assert_eq!(cpu.labels.get("cpu"), Some("0"));
    assert!(cpu.samples[0].value > 0.0);
    assert!((cpu.samples[0].timestamp_ms - now_ms()).abs() < 60_000);

    let feed = got
        .iter()
        .find(|s| s.labels.metric_name() == Some("feed_requests_total"))
        .expect("scraped");
    let instance = target
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    assert_eq!(feed.labels.get("job"), Some("feed-app"));
    assert_eq!(feed.labels.get("exported_job"), Some("inner"));
    assert_eq!(feed.labels.get("instance"), Some(instance));
    assert_eq!(feed.labels.get("host"), Some("web-7"));
    assert_eq!(feed.samples[0].value, 42.0);
    let up = got
        .iter()
        .find(|s| s.labels.metric_name() == Some("up") && s.labels.get("job") == Some("feed-app"))
        .expect("up");
    assert_eq!(up.samples[0].value, 1.0);

    // HELP and TYPE arrive as remote_write metadata, for host and scraped families alike.
    let metadata: Vec<_> = rx.requests().into_iter().flat_map(|r| r.metadata).collect();
    let find = |name: &str| {
        metadata
            .iter()
            .find(|m| m.metric_family_name == name)
            .cloned()
    };
    let cpu_meta = find("node_cpu_seconds_total").expect("node_cpu_seconds_total metadata");
    assert_eq!(
        cpu_meta.r#type,
        nunchi_codec::remote_write::MetricType::Counter as i32
    );
    assert_eq!(cpu_meta.help, "Seconds the CPUs spent in each mode.");
    let feed_meta = find("feed_requests_total").expect("scraped family metadata");
    assert_eq!(
        feed_meta.r#type,
        nunchi_codec::remote_write::MetricType::Counter as i32
    );
    assert!(find("nunchi_agent_samples_collected_total").is_some());

    // Every series in a request is sorted by label name, as remote_write requires.
    for s in &got {
        let names: Vec<_> = s.labels.iter().map(|l| l.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_goes_down_reports_up_zero_and_stale_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start().await;
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let app = axum::Router::new().route("/metrics", get(|| async { "svc_items 3\n" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let scrape = format!("svc=http://127.0.0.1:{port}/metrics");
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "200ms",
            "--push-url",
            &rx.url(),
            "--scrape",
            &scrape,
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
        ],
    );
    wait_for(Duration::from_secs(20), || async {
        (!rx.samples_where(|s| s.labels.metric_name() == Some("svc_items"))
            .is_empty())
        .then_some(())
    })
    .await
    .expect("svc_items arrives");
    server.abort();
    let stale = wait_for(Duration::from_secs(20), || async {
        let items = rx.samples_where(|s| s.labels.metric_name() == Some("svc_items"));
        let up0 = rx.samples_where(|s| {
            s.labels.metric_name() == Some("up") && s.labels.get("job") == Some("svc")
        });
        (items.iter().any(|x| nunchi_model::is_stale_nan(x.2)) && up0.iter().any(|x| x.2 == 0.0))
            .then_some(items)
    })
    .await
    .unwrap_or_else(|| panic!("no stale marker / up=0; log:\n{}", agent.log_text()));
    assert_eq!(
        stale
            .iter()
            .filter(|x| nunchi_model::is_stale_nan(x.2))
            .count(),
        1,
        "one marker, not one per cycle"
    );
    agent.terminate();
}

/// Runs an outage: receiver down, agent restarted during it, receiver back. Returns the
/// samples of one per-cycle series, the reconnect time, and the window in which the agent
/// was not running (when gaps are expected).
async fn outage(replay: &str) -> (Receiver, Vec<(i64, i64, f64)>, i64, (i64, i64)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let buf = dir.path().join("buf");
    let mut rx = Receiver::start().await;
    let args = |host: &'static str| {
        vec![
            "--interval".to_owned(),
            "200ms".into(),
            "--push-url".into(),
            rx.url(),
            "--hostname".into(),
            host.into(),
            "--buffer-dir".into(),
            buf.to_str().expect("utf8").into(),
            "--replay".into(),
            replay.into(),
            "--retry-max-backoff".into(),
            "1s".into(),
        ]
    };
    let host = if replay == "in-order" {
        "outage-in-order"
    } else {
        "outage-live-first"
    };
    let a: Vec<String> = args(host);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let agent = Agent::start(dir.path(), &a);
    wait_for(Duration::from_secs(20), || async {
        (!rx.samples_where(is_boot_time(host)).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("first push; log:\n{}", agent.log_text()));
    tokio::time::sleep(Duration::from_millis(600)).await;

    rx.pause().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = now_ms();
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
    let agent = Agent::start(dir.path(), &a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted_by = now_ms();
    let buffered = agent.metric_sum("nunchi_agent_buffer_samples", None).await;
    assert!(
        buffered > 0.0,
        "samples are buffered during the outage; log:\n{}",
        agent.log_text()
    );

    let reconnect = now_ms();
    rx.resume().await;
    wait_for(Duration::from_secs(30), || async {
        let pending = agent.metric_sum("nunchi_agent_buffer_samples", None).await;
        let pushed = agent
            .metric_sum("nunchi_agent_samples_pushed_total", None)
            .await;
        (pending == 0.0 && pushed > 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("backlog did not drain; log:\n{}", agent.log_text()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        agent.log_text().contains("found undelivered samples"),
        "restart found the buffer"
    );
    agent.terminate();
    let samples = rx.samples_where(is_boot_time(host));
    let late = samples
        .iter()
        .filter(|s| s.0 >= reconnect && s.1 < reconnect)
        .count();
    eprintln!(
        "{replay}: {} samples, {late} replayed after reconnect, agent down {agent_down:?}",
        samples.len(),
        agent_down = (stopped_at, restarted_by)
    );
    (
        rx,
        samples,
        reconnect,
        (stopped_at - INTERVAL_MS, restarted_by),
    )
}

fn assert_exactly_once_without_gaps(samples: &[(i64, i64, f64)], agent_down: (i64, i64)) {
    let mut count: HashMap<i64, usize> = HashMap::new();
    for s in samples {
        *count.entry(s.1).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated timestamps: {dups:?}");
    let mut ts: Vec<i64> = count.keys().copied().collect();
    ts.sort();
    for w in ts.windows(2) {
        let gap = w[1] - w[0];
        let expected = gap <= INTERVAL_MS * 3 / 2;
        let during_restart = w[0] >= agent_down.0 - INTERVAL_MS && w[1] <= agent_down.1 + 1000;
        assert!(
            expected || during_restart,
            "samples lost between {} and {} ({gap} ms); agent down {agent_down:?}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_live_first_delivers_everything_once_and_the_present_first() {
    let (_rx, samples, reconnect, agent_down) = outage("live-first").await;
    assert_exactly_once_without_gaps(&samples, agent_down);
    // The first sample taken after the receiver came back arrives within one interval
    // (plus scheduling slack) of the reconnect, even though a backlog was waiting.
    let live = samples
        .iter()
        .filter(|s| s.1 >= reconnect)
        .map(|s| s.0)
        .min()
        .expect("live sample after reconnect");
    eprintln!("live data {} ms after reconnect", live - reconnect);
    assert!(
        live - reconnect <= INTERVAL_MS + 800,
        "live data took {} ms after reconnect",
        live - reconnect
    );
    let backlog_done = samples
        .iter()
        .filter(|s| s.1 < reconnect && s.0 >= reconnect)
        .map(|s| s.0)
        .max();
    assert!(
        backlog_done.is_some(),
        "the backlog was replayed after reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_in_order_delivers_everything_once_in_time_order() {
    let (rx, samples, _reconnect, agent_down) = outage("in-order").await;
    assert_exactly_once_without_gaps(&samples, agent_down);
    // Every series of this host arrives in strictly increasing time order.
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in rx.requests() {
        for s in r
            .series
            .iter()
            .filter(|s| s.labels.get("host") == Some("outage-in-order"))
        {
            for x in &s.samples {
                let key = s.labels.to_string();
                if let Some(prev) = last.get(&key) {
                    assert!(
                        x.timestamp_ms > *prev,
                        "{key}: {} after {prev}",
                        x.timestamp_ms
                    );
                }
                last.insert(key, x.timestamp_ms);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start().await;
    rx.pause().await;
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "20ms",
            "--push-url",
            &rx.url(),
            "--buffer-max-size",
            "64KiB",
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
            "--hostname",
            "full",
        ],
    );
    let dropped = wait_for(Duration::from_secs(60), || async {
        let d = agent
            .metric_sum(
                "nunchi_agent_samples_dropped_total",
                Some(("reason", "buffer_full")),
            )
            .await;
        (d > 0.0).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("nothing dropped; log:\n{}", agent.log_text()));
    assert!(dropped > 0.0);
    let bytes = agent.metric_sum("nunchi_agent_buffer_bytes", None).await;
    assert!(
        bytes <= 64.0 * 1024.0,
        "buffer holds {bytes} bytes, over its cap"
    );
    rx.resume().await;
    let since = now_ms();
    wait_for(Duration::from_secs(30), || async {
        rx.samples_where(is_boot_time("full"))
            .iter()
            .any(|s| s.1 >= since)
            .then_some(())
    })
    .await
    .expect("live data flows after the outage");
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_receiver_is_counted_not_retried_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start().await;
    rx.respond_with(400);
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "100ms",
            "--push-url",
            &rx.url(),
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
        ],
    );
    wait_for(Duration::from_secs(20), || async {
        let rejected = agent
            .metric_sum(
                "nunchi_agent_samples_dropped_total",
                Some(("reason", "rejected")),
            )
            .await;
        (rejected > 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no rejected samples counted; log:\n{}", agent.log_text()));
    assert_eq!(
        agent.metric_sum("nunchi_agent_buffer_samples", None).await,
        0.0,
        "4xx batches are not buffered"
    );
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_https_to_a_receiver_signed_by_the_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = common::TlsIdentity::self_signed();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &identity.cert_pem).expect("write ca");
    let rx = Receiver::start_tls(identity).await;
    assert!(rx.url().starts_with("https://"));

    // Without the CA the certificate is not trusted: nothing arrives, batches are buffered.
    let untrusting = Agent::pushing(dir.path(), &rx.url(), "tls", "buf-a", &[]);
    wait_for(Duration::from_secs(20), || async {
        (untrusting
            .metric_sum("nunchi_agent_push_failures_total", None)
            .await
            > 0.0)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "an untrusted certificate must fail the push; log:\n{}",
            untrusting.log_text()
        )
    });
    assert!(rx.requests().is_empty());
    let log = untrusting.log_text();
    assert!(
        log.to_lowercase().contains("certificate"),
        "the failure names the certificate:\n{log}"
    );
    untrusting.terminate();

    let ca_file = ca.to_str().expect("utf8");
    let agent = Agent::pushing(
        dir.path(),
        &rx.url(),
        "tls",
        "buf-b",
        &["--ca-file", ca_file],
    );
    wait_for(Duration::from_secs(20), || async {
        (!rx.samples_where(is_boot_time("tls")).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("nothing arrived over https; log:\n{}", agent.log_text()));
    assert!(rx.header_errors().is_empty(), "{:?}", rx.header_errors());
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_merged_backlog_is_resent_record_by_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start().await;
    let agent = Agent::pushing(dir.path(), &rx.url(), "merge", "buf", &[]);
    wait_for(Duration::from_secs(20), || async {
        (!rx.samples_where(is_boot_time("merge")).is_empty()).then_some(())
    })
    .await
    .expect("first push");
    let per_cycle = rx
        .requests()
        .iter()
        .map(|r| r.series.len())
        .max()
        .unwrap_or(0);
    rx.pause().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The receiver comes back accepting one cycle's worth of series per request, so the
    // agent's merged backlog requests are refused and must be split.
    rx.limit_series(per_cycle + per_cycle / 2);
    rx.resume().await;
    wait_for(Duration::from_secs(30), || async {
        (agent.metric_sum("nunchi_agent_buffer_samples", None).await == 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("backlog did not drain; log:\n{}", agent.log_text()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        agent
            .metric_sum("nunchi_agent_samples_dropped_total", None)
            .await,
        0.0,
        "nothing was dropped"
    );
    assert!(
        agent
            .log_text()
            .contains("resending its records one by one")
    );
    let mut ts: Vec<i64> = rx
        .samples_where(is_boot_time("merge"))
        .iter()
        .map(|s| s.1)
        .collect();
    ts.sort();
    for w in ts.windows(2) {
        assert!(
            w[1] - w[0] <= INTERVAL_MS * 3 / 2,
            "gap of {} ms: samples lost",
            w[1] - w[0]
        );
        assert!(w[1] > w[0], "duplicate sample at {}", w[0]);
    }
    agent.terminate();
}

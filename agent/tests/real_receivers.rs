//! The agent pushing into real, stock receivers from Debian's packages: Prometheus with
//! its remote_write receiver enabled, and VictoriaMetrics. Each must answer a query for
//! `node_cpu_seconds_total` carrying this agent's `host` label.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, free_port, http_get, require, wait_for};
use nunchi_testkit::{Server, urlencode, wait_ready};

/// Starts `receiver` (already listening on `port` once `ready_path` answers 2xx), points an
/// agent at its `/api/v1/write`, and returns the labels of the first series its query API
/// returns for this host's idle CPU.
async fn push_and_query(
    dir: &Path,
    receiver: Command,
    port: u16,
    ready_path: &str,
    host: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut receiver = receiver;
    let _server = Server(
        receiver
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start receiver"),
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ready(&format!("{base}{ready_path}"), Duration::from_secs(30)).await,
        "receiver ready"
    );
    let push = format!("{base}/api/v1/write");
    let buffer = dir.join("buf");
    let mut args = vec![
        "--interval",
        "500ms",
        "--push-url",
        &push,
        "--hostname",
        host,
    ];
    args.extend(["--buffer-dir", buffer.to_str().expect("utf8")]);
    args.extend(extra);
    let agent = Agent::start(dir, &args);
    let query = format!("node_cpu_seconds_total{{host=\"{host}\",mode=\"idle\"}}");
    let url = format!("{base}/api/v1/query?query={}", urlencode(&query));
    let metric = wait_for(Duration::from_secs(60), || async {
        let v: serde_json::Value = http_get(&url).await.ok()?.json().await.ok()?;
        Some(v["data"]["result"].as_array()?.first()?["metric"].clone())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no node_cpu_seconds_total for {host}; agent log:\n{}",
            agent.log_text()
        )
    });
    agent.terminate();
    metric
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_receives_the_push() {
    let prometheus = require("prometheus", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
    let port = free_port();
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver");
    // A stock Prometheus rejects out-of-order samples: the agent replays in order.
    let metric = push_and_query(
        dir.path(),
        cmd,
        port,
        "/-/ready",
        "prom-check",
        &["--replay", "in-order"],
    )
    .await;
    assert_eq!(metric["host"], "prom-check");
    assert_eq!(metric["cpu"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_receives_the_push() {
    let vm = require("victoria-metrics", "victoria-metrics");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new(vm);
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.path().join("vm").display()
        ))
        .arg("-search.latencyOffset=1s");
    let metric = push_and_query(dir.path(), cmd, port, "/health", "vm-check", &[]).await;
    assert_eq!(metric["host"], "vm-check");
    assert_eq!(metric["cpu"], "0");
}

//! The agent pushing into real, stock receivers from Debian's packages: Prometheus with
//! its remote_write receiver enabled, and VictoriaMetrics. Each must answer a query for
//! `node_cpu_seconds_total` carrying this agent's `host` label.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Agent, free_port, http_get, wait_for};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(tool: &str, package: &str) -> String {
    let path = format!("/usr/bin/{tool}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install it with `apt-get install {package}` (scripts/test does this)"
    );
    path
}

/// Polls `query` on a Prometheus-compatible API until it returns a series; returns the
/// first series' labels as JSON.
async fn query_until_found(base: &str, query: &str) -> Option<serde_json::Value> {
    let url = format!("{base}/api/v1/query?query={}", urlencode(query));
    wait_for(Duration::from_secs(60), || async {
        let v: serde_json::Value = http_get(&url).await.ok()?.json().await.ok()?;
        let first = v["data"]["result"].as_array()?.first()?.clone();
        Some(first["metric"].clone())
    })
    .await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_receives_the_push() {
    let prometheus = require("prometheus", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
    let port = free_port();
    let _server = Server(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), || async {
        http_get(format!("{base}/-/ready"))
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await
    .expect("prometheus ready");
    let push = format!("{base}/api/v1/write");
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "500ms",
            "--push-url",
            &push,
            "--hostname",
            "prom-check",
            "--replay",
            "in-order",
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
        ],
    );
    let metric = query_until_found(
        &base,
        "node_cpu_seconds_total{host=\"prom-check\",mode=\"idle\"}",
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "Prometheus has no node_cpu_seconds_total; agent log:\n{}",
            agent.log_text()
        )
    });
    assert_eq!(metric["host"], "prom-check");
    assert_eq!(metric["cpu"], "0");
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_receives_the_push() {
    let vm = require("victoria-metrics", "victoria-metrics");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = Server(
        Command::new(vm)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg("-search.latencyOffset=1s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), || async {
        http_get(format!("{base}/health"))
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await
    .expect("victoria-metrics ready");
    let push = format!("{base}/api/v1/write");
    let agent = Agent::start(
        dir.path(),
        &[
            "--interval",
            "500ms",
            "--push-url",
            &push,
            "--hostname",
            "vm-check",
            "--buffer-dir",
            dir.path().join("buf").to_str().expect("utf8"),
        ],
    );
    let metric = query_until_found(
        &base,
        "node_cpu_seconds_total{host=\"vm-check\",mode=\"idle\"}",
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "VictoriaMetrics has no node_cpu_seconds_total; agent log:\n{}",
            agent.log_text()
        )
    });
    assert_eq!(metric["host"], "vm-check");
    agent.terminate();
}

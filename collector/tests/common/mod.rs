//! Test helpers: a runner for the real `nunchi-collector` binary (start, `kill -9`,
//! restart), remote_write pushes and Prometheus API queries against it, and a runner for
//! Debian's Prometheus.
#![allow(dead_code, unused_imports, missing_docs, unreachable_pub)]

pub mod alerting;
pub mod dataset;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nunchi_codec::{exposition, remote_write};
use nunchi_model::{Labels, Sample, Series};
pub use nunchi_testkit::{
    Server, client, free_port, http_get, now_ms, require, urlencode, wait_for, wait_ready,
};

/// A series with samples `(t, v)`.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    Series {
        labels: Labels::from_pairs(labels.iter().copied()),
        samples: samples
            .iter()
            .map(|&(timestamp_ms, value)| Sample {
                timestamp_ms,
                value,
            })
            .collect(),
    }
}

/// Pushes an encoded body; returns the status and the response text.
pub async fn push_body(url: &str, body: Vec<u8>, token: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(url)
        .header("Content-Type", remote_write::CONTENT_TYPE)
        .header("Content-Encoding", remote_write::CONTENT_ENCODING)
        .header(remote_write::VERSION_HEADER, remote_write::VERSION)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Pushes series with remote_write.
pub async fn push(url: &str, series: &[Series], token: Option<&str>) -> (u16, String) {
    let body = remote_write::encode(&remote_write::WriteRequest::from_series(series));
    push_body(url, body, token).await
}

/// GETs a Prometheus API path (query string included) and returns the parsed JSON.
pub async fn api_get(base: &str, path_and_query: &str) -> serde_json::Value {
    let r = http_get(format!("{base}{path_and_query}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
    r.json()
        .await
        .unwrap_or_else(|e| panic!("GET {path_and_query}: not JSON: {e}"))
}

/// Instant query at `t_ms`.
pub async fn query(base: &str, q: &str, t_ms: i64) -> serde_json::Value {
    api_get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            urlencode(q),
            t_ms as f64 / 1000.0
        ),
    )
    .await
}

/// Range query.
pub async fn query_range(
    base: &str,
    q: &str,
    start: i64,
    end: i64,
    step_s: f64,
) -> serde_json::Value {
    api_get(
        base,
        &format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={step_s}",
            urlencode(q),
            start as f64 / 1000.0,
            end as f64 / 1000.0
        ),
    )
    .await
}

/// A running `nunchi-collector`.
pub struct Collector {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Collector {
    /// Starts the collector with its data under `dir` and waits until it is ready.
    pub async fn start(dir: &Path, extra: &[&str]) -> Collector {
        let port = free_port();
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            dir.join("data").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Collector {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            args,
            log: dir.join("collector.log"),
        };
        c.spawn().await;
        c
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_nunchi-collector"))
            .args(&self.args)
            .env("NUNCHI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nunchi-collector");
        self.child = Some(child);
        let base = self.base.clone();
        if !wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30)).await {
            panic!("collector not ready; log:\n{}", self.log_text());
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The remote_write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }

    /// Sends SIGHUP (reload rules and alerting config).
    #[allow(dead_code)]
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-HUP")
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Starts the same binary on the same port and data again.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sum of a self-metric's samples whose labels include `label`.
    pub async fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let text = http_get(format!("{}/metrics", self.base))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        let exp = exposition::parse(&text, 0).expect("valid exposition");
        exp.series
            .iter()
            .filter(|s| s.labels.metric_name() == Some(name))
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.samples[0].value)
            .sum()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts Debian's Prometheus with `config` (YAML) and extra flags; waits until ready.
pub async fn start_prometheus(dir: &Path, config: &str, extra: &[&str]) -> (Server, String) {
    let bin = require("prometheus", "prometheus");
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("write prometheus.yml");
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom-tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ready(&format!("{base}/-/ready"), Duration::from_secs(60)).await,
        "prometheus ready"
    );
    (server, base)
}

/// Starts Debian's VictoriaMetrics (single node) on `port`, data under `dir`; waits until
/// it is healthy.
pub async fn start_victoria(dir: &Path, port: u16) -> (Server, String) {
    let bin = require("victoria-metrics", "victoria-metrics");
    let log = std::fs::File::create(dir.join("victoria-metrics.log")).expect("log");
    let child = Command::new(bin)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.join("vm-data").display()
        ))
        .arg("-retentionPeriod=1y")
        // Answer queries up to now, not 30 s behind (the default), so tests need not wait.
        .arg("-search.latencyOffset=0s")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start victoria-metrics");
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ready(&format!("{base}/health"), Duration::from_secs(60)).await,
        "victoria-metrics healthy"
    );
    (server, base)
}

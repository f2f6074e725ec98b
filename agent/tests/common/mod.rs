//! Test helpers: a real remote_write receiver on a loopback port that decodes and records
//! every request, a runner for the real `nunchi-agent` binary, and small HTTP utilities.
#![allow(dead_code, unused_imports, missing_docs, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use nunchi_codec::{exposition, remote_write};
use nunchi_model::Series;
pub use nunchi_testkit::{free_port, http_get, now_ms, require, wait_for};

/// node_exporter's flags to run only the collectors behind the agent's families.
pub fn node_exporter_args(port: u16) -> Vec<String> {
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--collector.disable-defaults".to_owned(),
    ];
    for c in [
        "cpu",
        "loadavg",
        "meminfo",
        "filesystem",
        "diskstats",
        "netdev",
        "stat",
    ] {
        args.push(format!("--collector.{c}"));
    }
    args
}

/// One request the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub at_ms: i64,
    pub series: Vec<Series>,
    pub metadata: Vec<remote_write::MetricMetadata>,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    /// 0: accept; otherwise answer with this status and record nothing.
    status: AtomicU16,
    expected_token: Mutex<Option<String>>,
    /// 0: no limit; otherwise requests with more series are refused with 400.
    max_series: std::sync::atomic::AtomicUsize,
    header_errors: Mutex<Vec<String>>,
}

/// A remote_write receiver that can be stopped (connections refused) and started again
/// on the same port; plain HTTP, or HTTPS with a certificate of its own.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    tls: Option<TlsIdentity>,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, in PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsIdentity {
    pub fn self_signed() -> TlsIdentity {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let c = rcgen::generate_simple_self_signed(names).expect("generate certificate");
        TlsIdentity {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
        }
    }
}

async fn write(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = s.status.load(Ordering::SeqCst);
    if status != 0 {
        return StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut errs = Vec::new();
    if h("content-encoding") != "snappy" {
        errs.push(format!("content-encoding {:?}", h("content-encoding")));
    }
    if h("content-type") != "application/x-protobuf" {
        errs.push(format!("content-type {:?}", h("content-type")));
    }
    if h("x-prometheus-remote-write-version") != "0.1.0" {
        errs.push(format!(
            "version {:?}",
            h("x-prometheus-remote-write-version")
        ));
    }
    if let Some(t) = s.expected_token.lock().expect("lock").clone()
        && h("authorization") != format!("Bearer {t}")
    {
        return StatusCode::UNAUTHORIZED;
    }
    if !errs.is_empty() {
        s.header_errors.lock().expect("lock").extend(errs);
    }
    match remote_write::decode(&body, 64 << 20) {
        Ok(req)
            if s.max_series.load(Ordering::SeqCst) != 0
                && req.timeseries.len() > s.max_series.load(Ordering::SeqCst) =>
        {
            StatusCode::BAD_REQUEST
        }
        Ok(req) => {
            let metadata = req.metadata.clone();
            s.requests.lock().expect("lock").push(Received {
                at_ms: now_ms(),
                series: req.into_series(),
                metadata,
            });
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_with(None).await
    }

    /// An HTTPS receiver presenting `identity`'s certificate.
    pub async fn start_tls(identity: TlsIdentity) -> Receiver {
        Self::start_with(Some(identity)).await
    }

    async fn start_with(tls: Option<TlsIdentity>) -> Receiver {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut r = Receiver {
            addr,
            shared: Arc::default(),
            stop: None,
            task: None,
            tls,
        };
        r.resume().await;
        r
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/api/v1/write", self.addr.port()),
            None => format!("http://{}/api/v1/write", self.addr),
        }
    }

    pub fn expect_token(&self, token: &str) {
        *self.shared.expected_token.lock().expect("lock") = Some(token.to_owned());
    }

    /// Refuses (400) any request carrying more than `n` series (0: no limit).
    pub fn limit_series(&self, n: usize) {
        self.shared.max_series.store(n, Ordering::SeqCst);
    }

    /// Answers every request with `status` (0 to accept again).
    pub fn respond_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused until [`Receiver::resume`].
    pub async fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub async fn resume(&mut self) {
        let app = axum::Router::new()
            .route("/api/v1/write", post(write))
            .with_state(self.shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        if let Some(id) = &self.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                id.cert_pem.clone().into_bytes(),
                id.key_pem.clone().into_bytes(),
            )
            .await
            .expect("TLS config");
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                let _ = rx.await;
                h.shutdown();
            });
            let addr = self.addr;
            self.task = Some(tokio::spawn(async move {
                let _ = axum_server::bind_rustls(addr, config)
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await;
            }));
            return;
        }
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().expect("lock").clone()
    }

    pub fn header_errors(&self) -> Vec<String> {
        self.shared.header_errors.lock().expect("lock").clone()
    }

    /// (arrival time, sample timestamp, value) of every sample of series matching `pred`.
    pub fn samples_where(&self, pred: impl Fn(&Series) -> bool) -> Vec<(i64, i64, f64)> {
        let mut out = Vec::new();
        for r in self.requests() {
            for s in r.series.iter().filter(|s| pred(s)) {
                for x in &s.samples {
                    out.push((r.at_ms, x.timestamp_ms, x.value));
                }
            }
        }
        out
    }
}

/// The real agent binary, running.
pub struct Agent {
    child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, args: &[&str]) -> Agent {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = dir.join(format!("agent-{}.log", listen.port()));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_nunchi-agent"))
            .arg("--listen")
            .arg(listen.to_string())
            .args(args)
            .env("NUNCHI_LOG", "debug,hyper=info,reqwest=info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn nunchi-agent");
        Agent { child, listen, log }
    }

    /// An agent collecting every 200 ms and pushing to `url` as `host`, buffering under
    /// `dir/buffer`, with `extra` flags.
    pub fn pushing(dir: &Path, url: &str, host: &str, buffer: &str, extra: &[&str]) -> Agent {
        let buffer = dir.join(buffer);
        let mut args = vec!["--interval", "200ms", "--push-url", url, "--hostname", host];
        args.extend(["--buffer-dir", buffer.to_str().expect("utf8")]);
        args.extend(extra);
        Agent::start(dir, &args)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "agent did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The agent's own /metrics page, parsed.
    pub async fn metrics(&self) -> Option<Vec<Series>> {
        let text = http_get(format!("http://{}/metrics", self.listen))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        exposition::parse(&text, 0).ok().map(|e| e.series)
    }

    pub async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.listen);
        wait_for(Duration::from_secs(20), || async {
            http_get(&url).await.ok()?.text().await.ok()
        })
        .await
        .expect("agent serves /metrics")
    }

    /// Sum of a self-metric across its series, filtered by a label.
    pub async fn metric_sum(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.metrics()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|s| s.labels.metric_name() == Some(name))
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.samples[0].value)
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Starting the systems the benchmarks compare: nunchi-collector (this build) and Debian's
//! VictoriaMetrics and Prometheus, each with a fresh data directory, accepting
//! remote_write and answering the Prometheus query API.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod data;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nunchi_testkit::{Server, free_port, require, wait_ready};

/// The systems compared, in report order.
pub const SYSTEMS: [&str; 3] = ["nunchi", "victoria-metrics", "prometheus"];

/// The systems to run: `NUNCHI_BENCH_PEERS` (comma-separated), or all.
pub fn selected() -> Vec<&'static str> {
    let peers = std::env::var("NUNCHI_BENCH_PEERS").unwrap_or_else(|_| SYSTEMS.join(","));
    SYSTEMS
        .into_iter()
        .filter(|s| peers.split(',').any(|p| p == *s))
        .collect()
}

/// A running system.
pub struct Peer {
    pub name: &'static str,
    pub server: Server,
    pub base: String,
    pub data: PathBuf,
}

impl Peer {
    /// Its remote_write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.server.0.id()
    }
}

/// Starts `name` with its data under `dir` and waits until it is ready. nunchi and
/// VictoriaMetrics run with their result caches on, as they ship; a query that must be
/// computed in full asks with `nocache=1`, which both honour.
pub async fn start(name: &'static str, dir: &Path) -> Peer {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.join("data");
    let (mut cmd, ready_path) = match name {
        "nunchi" => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_nunchi-collector"));
            c.args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                data.to_str().unwrap_or_default(),
            ]);
            c.env(
                "NUNCHI_LOG",
                std::env::var("NUNCHI_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            );
            (c, "/-/ready")
        }
        "victoria-metrics" => {
            let mut c = Command::new(require("victoria-metrics", "victoria-metrics"));
            c.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", data.display()))
                .arg("-retentionPeriod=2y")
                .arg("-search.latencyOffset=0s")
                .arg("-loggerLevel=ERROR");
            (c, "/health")
        }
        _ => {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 1h\n").expect("config");
            let mut c = Command::new(require("prometheus", "prometheus"));
            c.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--web.enable-admin-api")
                .arg("--log.level=error");
            (c, "/-/ready")
        }
    };
    let server = Server(
        cmd.stdout(Stdio::null())
            .stderr(if std::env::var_os("NUNCHI_BENCH_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start peer"),
    );
    let url = format!("{base}{ready_path}");
    assert!(
        wait_ready(&url, Duration::from_secs(60)).await,
        "{url} never became ready"
    );
    Peer {
        name,
        server,
        base,
        data,
    }
}

/// A small deterministic generator, so every system gets identical data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

//! Agent overhead next to Debian's `prometheus-node-exporter`, measured in one run on the
//! same host: CPU time per collection cycle and peak resident memory.
//!
//! node_exporter runs with only the collectors that produce the agent's families (cpu,
//! loadavg, meminfo, filesystem, diskstats, netdev, stat) and is scraped every 100 ms; a
//! cycle is one scrape (collect + encode + HTTP). The agent runs at a 100 ms interval
//! pushing to a local remote_write sink; a cycle is one collection (read + encode +
//! snappy + HTTP POST). CPU is the scheduler's on-CPU time of all threads (`/proc/<pid>/task/*/schedstat`); peak RSS is
//! `VmHWM` from `/proc/<pid>/status`.
//!
//! Run: `cargo bench -p nunchi-agent --bench overhead` (optionally `-- CYCLES`).

#![allow(missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::post;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, http_get, node_exporter_args, wait_for};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both programs do one cycle per CADENCE: node_exporter is scraped at it, the agent runs
/// with it as `--interval`.
const CADENCE: Duration = Duration::from_millis(100);

/// CPU time of a process in seconds: the sum over its threads of the scheduler's exact
/// on-CPU time (`/proc/<pid>/task/*/schedstat`), user and kernel alike. Unlike the
/// tick-sampled utime/stime this is precise for sub-millisecond work.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

fn status_kib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn get(url: &str) -> Option<String> {
    http_get(url).await.ok()?.text().await.ok()
}

/// The first answer of `url`, waiting up to 10 s for the program to start.
async fn first_answer(url: &str) -> Option<String> {
    wait_for(Duration::from_secs(10), || get(url)).await
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn series_count(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

/// On-CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

/// The kernel's share that no collector can avoid: re-reading the /proc files both
/// programs read each cycle (kept open, one pread each) and one statvfs per filesystem.
fn proc_floor(cycles: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let paths = [
        "/proc/stat",
        "/proc/meminfo",
        "/proc/diskstats",
        "/proc/net/dev",
        "/proc/loadavg",
    ];
    let files: Vec<std::fs::File> = paths
        .iter()
        .filter_map(|p| std::fs::File::open(p).ok())
        .collect();
    let mut buf = vec![0u8; 256 * 1024];
    let start = thread_cpu_seconds();
    for _ in 0..cycles {
        for f in &files {
            let _ = f.read_at(&mut buf, 0);
        }
        let _ = rustix::fs::statvfs("/");
    }
    (thread_cpu_seconds() - start) / cycles as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cycles: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);

    // node_exporter, scraped back to back.
    let ne_port = free_port();
    let ne = Proc(
        Command::new("/usr/bin/prometheus-node-exporter")
            .args(node_exporter_args(ne_port))
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/prometheus-node-exporter (apt-get install prometheus-node-exporter)"),
    );
    let ne_url = format!("http://127.0.0.1:{ne_port}/metrics");
    let ne_text = first_answer(&ne_url).await.expect("node_exporter answers");
    for _ in 0..20 {
        get(&ne_url).await;
    }
    let ne_pid = ne.0.id();
    let cpu0 = cpu_seconds(ne_pid);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(CADENCE);
    for _ in 0..cycles {
        tick.tick().await;
        get(&ne_url).await;
    }
    let ne_cpu = (cpu_seconds(ne_pid) - cpu0) / cycles as f64;
    let ne_wall = t0.elapsed();
    let ne_hwm = status_kib(ne_pid, "VmHWM:");
    let ne_rss = status_kib(ne_pid, "VmRSS:");
    drop(ne);

    // The agent, pushing to a local sink.
    let sink_port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", sink_port))
        .await
        .expect("bind sink");
    let sink = axum::Router::new().route(
        "/api/v1/write",
        post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(listener, sink).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_port = free_port();
    let agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_nunchi-agent"))
            .args([
                "--interval",
                "100ms",
                "--listen",
                &format!("127.0.0.1:{agent_port}"),
            ])
            .args([
                "--push-url",
                &format!("http://127.0.0.1:{sink_port}/api/v1/write"),
            ])
            .arg("--buffer-dir")
            .arg(dir.path())
            .env("NUNCHI_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start nunchi-agent"),
    );
    let agent_url = format!("http://127.0.0.1:{agent_port}/metrics");
    let agent_text = first_answer(&agent_url).await.expect("agent answers");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = agent.0.id();
    let count = |t: &str| metric_value(t, "nunchi_agent_collection_duration_seconds_count");
    let before = get(&agent_url).await.unwrap_or_default();
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(CADENCE * cycles as u32).await;
    let cpu1 = cpu_seconds(pid);
    let after = get(&agent_url).await.unwrap_or_default();
    let agent_cycles = (count(&after) - count(&before)).max(1.0);
    let agent_cpu = (cpu1 - cpu0) / agent_cycles;
    let pushed = metric_value(&after, "nunchi_agent_samples_collected_total");
    let agent_hwm = status_kib(pid, "VmHWM:");
    let agent_rss = status_kib(pid, "VmRSS:");
    drop(agent);

    println!(
        "node_exporter: {} node_* series, {cycles} scrapes in {:.1?}",
        series_count(&ne_text, "node_"),
        ne_wall
    );
    println!(
        "nunchi-agent:  {} node_* series, {agent_cycles} cycles, {pushed} samples collected",
        series_count(&agent_text, "node_")
    );
    println!();
    println!("| measure | nunchi-agent | node_exporter | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| CPU per cycle | {:.0} µs | {:.0} µs | 1/{:.1} |",
        agent_cpu * 1e6,
        ne_cpu * 1e6,
        ne_cpu / agent_cpu.max(1e-9)
    );
    println!(
        "| peak RSS (VmHWM) | {:.1} MiB | {:.1} MiB | 1/{:.1} |",
        agent_hwm / 1024.0,
        ne_hwm / 1024.0,
        ne_hwm / agent_hwm.max(1.0)
    );
    println!(
        "| RSS at end | {:.1} MiB | {:.1} MiB | |",
        agent_rss / 1024.0,
        ne_rss / 1024.0
    );
    let per_series = |cpu: f64, text: &str| cpu * 1e6 / series_count(text, "node_").max(1) as f64;
    let (a, n) = (
        per_series(agent_cpu, &agent_text),
        per_series(ne_cpu, &ne_text),
    );
    println!(
        "| CPU per exported node_* series | {a:.1} µs | {n:.1} µs | 1/{:.1} |",
        n / a.max(1e-9)
    );
    let floor = proc_floor(cycles) * 1e6;
    println!(
        "| /proc reads alone, same files (floor for both) | {floor:.0} µs | {floor:.0} µs | |"
    );
}

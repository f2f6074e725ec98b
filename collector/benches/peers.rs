//! Whole-system comparison of ingest against real peers from Debian's packages:
//! nunchi-collector, VictoriaMetrics and Prometheus are each fed the same remote_write load
//! of node_exporter-shaped series, encoded before the clock starts so the load generator
//! is not the bottleneck.
//!
//! `cargo bench -p nunchi-collector --bench peers -- [SERIES] [ROUNDS] [CONCURRENCY]`
//! (defaults 300000, 240, 4; `NUNCHI_BENCH_PEERS=nunchi,victoria-metrics,prometheus`
//! picks the systems; `NUNCHI_BENCH_KEEP=1` keeps their data directories). Each round is one scrape of every series, 15 s of sample time
//! apart. Round 0 creates the series and is not timed; the rest measure steady ingest.
//!
//! Reported per system: samples/s, CPU seconds per million samples, RSS per active series
//! after ingest, and bytes per sample on disk after compaction (index included): nunchi
//! after `POST /api/v1/admin/compact`, VictoriaMetrics after `force_flush` and
//! `force_merge`, Prometheus as a TSDB snapshot (its head written as a block).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nunchi_codec::remote_write::{self, SeriesGroup};
use nunchi_model::{Labels, Sample, Series};
use nunchi_testkit::{client, http_get, now_ms};
use support::Lcg;

const STEP_MS: i64 = 15_000;
const PER_REQUEST: usize = 2_000;

/// How a series' value moves from one scrape to the next, as on a real host: busy
/// counters (CPU seconds, traffic on the main NIC and disks) grow every scrape, idle ones
/// (error and drop counters, unused devices) almost never, gauges change now and then,
/// sizes and flags stay put.
#[derive(Clone, Copy)]
enum Kind {
    /// Grows every scrape by up to `max`, in steps of `unit`.
    Busy { max: u64, unit: f64 },
    /// Grows by one, once in a long while.
    Idle,
    /// Changes in one scrape out of four, by up to 32 pages.
    Gauge,
    /// Never changes.
    Constant,
}

/// A series of the host shape: name, extra labels, kind.
type ShapeEntry = (String, Vec<(String, String)>, Kind);

/// One host's series: 600 of them, in node_exporter's families.
fn host_shape() -> Vec<ShapeEntry> {
    let mut v: Vec<ShapeEntry> = Vec::new();
    let l = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, x)| (k.to_string(), x.clone()))
            .collect::<Vec<_>>()
    };
    let cpu_seconds = Kind::Busy {
        max: 1500,
        unit: 0.01,
    };
    for cpu in 0..8 {
        for mode in [
            "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
        ] {
            v.push((
                "node_cpu_seconds_total".into(),
                l(&[("cpu", cpu.to_string()), ("mode", mode.into())]),
                cpu_seconds,
            ));
        }
    }
    for i in 0..40 {
        v.push((
            format!("node_memory_m{i}_bytes"),
            vec![],
            if i < 30 { Kind::Gauge } else { Kind::Constant },
        ));
    }
    for m in 0..6 {
        for f in [
            "avail_bytes",
            "free_bytes",
            "size_bytes",
            "files",
            "files_free",
            "readonly",
            "device_error",
        ] {
            let kind = if matches!(f, "avail_bytes" | "free_bytes" | "files_free") {
                Kind::Gauge
            } else {
                Kind::Constant
            };
            v.push((
                format!("node_filesystem_{f}"),
                l(&[
                    ("device", format!("/dev/sd{m}")),
                    ("fstype", "ext4".into()),
                    ("mountpoint", format!("/mnt/{m}")),
                ]),
                kind,
            ));
        }
    }
    for d in 0..8 {
        for f in [
            "reads_completed_total",
            "reads_merged_total",
            "read_bytes_total",
            "read_time_seconds_total",
            "writes_completed_total",
            "writes_merged_total",
            "written_bytes_total",
            "write_time_seconds_total",
            "io_now",
            "io_time_seconds_total",
            "io_time_weighted_seconds_total",
            "discards_completed_total",
        ] {
            let kind = match (d < 2, f) {
                (_, "io_now") => Kind::Gauge,
                (true, f) if f.contains("bytes") => Kind::Busy {
                    max: 4_000_000,
                    unit: 512.0,
                },
                (true, f) if f.contains("seconds") => Kind::Busy {
                    max: 2000,
                    unit: 0.001,
                },
                (true, _) => Kind::Busy {
                    max: 400,
                    unit: 1.0,
                },
                (false, _) => Kind::Idle,
            };
            v.push((
                format!("node_disk_{f}"),
                l(&[("device", format!("nvme{d}n1"))]),
                kind,
            ));
        }
    }
    for d in 0..8 {
        for dir in ["receive", "transmit"] {
            for f in [
                "bytes",
                "packets",
                "errs",
                "drop",
                "fifo",
                "frame",
                "compressed",
                "multicast",
            ] {
                let kind = match (d < 2, f) {
                    (true, "bytes") => Kind::Busy {
                        max: 20_000_000,
                        unit: 1.0,
                    },
                    (true, "packets") => Kind::Busy {
                        max: 20_000,
                        unit: 1.0,
                    },
                    _ => Kind::Idle,
                };
                v.push((
                    format!("node_network_{dir}_{f}_total"),
                    l(&[("device", format!("eth{d}"))]),
                    kind,
                ));
            }
        }
    }
    let mut i = 0;
    while v.len() < 600 {
        let family = if i < 115 { "vmstat" } else { "netstat" };
        let (suffix, kind) = match i % 10 {
            0..=2 => (
                "_total",
                Kind::Busy {
                    max: 1000,
                    unit: 1.0,
                },
            ),
            3..=6 => ("_total", Kind::Idle),
            _ => ("", Kind::Gauge),
        };
        v.push((format!("node_{family}_f{i}{suffix}"), vec![], kind));
        i += 1;
    }
    v
}

struct Load {
    series: usize,
    rounds: Vec<Arc<Vec<bytes::Bytes>>>,
}

fn build(n_series: usize, rounds: usize, t0: i64) -> Load {
    let shape = host_shape();
    let hosts = n_series.div_ceil(shape.len());
    let mut labels: Vec<(Labels, Kind)> = Vec::with_capacity(n_series);
    'outer: for h in 0..hosts {
        for (name, extra, kind) in &shape {
            if labels.len() == n_series {
                break 'outer;
            }
            let mut l = Labels::from_pairs([("__name__", name.as_str()), ("job", "node")]);
            l.insert("instance", format!("host-{h:05}:9100"));
            for (k, x) in extra {
                l.insert(k.clone(), x.clone());
            }
            labels.push((l, *kind));
        }
    }
    let mut rng = Lcg(42);
    let mut values: Vec<f64> = labels
        .iter()
        .map(|_| (rng.next() % 1_000_000) as f64 * 4096.0)
        .collect();
    let empty = Labels::new();
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut bodies = Vec::new();
        for (ci, chunk) in labels.chunks(PER_REQUEST).enumerate() {
            let series: Vec<Series> = chunk
                .iter()
                .enumerate()
                .map(|(k, (l, kind))| {
                    let i = ci * PER_REQUEST + k;
                    let v = &mut values[i];
                    let x = rng.next();
                    match *kind {
                        Kind::Busy { max, unit } => {
                            *v += (x % max) as f64 * unit;
                            *v = (*v / unit).round() * unit;
                        }
                        Kind::Idle if x.is_multiple_of(200) => *v += 1.0,
                        Kind::Gauge if x.is_multiple_of(4) => {
                            *v = (*v + ((x % 64) as f64 - 32.0) * 4096.0).abs()
                        }
                        _ => {}
                    }
                    // Each host scrapes at its own offset within the interval.
                    let jitter = (i / 600) as i64 % STEP_MS;
                    Series {
                        labels: l.clone(),
                        samples: vec![Sample {
                            timestamp_ms: t0 + r as i64 * STEP_MS + jitter,
                            value: *v,
                        }],
                    }
                })
                .collect();
            bodies.push(bytes::Bytes::from(remote_write::encode_series(
                &[SeriesGroup {
                    series: &series,
                    extra: &empty,
                }],
                &mut scratch,
            )));
        }
        out.push(Arc::new(bodies));
    }
    Load {
        series: labels.len(),
        rounds: out,
    }
}

async fn send_round(url: &str, bodies: &Arc<Vec<bytes::Bytes>>, concurrency: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let url = url.to_owned();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                loop {
                    let r = client()
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                            panic!(
                                "{url} refused a request: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
}

fn proc_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
        * 1024
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct Report {
    name: &'static str,
    samples_per_s: f64,
    cpu_per_million: f64,
    rss_per_series: f64,
    bytes_per_sample: f64,
}

async fn run_one(name: &'static str, load: &Load, concurrency: usize) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = support::start(name, dir.path()).await;
    let (base, data, pid) = (peer.base.clone(), peer.data.clone(), peer.pid());
    let url = peer.write_url();
    eprintln!("{name}: round 0 (creating {} series)", load.series);
    send_round(&url, &load.rounds[0], concurrency).await;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    for (i, bodies) in load.rounds[1..].iter().enumerate() {
        send_round(&url, bodies, concurrency).await;
        if (i + 1) % 20 == 0 {
            eprintln!("{name}: {} of {} rounds", i + 1, load.rounds.len() - 1);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let timed = (load.series * (load.rounds.len() - 1)) as f64;
    let rss = proc_field(pid, "VmRSS:");
    let total_samples = (load.series * load.rounds.len()) as f64;
    let bytes = match name {
        "nunchi" => {
            let r = client()
                .post(format!("{base}/api/v1/admin/compact"))
                .send()
                .await
                .expect("compact");
            assert!(r.status().is_success(), "compact failed");
            du(&data)
        }
        "victoria-metrics" => {
            let _ = http_get(format!("{base}/internal/force_flush")).await;
            let _ = http_get(format!("{base}/internal/force_merge")).await;
            // Merges run in the background: wait until the directory stops changing.
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = du(&data);
                if now == last {
                    break now;
                }
                last = now;
            }
        }
        _ => {
            let r = client()
                .post(format!("{base}/api/v1/admin/tsdb/snapshot"))
                .send()
                .await
                .expect("snapshot");
            let v: serde_json::Value = r.json().await.expect("snapshot json");
            let snap = v["data"]["name"]
                .as_str()
                .expect("snapshot name")
                .to_owned();
            du(&data.join("snapshots").join(snap))
        }
    };
    drop(peer);
    if std::env::var_os("NUNCHI_BENCH_KEEP").is_some() {
        eprintln!("{name}: data kept in {}", dir.keep().display());
    }
    Report {
        name,
        samples_per_s: timed / elapsed,
        cpu_per_million: cpu / (timed / 1e6),
        rss_per_series: rss as f64 / load.series as f64,
        bytes_per_sample: bytes as f64 / total_samples,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n_series: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(240);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let t0 = now_ms() - rounds as i64 * STEP_MS;
    eprintln!("encoding {rounds} rounds of {n_series} series...");
    let load = build(n_series, rounds, t0);
    let body_bytes: usize = load
        .rounds
        .iter()
        .flat_map(|r| r.iter())
        .map(|b| b.len())
        .sum();
    eprintln!(
        "{} requests, {:.1} MB encoded",
        load.rounds.iter().map(|r| r.len()).sum::<usize>(),
        body_bytes as f64 / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut reports = Vec::new();
    for name in support::selected() {
        reports.push(rt.block_on(run_one(name, &load, concurrency)));
    }
    println!(
        "\n{} series x {} rounds (15 s apart), {concurrency} connections, 2,000 samples per request\n",
        load.series,
        load.rounds.len()
    );
    println!(
        "| system | ingest samples/s | CPU s per 1M samples | RSS per active series | bytes per sample on disk |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &reports {
        println!(
            "| {} | {:.0} | {:.2} | {:.0} B | {:.3} |",
            r.name, r.samples_per_s, r.cpu_per_million, r.rss_per_series, r.bytes_per_sample
        );
    }
    if let Some(ours) = reports.iter().find(|r| r.name == "nunchi") {
        for peer in reports.iter().filter(|r| r.name != "nunchi") {
            println!(
                "\nnunchi / {}: ingest {:.2}x, RSS per series {:.2}x, bytes per sample {:.2}x",
                peer.name,
                ours.samples_per_s / peer.samples_per_s,
                ours.rss_per_series / peer.rss_per_series,
                ours.bytes_per_sample / peer.bytes_per_sample
            );
        }
    }
}

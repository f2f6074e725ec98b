//! The dashboard with a fleet of 200 hosts: the browser bundle's size, the fleet page's
//! time to first paint and to interactive in Debian's headless Chromium, and the server
//! time of each chart query the fleet and host pages send, next to Debian's Prometheus
//! answering the same queries over the same data.
//!
//! `scripts/build-dashboard && cargo bench -p nunchi-collector --bench dashboard -- [TRIALS]`
//! (default 30 query trials, 10 page loads).
//!
//! Data: 200 hosts x 32 series (2 CPUs x 8 modes, 7 memory gauges, load 1/5/15, one
//! filesystem, one disk, one network device), 1 h of 15 s samples, pushed through
//! remote_write. Query times are client-side, the whole HTTP exchange, p50/p99 after 3
//! warm-up runs, evaluated at the data's last sample. Page times come from the browser's
//! Performance API: first contentful paint, and the moment hydration finished
//! (`window.nunchiHydratedAt`), both from navigation start.

mod support;

use std::sync::Arc;
use std::time::Instant;

use nunchi_dashboard::pages::fleet;
use nunchi_testkit::browser::Browser;
use nunchi_testkit::{client, now_ms, urlencode};
use support::data::{Gen, STEP_MS, Shape, encode, labels, load, pct, settle, timed_get};

const HOSTS: usize = 200;
/// Chart width the host page's queries are sized for.
const WIDTH_PX: f64 = 720.0;

fn fleet_data(end: i64) -> Vec<Gen> {
    let spans = vec![(end - 3_600_000, end + 1)];
    let mut out = Vec::new();
    for h in 0..HOSTS {
        let host = format!("host-{h:03}");
        let mut add = |name: &str, extra: &[(&str, &str)], shape: Shape| {
            let mut pairs = vec![("__name__", name), ("job", "node"), ("host", host.as_str())];
            pairs.extend_from_slice(extra);
            out.push(Gen {
                labels: labels(&pairs),
                shape,
                spans: spans.clone(),
            });
        };
        for cpu in ["0", "1"] {
            for mode in [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
            ] {
                let max = if mode == "idle" { 1400 } else { 200 };
                add(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    Shape::Counter { max },
                );
            }
        }
        add("node_memory_MemTotal_bytes", &[], Shape::Constant(16e9));
        for m in [
            "node_memory_MemAvailable_bytes",
            "node_memory_MemFree_bytes",
            "node_memory_Cached_bytes",
        ] {
            add(
                m,
                &[],
                Shape::Gauge {
                    base: 4e9,
                    spread: 1 << 30,
                },
            );
        }
        add(
            "node_memory_Buffers_bytes",
            &[],
            Shape::Gauge {
                base: 2e8,
                spread: 1 << 24,
            },
        );
        add("node_memory_SwapTotal_bytes", &[], Shape::Constant(2e9));
        add("node_memory_SwapFree_bytes", &[], Shape::Constant(2e9));
        for l in ["node_load1", "node_load5", "node_load15"] {
            add(
                l,
                &[],
                Shape::Gauge {
                    base: 0.5,
                    spread: 3,
                },
            );
        }
        let fs = [("mountpoint", "/"), ("device", "sda1"), ("fstype", "ext4")];
        add("node_filesystem_size_bytes", &fs, Shape::Constant(1e11));
        add(
            "node_filesystem_avail_bytes",
            &fs,
            Shape::Gauge {
                base: 4e10,
                spread: 1 << 28,
            },
        );
        for m in [
            "node_disk_read_bytes_total",
            "node_disk_written_bytes_total",
        ] {
            add(m, &[("device", "sda")], Shape::Counter { max: 1 << 22 });
        }
        for m in [
            "node_network_receive_bytes_total",
            "node_network_transmit_bytes_total",
        ] {
            add(m, &[("device", "eth0")], Shape::Counter { max: 1 << 20 });
        }
    }
    out
}

/// The chart queries of the fleet page and of one host's page, as API paths.
fn chart_queries(end_s: f64) -> Vec<(String, String)> {
    let instant = |q: &str| format!("/api/v1/query?query={}&time={end_s}", urlencode(q));
    let range = |q: &str, span: f64, step: f64| {
        format!(
            "/api/v1/query_range?query={}&start={}&end={end_s}&step={step}",
            urlencode(q),
            end_s - span
        )
    };
    let spark = |q: &str| range(q, fleet::SPARK_SPAN, fleet::SPARK_STEP);
    let host_step = (3600.0 / WIDTH_PX).ceil();
    let host = |q: &str| range(q, 3600.0, host_step);
    let sel = "host=\"host-007\"";
    vec![
        ("fleet: hosts (instant)".into(), instant(fleet::KNOWN)),
        ("fleet: last seen (instant)".into(), instant(fleet::SEEN)),
        ("fleet: disk (instant)".into(), instant(fleet::DISK)),
        ("fleet: CPU sparklines (15 m)".into(), spark(fleet::CPU)),
        ("fleet: memory sparklines (15 m)".into(), spark(fleet::MEM)),
        ("fleet: network sparklines (15 m)".into(), spark(fleet::NET)),
        (
            "host: CPU by mode (1 h)".into(),
            host(&format!(
                "avg by (mode) (rate(node_cpu_seconds_total{{{sel},mode!=\"idle\"}}[1m]))"
            )),
        ),
        (
            "host: CPU per core (1 h)".into(),
            host(&format!(
                "1 - rate(node_cpu_seconds_total{{{sel},mode=\"idle\"}}[1m])"
            )),
        ),
        (
            "host: memory used (1 h)".into(),
            host(&format!(
                "node_memory_MemTotal_bytes{{{sel}}} - node_memory_MemAvailable_bytes{{{sel}}}"
            )),
        ),
        (
            "host: network (1 h)".into(),
            host(&format!(
                "rate(node_network_receive_bytes_total{{{sel}}}[1m])"
            )),
        ),
    ]
}

async fn time_queries(base: &str, queries: &[(String, String)], trials: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for (name, path) in queries {
        let url = format!("{base}{path}");
        let (_, body) = timed_get(&url).await;
        let n = body["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "{name}: no result from {url}: {body}");
        for _ in 0..3 {
            timed_get(&url).await;
        }
        let mut ms = Vec::with_capacity(trials);
        for _ in 0..trials {
            ms.push(timed_get(&url).await.0.as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        out.push((pct(&ms, 0.5), pct(&ms, 0.99)));
    }
    out
}

struct PageLoad {
    paint_ms: f64,
    interactive_ms: f64,
    rows: u64,
}

async fn page_loads(base: &str, loads: usize) -> Vec<PageLoad> {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Browser::start(dir.path()).await;
    let mut out = Vec::new();
    for i in 0..loads + 1 {
        b.client.goto("about:blank").await.expect("blank");
        b.client
            .goto(&format!("{base}/"))
            .await
            .expect("fleet page");
        let started = Instant::now();
        let hydrated = loop {
            let v = b.js("return window.nunchiHydratedAt || null;").await;
            if let Some(t) = v.as_f64() {
                break t;
            }
            assert!(started.elapsed().as_secs() < 60, "the page never hydrated");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let paint = b
            .js("const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;")
            .await
            .as_f64()
            .unwrap_or(f64::NAN);
        let rows = b
            .js("return document.querySelectorAll('#fleet-table tbody tr').length;")
            .await
            .as_u64()
            .unwrap_or(0);
        // The first load fills the browser's caches; it is not counted.
        if i > 0 {
            out.push(PageLoad {
                paint_ms: paint,
                interactive_ms: hydrated,
                rows,
            });
        }
    }
    out
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let loads = 10;
    let pkg = nunchi_testkit::target_dir().join("dashboard/pkg");
    assert!(
        nunchi_dashboard::ssr::has_bundle(&pkg),
        "no browser bundle in {}: run scripts/build-dashboard",
        pkg.display()
    );
    let end = now_ms().div_euclid(STEP_MS) * STEP_MS;
    let gens = fleet_data(end);
    eprintln!("encoding {} series, 1 h of 15 s samples...", gens.len());
    let bodies = Arc::new(encode(&gens, end));
    let queries = chart_queries(end as f64 / 1e3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = support::start("nunchi", dir.path()).await;
        eprintln!("nunchi: loading {} requests", bodies.len());
        load(&ours.write_url(), &bodies).await;
        eprintln!("nunchi: {loads} loads of the fleet page");
        let html = client()
            .get(format!("{}/", ours.base))
            .send()
            .await
            .expect("page")
            .bytes()
            .await
            .expect("body");
        let pages = page_loads(&ours.base, loads).await;
        settle(&ours).await;
        eprintln!("nunchi: chart queries");
        let ours_q = time_queries(&ours.base, &queries, trials).await;
        drop(ours);
        let pdir = tempfile::tempdir().expect("tempdir");
        let prom = support::start("prometheus", pdir.path()).await;
        eprintln!("prometheus: loading {} requests", bodies.len());
        load(&prom.write_url(), &bodies).await;
        settle(&prom).await;
        eprintln!("prometheus: chart queries");
        let prom_q = time_queries(&prom.base, &queries, trials).await;

        println!("\n### Browser bundle\n\n| file | bytes | gzip |\n| --- | ---: | ---: |");
        for f in nunchi_dashboard::ssr::BUNDLE_FILES {
            let p = pkg.join(f);
            println!(
                "| {f} | {} | {} |",
                size(&p),
                size(&p.with_extension(format!(
                    "{}.gz",
                    p.extension().and_then(|e| e.to_str()).unwrap_or("")
                )))
            );
        }
        println!(
            "| nunchi.css | {} | – |",
            nunchi_dashboard::ssr::CSS.len()
        );
        println!(
            "\nFleet page HTML with {HOSTS} hosts: {} bytes (server-rendered, rows included).",
            html.len()
        );
        let mut paint: Vec<f64> = pages.iter().map(|p| p.paint_ms).collect();
        let mut inter: Vec<f64> = pages.iter().map(|p| p.interactive_ms).collect();
        paint.sort_by(f64::total_cmp);
        inter.sort_by(f64::total_cmp);
        let rows = pages.iter().map(|p| p.rows).min().unwrap_or(0);
        println!(
            "\n### Fleet page, {HOSTS} hosts, {loads} loads in headless Chromium\n\n| | p50 ms | worst ms |\n| --- | ---: | ---: |\n| first contentful paint | {:.0} | {:.0} |\n| interactive (hydrated) | {:.0} | {:.0} |\n\nRows rendered: {rows}.",
            pct(&paint, 0.5),
            paint.last().copied().unwrap_or(f64::NAN),
            pct(&inter, 0.5),
            inter.last().copied().unwrap_or(f64::NAN),
        );
        println!(
            "\n### Chart queries, {trials} trials (ms, client-side)\n\n| query | nunchi p50 | nunchi p99 | Prometheus p50 | Prometheus p99 | p99 ratio |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (((name, _), o), p) in queries.iter().zip(&ours_q).zip(&prom_q) {
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x |",
                o.0,
                o.1,
                p.0,
                p.1,
                o.1 / p.1
            );
        }
    });
}

//! Query latency against real peers from Debian's packages: nunchi-collector,
//! VictoriaMetrics and Prometheus are loaded with the same data through remote_write, then
//! asked the same questions over the Prometheus HTTP API.
//!
//! `cargo bench -p nunchi-collector --bench queries -- [TRIALS]` (default 50;
//! `NUNCHI_BENCH_PEERS` picks the systems).
//!
//! - Dashboard: a 24 h range query at a 60 s step over 1,000 series (125 hosts x 2 CPUs x
//!   4 busy modes, 15 s samples): `sum by (instance) (rate(...[5m]))`, the panel every host
//!   dashboard has; and the same without the `sum` (1,000 result series). Each is timed
//!   twice: computed in full every time (`nocache=1`: a first load, or a new time range),
//!   and as a dashboard refreshing every minute asks it, the window moved on by one step
//!   each time (result caches on; Prometheus has none).
//! - Rules: every expression of `rules/default.yml` evaluated once at the data's end, in
//!   order, as a rule group is, over a fleet of 10,047 series (200 hosts of host metrics,
//!   23 feed-service instances with latency histograms, pool, cache and fan-out metrics;
//!   75 minutes of 15 s samples, plus a slice of yesterday for the DAU rule).
//!
//! Each system's data is settled before timing: nunchi flushed and compacted, VictoriaMetrics
//! flushed, Prometheus' head compacted to blocks as it does on its own. p50 and p99 are over TRIALS runs after 3 warm-up runs; times are client-side, the
//! whole HTTP exchange.

mod support;

use std::sync::Arc;
use std::time::Instant;

use nunchi_testkit::{now_ms, urlencode};
use support::data::{Gen, STEP_MS, Shape, encode, labels, load, pct, settle, timed_get};

const DAY_MS: i64 = 86_400_000;
const DASH: &str =
    "sum by (instance) (rate(node_cpu_seconds_total{job=\"dash\",mode!=\"idle\"}[5m]))";
const DASH_RAW: &str = "rate(node_cpu_seconds_total{job=\"dash\",mode!=\"idle\"}[5m])";

/// The dashboard's 1,250 series (1,000 of them busy modes) over 24 h.
fn dashboard(end: i64) -> Vec<Gen> {
    let mut out = Vec::new();
    for h in 0..125 {
        let instance = format!("dash-{h:03}:9100");
        for cpu in ["0", "1"] {
            for mode in ["idle", "user", "system", "iowait", "irq"] {
                out.push(Gen {
                    labels: labels(&[
                        ("__name__", "node_cpu_seconds_total"),
                        ("job", "dash"),
                        ("instance", &instance),
                        ("cpu", cpu),
                        ("mode", mode),
                    ]),
                    shape: Shape::Counter { max: 1500 },
                    spans: vec![(end - DAY_MS, end + 1)],
                });
            }
        }
    }
    out
}

/// The fleet the default rules watch: 10,047 series over the last 75 minutes.
fn fleet(end: i64) -> Vec<Gen> {
    let recent = vec![(end - 75 * 60_000, end + 1)];
    let mut out = Vec::new();
    let mut dau = Vec::new();
    let mut push = |pairs: &[(&str, &str)], shape: Shape| {
        out.push(Gen {
            labels: labels(pairs),
            shape,
            spans: recent.clone(),
        })
    };
    for h in 0..200 {
        let i = format!("host-{h:03}:9100");
        let i = i.as_str();
        let host = format!("host-{h:03}");
        let host = host.as_str();
        for cpu in ["0", "1", "2", "3"] {
            for mode in [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
            ] {
                push(
                    &[
                        ("__name__", "node_cpu_seconds_total"),
                        ("job", "node"),
                        ("instance", i),
                        ("host", host),
                        ("cpu", cpu),
                        ("mode", mode),
                    ],
                    Shape::Counter { max: 1500 },
                );
            }
        }
        let node = |name: &'static str| {
            [
                ("__name__", name),
                ("job", "node"),
                ("instance", i),
                ("host", host),
            ]
        };
        push(&node("node_memory_MemTotal_bytes"), Shape::Constant(16e9));
        push(
            &node("node_memory_MemAvailable_bytes"),
            Shape::Gauge {
                base: 6e9,
                spread: 1 << 30,
            },
        );
        push(
            &node("node_load1"),
            Shape::Gauge {
                base: 1.0,
                spread: 4,
            },
        );
        push(&node("node_boot_time_seconds"), Shape::Constant(1.7e9));
        for (mount, device) in [("/", "sda1"), ("/var", "sdb1")] {
            for (name, shape) in [
                (
                    "node_filesystem_avail_bytes",
                    Shape::Gauge {
                        base: 4e10,
                        spread: 1 << 28,
                    },
                ),
                ("node_filesystem_size_bytes", Shape::Constant(1e11)),
            ] {
                push(
                    &[
                        ("__name__", name),
                        ("job", "node"),
                        ("instance", i),
                        ("host", host),
                        ("mountpoint", mount),
                        ("device", device),
                        ("fstype", "ext4"),
                    ],
                    shape,
                );
            }
        }
    }
    let les = [
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
        "2.5", "5", "+Inf",
    ];
    for f in 0..23 {
        let i = format!("feed-{f:02}:8080");
        let i = i.as_str();
        for route in ["/feed", "/posts", "/follow", "/users/{id}"] {
            for status in ["200", "500"] {
                push(
                    &[
                        ("__name__", "http_requests_total"),
                        ("job", "feed"),
                        ("instance", i),
                        ("route", route),
                        ("method", "GET"),
                        ("status", status),
                    ],
                    Shape::Counter {
                        max: if status == "200" { 500 } else { 5 },
                    },
                );
            }
            for (k, le) in les.iter().enumerate() {
                push(
                    &[
                        ("__name__", "http_request_duration_seconds_bucket"),
                        ("job", "feed"),
                        ("instance", i),
                        ("route", route),
                        ("method", "GET"),
                        ("le", le),
                    ],
                    Shape::Counter {
                        max: 40 * (k as u64 + 1),
                    },
                );
            }
        }
        for (k, le) in les.iter().enumerate() {
            push(
                &[
                    ("__name__", "feed_db_pool_acquire_seconds_bucket"),
                    ("job", "feed"),
                    ("instance", i),
                    ("le", le),
                ],
                Shape::Counter {
                    max: 40 * (k as u64 + 1),
                },
            );
        }
        for cache in ["feed", "user", "celebrity"] {
            for result in ["hit", "miss"] {
                push(
                    &[
                        ("__name__", "feed_cache_requests_total"),
                        ("job", "feed"),
                        ("instance", i),
                        ("cache", cache),
                        ("result", result),
                    ],
                    Shape::Counter {
                        max: if result == "hit" { 900 } else { 100 },
                    },
                );
            }
        }
        let feed = |name: &'static str| [("__name__", name), ("job", "feed"), ("instance", i)];
        for state in ["in_use", "idle"] {
            push(
                &[
                    ("__name__", "feed_db_pool_connections"),
                    ("job", "feed"),
                    ("instance", i),
                    ("state", state),
                ],
                Shape::Gauge {
                    base: 4.0,
                    spread: 8,
                },
            );
        }
        push(&feed("feed_db_pool_max_connections"), Shape::Constant(16.0));
        push(
            &feed("feed_fanout_lag_seconds"),
            Shape::Gauge {
                base: 0.5,
                spread: 3,
            },
        );
        dau.push(Gen {
            labels: labels(&feed("feed_dau")),
            shape: Shape::Gauge {
                base: 50_000.0,
                spread: 5_000,
            },
            spans: vec![(end - DAY_MS - 10 * 60_000, end - DAY_MS + 1), recent[0]],
        });
    }
    out.extend(dau);
    out
}

struct Figures {
    name: &'static str,
    dash: (f64, f64),
    dash_raw: (f64, f64),
    dash_refresh: (f64, f64),
    dash_raw_refresh: (f64, f64),
    rules: (f64, f64),
}

async fn measure(
    name: &'static str,
    bodies: &Arc<Vec<bytes::Bytes>>,
    end: i64,
    exprs: &[String],
    trials: usize,
) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = support::start(name, dir.path()).await;
    eprintln!("{name}: loading {} requests", bodies.len());
    load(&p.write_url(), bodies).await;
    eprintln!("{name}: settling");
    settle(&p).await;
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    // The 24 h up to `end` moved back by `back` steps. Trials computed in full all ask for
    // the last 24 h; refreshes start further back and move on one step each time.
    let range = |q: &str, back: i64, nocache: bool| {
        let to = end - back * 60_000;
        format!(
            "{}/api/v1/query_range?query={}&start={}&end={}&step=60{}",
            p.base,
            urlencode(q),
            secs(to - DAY_MS),
            secs(to),
            if nocache { "&nocache=1" } else { "" }
        )
    };
    let runs = (trials + 3) as i64;
    let run = |q: &'static str, refresh: bool, expect: Option<usize>| {
        let name = p.name;
        async move {
            let mut times = Vec::new();
            for i in 0..trials + 3 {
                let url = if refresh {
                    range(q, runs - 1 - i as i64, false)
                } else {
                    range(q, 0, true)
                };
                let (took, v) = timed_get(&url).await;
                assert_eq!(v["status"], "success", "{name}: {url}: {v}");
                if let Some(n) = expect {
                    assert_eq!(
                        v["data"]["result"].as_array().map(Vec::len),
                        Some(n),
                        "{name}: {url}"
                    );
                }
                if i >= 3 {
                    times.push(took.as_secs_f64() * 1000.0);
                }
            }
            times.sort_by(f64::total_cmp);
            (pct(&times, 0.5), pct(&times, 0.99))
        }
    };
    eprintln!("{name}: dashboard queries");
    let dash = run(DASH, false, Some(125)).await;
    let dash_raw = run(DASH_RAW, false, Some(1000)).await;
    eprintln!("{name}: dashboard refreshes");
    let dash_refresh = run(DASH, true, Some(125)).await;
    let dash_raw_refresh = run(DASH_RAW, true, Some(1000)).await;
    eprintln!("{name}: rule set");
    let mut times = Vec::new();
    for i in 0..trials + 3 {
        let start = Instant::now();
        for e in exprs {
            let url = format!(
                "{}/api/v1/query?query={}&time={}",
                p.base,
                urlencode(e),
                secs(end)
            );
            let (_, v) = timed_get(&url).await;
            assert_eq!(v["status"], "success", "{name}: {e}: {v}");
        }
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Figures {
        name,
        dash,
        dash_raw,
        dash_refresh,
        dash_raw_refresh,
        rules: (pct(&times, 0.5), pct(&times, 0.99)),
    }
}

#[derive(serde::Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(serde::Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    expr: String,
}

fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let rules: RuleFile = serde_saphyr::from_str(include_str!("../rules/default.yml"))
        .expect("rules/default.yml parses");
    let exprs: Vec<String> = rules
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.expr.clone()))
        .collect();
    let end = (now_ms() - 120_000).div_euclid(STEP_MS) * STEP_MS;
    let mut gens = dashboard(end);
    let dash_series = gens.len();
    gens.extend(fleet(end));
    eprintln!(
        "encoding {} dashboard series (24 h) and {} fleet series (75 min)...",
        dash_series,
        gens.len() - dash_series
    );
    let bodies = Arc::new(encode(&gens, end));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let figures: Vec<Figures> = support::selected()
        .into_iter()
        .map(|name| rt.block_on(measure(name, &bodies, end, &exprs, trials)))
        .collect();
    println!(
        "\n{trials} trials after 3 warm-up runs; milliseconds, client-side\n\n| system | dashboard p50 | dashboard p99 | per-series p50 | per-series p99 | dashboard refresh p50 | dashboard refresh p99 | per-series refresh p50 | per-series refresh p99 | rule set ({} rules) p50 | rule set p99 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        exprs.len()
    );
    for f in &figures {
        let cells: Vec<String> = [
            f.dash,
            f.dash_raw,
            f.dash_refresh,
            f.dash_raw_refresh,
            f.rules,
        ]
        .iter()
        .flat_map(|(p50, p99)| [format!("{p50:.1}"), format!("{p99:.1}")])
        .collect();
        println!("| {} | {} |", f.name, cells.join(" | "));
    }
    if let Some(ours) = figures.iter().find(|f| f.name == "nunchi") {
        for peer in figures.iter().filter(|f| f.name != "nunchi") {
            println!(
                "\nnunchi / {} (p99 time, lower is better): dashboard {:.2}x, per-series {:.2}x, dashboard refresh {:.2}x, per-series refresh {:.2}x, rule set {:.2}x",
                peer.name,
                ours.dash.1 / peer.dash.1,
                ours.dash_raw.1 / peer.dash_raw.1,
                ours.dash_refresh.1 / peer.dash_refresh.1,
                ours.dash_raw_refresh.1 / peer.dash_raw_refresh.1,
                ours.rules.1 / peer.rules.1
            );
        }
    }
}

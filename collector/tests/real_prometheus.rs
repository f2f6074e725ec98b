//! The collector beside a real Prometheus (Debian's): Prometheus pushes into the
//! collector with remote_write, and the same data loaded into both answers the PromQL of
//! `testdata/promql_core.txt` the same way (a differential test, within float tolerance).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Collector, push, query, query_range, series, start_prometheus, wait_for};
use nunchi_model::Series;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_pushes_into_the_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['PLACEHOLDER']\nremote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: 1s\n",
        c.write_url()
    );
    // Prometheus scrapes itself; its port is only known once started, so it scrapes
    // the collector's own /metrics instead, which exists already.
    let config = config.replace("PLACEHOLDER", c.base.trim_start_matches("http://"));
    let (_prom, _base) = start_prometheus(dir.path(), &config, &[]).await;
    let base = c.base.clone();
    let got = wait_for(Duration::from_secs(60), || async {
        let v = query(&base, r#"up{job="prometheus"}"#, common::now_ms()).await;
        let r = v["data"]["result"].as_array()?.first()?.clone();
        Some(r)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no up{{job=\"prometheus\"}} in the collector; log:\n{}",
            c.log_text()
        )
    });
    assert_eq!(got["value"][1], "1");
    assert_eq!(
        got["metric"]["instance"],
        c.base.trim_start_matches("http://")
    );
    // The collector's own ingest counter goes through Prometheus and back.
    let counted = wait_for(Duration::from_secs(30), || async {
        let v = query(&base, "nunchi_ingest_samples_total > 0", common::now_ms()).await;
        (!v["data"]["result"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "nunchi_ingest_samples_total never arrived"
    );
}

/// 40 minutes of data at 15 s: counters (one with a reset), gauges, a series that ends
/// with a staleness marker, a sparse series and an `up` that drops.
fn dataset(end: i64) -> Vec<Series> {
    let step = 15_000;
    let start = end - 40 * 60_000;
    let times: Vec<i64> = (0..)
        .map(|i| start + i * step)
        .take_while(|&t| t <= end)
        .collect();
    let mut out = Vec::new();
    for (ii, inst) in ["a", "b", "c"].iter().enumerate() {
        for (ci, code) in ["200", "500"].iter().enumerate() {
            let mut v = 100.0 * (ii + 1) as f64;
            let samples: Vec<(i64, f64)> = times
                .iter()
                .enumerate()
                .map(|(k, &t)| {
                    v += ((k * 7 + ii * 3 + ci) % 11) as f64 + if ci == 0 { 5.0 } else { 0.25 };
                    if *inst == "b" && *code == "200" && k == times.len() / 2 {
                        v = 3.0;
                    }
                    (t, v)
                })
                .collect();
            out.push(series(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", inst),
                    ("code", code),
                ],
                &samples,
            ));
        }
        let load: Vec<(i64, f64)> = times
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                (
                    t,
                    ((k as f64 / 9.0 + ii as f64).sin() + 1.0) * (ii as f64 + 0.5),
                )
            })
            .collect();
        out.push(series(
            &[
                ("__name__", "node_load1"),
                ("job", "node"),
                ("instance", inst),
            ],
            &load,
        ));
        let mem: Vec<(i64, f64)> = times
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, 1e9 + (k * 4096 * (ii + 1)) as f64))
            .collect();
        out.push(series(
            &[
                ("__name__", "node_memory_free_bytes"),
                ("job", "node"),
                ("instance", inst),
            ],
            &mem,
        ));
        let up: Vec<(i64, f64)> = times
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                (
                    t,
                    if *inst == "c" && k > times.len() / 3 && k < times.len() * 2 / 3 {
                        0.0
                    } else {
                        1.0
                    },
                )
            })
            .collect();
        out.push(series(
            &[("__name__", "up"), ("job", "node"), ("instance", inst)],
            &up,
        ));
    }
    let half = times.len() / 2;
    let mut temp: Vec<(i64, f64)> = times[..half]
        .iter()
        .enumerate()
        .map(|(k, &t)| (t, 20.0 + (k % 5) as f64 * 0.5))
        .collect();
    temp.push((times[half], nunchi_model::stale_nan()));
    out.push(series(
        &[("__name__", "temp_celsius"), ("room", "x")],
        &temp,
    ));
    let sparse: Vec<(i64, f64)> = times
        .iter()
        .step_by(8)
        .enumerate()
        .map(|(k, &t)| (t, (k * k) as f64))
        .collect();
    out.push(series(
        &[("__name__", "sparse_gauge"), ("job", "batch")],
        &sparse,
    ));
    out
}

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => false,
    }
}

/// A result as `labels → [(t, value)]`, whatever its type.
fn normalise(v: &serde_json::Value) -> Result<BTreeMap<String, Vec<(String, String)>>, String> {
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    let data = &v["data"];
    let mut out = BTreeMap::new();
    let point = |p: &serde_json::Value| {
        (
            p[0].to_string(),
            p[1].as_str().unwrap_or_default().to_owned(),
        )
    };
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for r in data["result"].as_array().into_iter().flatten() {
                let key = serde_json::to_string(&r["metric"]).unwrap_or_default();
                let pts = match r.get("values") {
                    Some(vals) => vals.as_array().into_iter().flatten().map(point).collect(),
                    None => vec![point(&r["value"])],
                };
                out.insert(key, pts);
            }
        }
    }
    Ok(out)
}

fn compare(what: &str, ours: &serde_json::Value, theirs: &serde_json::Value) -> Option<String> {
    let (a, b) = match (normalise(ours), normalise(theirs)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            return (a.contains("execution") != b.contains("execution"))
                .then(|| format!("{what}: errors differ: ours {a}, theirs {b}"));
        }
        (a, b) => return Some(format!("{what}:\n  ours:   {a:?}\n  theirs: {b:?}")),
    };
    let same = a.len() == b.len()
        && a.iter().all(|(k, pa)| {
            b.get(k).is_some_and(|pb| {
                pa.len() == pb.len()
                    && pa
                        .iter()
                        .zip(pb)
                        .all(|(x, y)| x.0 == y.0 && close(&x.1, &y.1))
            })
        });
    (!same).then(|| format!("{what}:\n  ours:   {a:?}\n  theirs: {b:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_match_a_real_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let (_prom, prom) = start_prometheus(
        dir.path(),
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    // Whole minutes, so query times line up with samples in both.
    let end = (common::now_ms() / 60_000 - 1) * 60_000;
    let data = dataset(end);
    for s in &data {
        let (code, text) = push(&c.write_url(), std::slice::from_ref(s), None).await;
        assert_eq!(code, 204, "collector: {text}");
        let (code, text) = push(
            &format!("{prom}/api/v1/write"),
            std::slice::from_ref(s),
            None,
        )
        .await;
        assert!((200..300).contains(&code), "prometheus: {code} {text}");
    }
    let queries = include_str!("testdata/promql_core.txt");
    let start = end - 40 * 60_000;
    let instants = [
        start + 3 * 60_000,
        start + 14 * 60_000 + 7_000,
        start + 20 * 60_000 + 30_000,
        start + 33 * 60_000,
        end,
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for q in queries
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        for &t in &instants {
            let what = format!("instant {q} @ {}", (t - start) / 1000);
            failures.extend(compare(
                &what,
                &query(&c.base, q, t).await,
                &query(&prom, q, t).await,
            ));
            checked += 1;
        }
        for step in [60.0, 37.0] {
            let (a, b) = (start + 5 * 60_000, end);
            let what = format!("range {q} step {step}");
            failures.extend(compare(
                &what,
                &query_range(&c.base, q, a, b, step).await,
                &query_range(&prom, q, a, b, step).await,
            ));
            checked += 1;
        }
    }
    assert!(checked > 400, "only {checked} answers compared");
    assert!(
        failures.is_empty(),
        "{} of {checked} answers differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

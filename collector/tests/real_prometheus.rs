//! The collector beside a real Prometheus (Debian's): Prometheus pushes into the
//! collector with remote_write, and the same data loaded into both answers the PromQL of
//! `testdata/promql_core.txt` and `testdata/promql_full.txt` the same way (a differential
//! test, within float tolerance).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Collector, query, query_range, start_prometheus, wait_for};

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

/// Marks an answer both refused alike: fine only where the query set expects it.
const BOTH_FAILED: &str = "both refused: ";

fn compare(what: &str, ours: &serde_json::Value, theirs: &serde_json::Value) -> Option<String> {
    let (a, b) = match (normalise(ours), normalise(theirs)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            return Some(if a.contains("execution") != b.contains("execution") {
                format!("{what}: errors differ: ours {a}, theirs {b}")
            } else {
                format!("{BOTH_FAILED}{what}")
            });
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
    let end = common::dataset::load_both(&c, &prom).await;
    let queries = concat!(
        include_str!("testdata/promql_core.txt"),
        "\n",
        include_str!("testdata/promql_full.txt")
    );
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
    let mut expect_refused = Vec::new();
    for line in queries
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        // `! query`: both must refuse it (with the same kind of error).
        let q = match line.strip_prefix('!') {
            Some(q) => {
                expect_refused.push(q.trim());
                q.trim()
            }
            None => line,
        };
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
    assert!(checked > 900, "only {checked} answers compared");
    // Both may refuse only the queries marked `!`, and range queries over a range vector.
    let (refused, failures): (Vec<String>, Vec<String>) = failures
        .into_iter()
        .partition(|f| f.starts_with(BOTH_FAILED));
    let unexpected: Vec<&String> = refused
        .iter()
        .filter(|f| {
            let range_vector = f.starts_with(&format!("{BOTH_FAILED}range "))
                && f.rsplit_once(" step ")
                    .is_some_and(|(q, _)| q.ends_with(']'));
            !range_vector
                && !expect_refused.iter().any(|q| {
                    f.ends_with(&format!(" {q} step 60"))
                        || f.ends_with(&format!(" {q} step 37"))
                        || f.contains(&format!(" {q} @ "))
                })
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "both refused queries the set expects answers to: {unexpected:#?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} answers differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

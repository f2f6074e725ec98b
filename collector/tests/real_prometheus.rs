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

/// Writes `promql/tests/testdata/differential.test`: the data set and the queries of
/// `testdata/promql_*.txt`, with the answers of a real Prometheus, in the `promqltest`
/// format that `nunchi-promql`'s runner reads. The data starts at time 0, as `load` does,
/// so time functions answer the same in the file. Run again after editing the query
/// lists: `cargo test -p nunchi-collector --test real_prometheus -- --ignored
/// write_promqltest_cases`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the promqltest file from a real Prometheus; run by hand"]
async fn write_promqltest_cases() {
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prom, prom) = start_prometheus(
        dir.path(),
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let (step, end) = (15_000, 40 * 60_000);
    let data = common::dataset::dataset(end);
    let mut out = String::from(
        "# Written by collector/tests/real_prometheus.rs (write_promqltest_cases) from the\n\
         # answers of a real Prometheus to the queries of collector/tests/testdata/promql_*.txt\n\
         # on the differential data set. Do not edit by hand: edit the query lists and rerun.\n\n\
         load 15s\n",
    );
    for s in &data {
        let (code, text) = common::push(
            &format!("{prom}/api/v1/write"),
            std::slice::from_ref(s),
            None,
        )
        .await;
        assert!((200..300).contains(&code), "prometheus: {code} {text}");
        let mut vals = Vec::new();
        for sample in &s.samples {
            let k = (sample.timestamp_ms / step) as usize;
            vals.resize(k, "_".to_owned());
            vals.push(if nunchi_model::is_stale_nan(sample.value) {
                "stale".to_owned()
            } else {
                format!("{:?}", sample.value)
            });
        }
        let _ = writeln!(out, "    {} {}", series_text(&s.labels), vals.join(" "));
    }
    let queries = concat!(
        include_str!("testdata/promql_core.txt"),
        "\n",
        include_str!("testdata/promql_full.txt")
    );
    let instants = [
        3 * 60_000,
        14 * 60_000 + 7_000,
        20 * 60_000 + 30_000,
        33 * 60_000,
        end,
    ];
    let mut cases = 0;
    for line in queries
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let q = line.trim_start_matches('!').trim();
        for &t in &instants {
            let v = query(&prom, q, t).await;
            if let Some(case) = promqltest_case(&format!("instant at {}", ms_text(t)), q, &v, None)
            {
                out.push_str(&case);
                cases += 1;
            }
        }
        if q.ends_with(']') {
            continue;
        }
        for step in [60_000, 37_000] {
            let start = 5 * 60_000;
            let v = query_range(&prom, q, start, end, step as f64 / 1000.0).await;
            let head = format!(
                "range from {} to {} step {}",
                ms_text(start),
                ms_text(end),
                ms_text(step)
            );
            if let Some(case) = promqltest_case(&head, q, &v, Some((start, end, step))) {
                out.push_str(&case);
                cases += 1;
            }
        }
    }
    assert!(cases > 900, "only {cases} cases");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../promql/tests/testdata/differential.test");
    std::fs::write(&path, out).expect("write differential.test");
    eprintln!("wrote {cases} cases to {}", path.display());
}

fn ms_text(ms: i64) -> String {
    let (m, s) = (ms / 60_000, ms % 60_000 / 1000);
    match (m, s) {
        (0, 0) => "0".to_owned(),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn series_text(labels: &nunchi_model::Labels) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn metric_text(m: &serde_json::Value) -> String {
    let inner: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// One `eval` of Prometheus' answer `v`; `None` for answers the format cannot hold
/// (strings, range vectors at an instant).
fn promqltest_case(
    head: &str,
    q: &str,
    v: &serde_json::Value,
    range: Option<(i64, i64, i64)>,
) -> Option<String> {
    let mut case = format!("eval {head} {q}\n");
    if v["status"] != "success" {
        case.push_str("    expect fail\n\n");
        return Some(case);
    }
    let data = &v["data"];
    match data["resultType"].as_str()? {
        "scalar" => {
            case.push_str(&format!("    {}\n", data["result"][1].as_str()?));
        }
        "vector" if range.is_none() => {
            for r in data["result"].as_array()? {
                case.push_str(&format!(
                    "    {} {}\n",
                    metric_text(&r["metric"]),
                    r["value"][1].as_str()?
                ));
            }
        }
        "matrix" => {
            let (start, end, step) = range?;
            let steps = ((end - start) / step + 1) as usize;
            for r in data["result"].as_array()? {
                let mut vals = vec!["_".to_owned(); steps];
                for p in r["values"].as_array()? {
                    let t = (p[0].as_f64()? * 1000.0).round() as i64;
                    vals[((t - start) / step) as usize] = p[1].as_str()?.to_owned();
                }
                case.push_str(&format!(
                    "    {} {}\n",
                    metric_text(&r["metric"]),
                    vals.join(" ")
                ));
            }
        }
        _ => return None,
    }
    case.push('\n');
    Some(case)
}

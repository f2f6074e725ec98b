//! The Prometheus HTTP API beyond queries, against a real Prometheus holding the same
//! data: `/series`, `/labels`, `/label/<name>/values` (with `match[]` and time ranges),
//! their errors, `promtool query` run against both, and the requests Grafana's Prometheus
//! data source and KEDA's Prometheus scaler make.

mod common;

use std::process::Command;

use common::{Collector, api_get, client, start_prometheus, urlencode};

/// Both answers as JSON, `data` and `status` compared exactly (ordering included).
async fn same(c: &str, p: &str, path: &str) -> serde_json::Value {
    let ours = api_get(c, path).await;
    let theirs = api_get(p, path).await;
    assert_eq!(
        ours["status"], theirs["status"],
        "{path}: {ours} vs {theirs}"
    );
    assert_eq!(
        ours["errorType"], theirs["errorType"],
        "{path}: {ours} vs {theirs}"
    );
    if ours["status"] == "success" {
        assert_eq!(ours["data"], theirs["data"], "{path}");
    }
    ours
}

fn promtool(args: &[String]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_labels_and_values_match_a_real_prometheus() {
    common::require("promtool", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let (_prom, prom) = start_prometheus(
        dir.path(),
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let end = common::dataset::load_both(&c, &prom).await;
    let (s, e) = (end / 1000 - 2400, end / 1000);
    let late = e - 300;
    let m = |sel: &str| format!("match[]={}", urlencode(sel));
    let paths = [
        format!("/api/v1/series?{}", m("up")),
        format!(
            "/api/v1/series?{}&{}",
            m("{job=\"node\"}"),
            m("temp_celsius")
        ),
        format!(
            "/api/v1/series?{}&start={s}&end={e}",
            m("{__name__=~\"node_.*\",instance!=\"b\"}")
        ),
        format!("/api/v1/series?{}&start={late}&end={e}", m("{job=~\".+\"}")),
        format!("/api/v1/series?{}&start={late}", m("temp_celsius")),
        "/api/v1/labels".to_owned(),
        format!("/api/v1/labels?{}", m("up")),
        format!("/api/v1/labels?{}&start={s}&end={e}", m("node_uname_info")),
        "/api/v1/label/__name__/values".to_owned(),
        format!("/api/v1/label/instance/values?{}", m("node_load1")),
        format!(
            "/api/v1/label/le/values?{}",
            m("http_request_duration_seconds_bucket")
        ),
        format!("/api/v1/label/job/values?start={late}&end={e}"),
        "/api/v1/label/nonexistent/values".to_owned(),
        // Errors: no match[], a bad selector, a bad time, a bad label name.
        "/api/v1/series".to_owned(),
        format!("/api/v1/series?{}", m("up{")),
        format!("/api/v1/series?{}&start=yesterday", m("up")),
        format!("/api/v1/labels?{}", m("sum(up)")),
        "/api/v1/label/1bad/values".to_owned(),
    ];
    for p in &paths {
        same(&c.base, &prom, p).await;
    }
    // Without match[], Prometheus answers from whole blocks overlapping the range (its
    // head holds hours); the collector lists what series with data in the range use.
    let labels = api_get(&c.base, &format!("/api/v1/labels?start={late}&end={e}")).await;
    let labels = labels["data"].as_array().expect("labels");
    assert!(!labels.iter().any(|n| n == "room"), "{labels:?}");
    assert!(labels.iter().any(|n| n == "nodename"), "{labels:?}");
    let names = api_get(
        &c.base,
        &format!("/api/v1/label/__name__/values?start={late}&end={e}"),
    )
    .await;
    let names = names["data"].as_array().expect("names");
    assert!(!names.iter().any(|n| n == "temp_celsius"), "{names:?}");
    assert!(names.iter().any(|n| n == "node_load1"), "{names:?}");

    // POST forms, as Grafana sends them.
    let form = client()
        .post(format!("{}/api/v1/series", c.base))
        .form(&[
            ("match[]", "node_load1"),
            ("start", &s.to_string()),
            ("end", &e.to_string()),
        ])
        .send()
        .await
        .expect("post");
    let v: serde_json::Value = form.json().await.expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(3), "{v}");

    // promtool against both prints the same.
    let at = e.to_string();
    let (start, end_s) = ((s + 600).to_string(), e.to_string());
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "query",
            "instant",
            "--time",
            &at,
            "SERVER",
            "sum by (instance) (rate(http_requests_total[5m]))",
        ],
        vec![
            "query",
            "instant",
            "--time",
            &at,
            "SERVER",
            "histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[5m]))",
        ],
        vec![
            "query",
            "range",
            "--start",
            &start,
            "--end",
            &end_s,
            "--step",
            "1m",
            "SERVER",
            "max_over_time(node_load1[5m:1m])",
        ],
        vec![
            "query",
            "series",
            "--match",
            "up",
            "--match",
            "node_uname_info",
            "SERVER",
        ],
        vec!["query", "labels", "SERVER", "instance"],
        vec![
            "query",
            "labels",
            "--match",
            "temp_celsius",
            "SERVER",
            "room",
        ],
    ];
    for args in runs {
        let with = |server: &str| -> Vec<String> {
            args.iter()
                .map(|a| if *a == "SERVER" { server } else { a }.to_owned())
                .collect()
        };
        let (ok_ours, ours) = promtool(&with(&c.base));
        let (ok_theirs, theirs) = promtool(&with(&prom));
        assert!(
            ok_ours,
            "promtool {args:?} against the collector failed: {ours}"
        );
        assert!(
            ok_theirs,
            "promtool {args:?} against Prometheus failed: {theirs}"
        );
        assert!(!ours.trim().is_empty(), "promtool {args:?}: empty");
        assert_eq!(
            series_blocks(&ours),
            series_blocks(&theirs),
            "promtool {args:?}"
        );
    }
}

/// promtool's query output as a sorted list of per-series blocks: a line with
/// `=>` opens a series (and holds its value for instant queries), the lines
/// after it up to the next such line are its range samples. Prometheus returns
/// unsorted vectors in map order, so only the set of series is comparable.
fn series_blocks(output: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in output.lines() {
        match blocks.last_mut() {
            Some(block) if !line.contains("=>") => {
                block.push('\n');
                block.push_str(line);
            }
            _ => blocks.push(line.to_owned()),
        }
    }
    blocks.sort();
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_and_keda_requests_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let now = common::now_ms();
    // A request as an agent sends it: samples and metadata.
    let mut req = nunchi_codec::remote_write::WriteRequest::from_series(&[common::series(
        &[("__name__", "feed_requests_total"), ("instance", "web-1")],
        &[(now - 60_000, 10.0), (now - 30_000, 25.0), (now, 40.0)],
    )]);
    req.metadata
        .push(nunchi_codec::remote_write::MetricMetadata {
            r#type: nunchi_codec::remote_write::MetricType::Counter as i32,
            metric_family_name: "feed_requests_total".to_owned(),
            help: "Requests served.".to_owned(),
            unit: String::new(),
        });
    let (code, text) = common::push_body(
        &c.write_url(),
        nunchi_codec::remote_write::encode(&req),
        None,
    )
    .await;
    assert_eq!(code, 204, "{text}");

    // Grafana: build info, metric names, metadata, label names, exemplars.
    let b = api_get(&c.base, "/api/v1/status/buildinfo").await;
    assert_eq!(b["status"], "success");
    assert!(
        b["data"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "{b}"
    );
    let t = (now / 1000).to_string();
    let names = api_get(
        &c.base,
        &format!(
            "/api/v1/label/__name__/values?start={}&end={t}",
            now / 1000 - 3600
        ),
    )
    .await;
    assert_eq!(names["data"], serde_json::json!(["feed_requests_total"]));
    let meta = api_get(&c.base, "/api/v1/metadata").await;
    assert_eq!(
        meta["data"],
        serde_json::json!({"feed_requests_total": [{"type": "counter", "help": "Requests served.", "unit": ""}]})
    );
    let one = api_get(&c.base, "/api/v1/metadata?metric=nothing").await;
    assert_eq!(one["data"], serde_json::json!({}));
    let ex = api_get(
        &c.base,
        &format!(
            "/api/v1/query_exemplars?query=feed_requests_total&start={}&end={t}",
            now / 1000 - 60
        ),
    )
    .await;
    assert_eq!(ex, serde_json::json!({"status": "success", "data": []}));
    let r = client()
        .post(format!("{}/api/v1/query_range", c.base))
        .form(&[
            ("query", "rate(feed_requests_total[1m])"),
            ("start", &(now / 1000 - 60).to_string()),
            ("end", &t),
            ("step", "15"),
        ])
        .send()
        .await
        .expect("post");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["data"]["resultType"], "matrix", "{v}");

    // KEDA: GET /api/v1/query with an RFC 3339 time, one element expected.
    let rfc = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(now as u64),
    );
    let v = api_get(
        &c.base,
        &format!(
            "/api/v1/query?query={}&time={}",
            urlencode("sum(rate(feed_requests_total[1m]))"),
            urlencode(&rfc.to_string())
        ),
    )
    .await;
    let result = v["data"]["result"].as_array().expect("vector");
    assert_eq!(result.len(), 1, "{v}");
    let value: f64 = result[0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("value");
    assert!((value - 0.5).abs() < 1e-9, "{v}");
}

/// A range answer large enough to be written on several cores arrives whole: its declared
/// length is its length, and every point is there, in order, with the value pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_range_answer_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let end = common::now_ms().div_euclid(15_000) * 15_000;
    let start = end - 999 * 15_000;
    let series: Vec<_> = (0..60)
        .map(|s| {
            let samples: Vec<(i64, f64)> = (0..1000)
                .map(|k| (start + k * 15_000, (s * 1000 + k) as f64 / 8.0))
                .collect();
            common::series(&[("__name__", "wide"), ("s", &format!("{s:02}"))], &samples)
        })
        .collect();
    let (code, text) = common::push(&c.write_url(), &series, None).await;
    assert_eq!(code, 204, "{text}");
    let r = client()
        .get(format!(
            "{}/api/v1/query_range?query=wide&start={}&end={}&step=15",
            c.base,
            start / 1000,
            end / 1000
        ))
        .send()
        .await
        .expect("get");
    let declared = r.content_length();
    let body = r.bytes().await.expect("body");
    assert_eq!(declared, Some(body.len() as u64));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let result = v["data"]["result"].as_array().expect("matrix");
    assert_eq!(result.len(), 60, "{}", v["status"]);
    for (s, r) in result.iter().enumerate() {
        assert_eq!(r["metric"]["s"], format!("{s:02}"));
        let values = r["values"].as_array().expect("values");
        assert_eq!(values.len(), 1000);
        for (k, p) in values.iter().enumerate() {
            assert_eq!(p[0].as_i64(), Some((start + k as i64 * 15_000) / 1000));
            let want = ((s * 1000 + k) as f64 / 8.0).to_string();
            assert_eq!(p[1].as_str(), Some(want.as_str()), "series {s}, point {k}");
        }
    }
}

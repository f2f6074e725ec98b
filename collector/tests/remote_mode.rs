//! Remote storage mode against a real VictoriaMetrics (Debian's): the collector keeps no
//! series, forwards what it receives (pushed and scraped), and answers the query, series
//! and label endpoints from VictoriaMetrics; while VictoriaMetrics is down writes get 503
//! (so agents keep and resend them) and nothing acknowledged is lost.

mod common;

use std::time::Duration;

use common::{Collector, api_get, free_port, push, query, start_victoria, urlencode, wait_for};

/// Two counters ending at `end`, their last values 117k and 195k.
fn data(end: i64, k: f64) -> Vec<nunchi_model::Series> {
    let samples = |scale: f64| -> Vec<(i64, f64)> {
        (0..40)
            .map(|i| (end - (39 - i) * 15_000, k * scale * i as f64))
            .collect()
    };
    vec![
        common::series(
            &[
                ("__name__", "feed_requests_total"),
                ("instance", "web-1"),
                ("job", "feed"),
            ],
            &samples(3.0),
        ),
        common::series(
            &[
                ("__name__", "feed_requests_total"),
                ("instance", "web-2"),
                ("job", "feed"),
            ],
            &samples(5.0),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_queries_go_to_victoria_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm_port = free_port();
    let (vm, vm_base) = start_victoria(dir.path(), vm_port).await;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: r\n    rules:\n      - alert: TargetDown\n        expr: up{job=\"self\"} == 0\n",
    )
    .expect("rules");
    let rules = rules.display().to_string();
    let c = Collector::start(
        dir.path(),
        &[
            "--remote-write-url",
            &format!("{vm_base}/api/v1/write"),
            "--remote-query-url",
            &vm_base,
            "--scrape",
            "self=PLACEHOLDER",
            "--rules",
            &rules,
        ]
        .map(|a| a.replace("PLACEHOLDER", "http://127.0.0.1:1/metrics"))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    )
    .await;
    let now = common::now_ms();
    let end = now - 5_000;
    let (code, text) = push(&c.write_url(), &data(end, 1.0), None).await;
    assert_eq!(code, 204, "{text}");

    // The series are in VictoriaMetrics, and the collector answers from there.
    let q = "sum by (instance) (feed_requests_total)";
    let direct = wait_for(Duration::from_secs(30), || async {
        let v = query(&vm_base, q, end).await;
        (v["data"]["result"].as_array()?.len() == 2).then_some(v)
    })
    .await
    .expect("data reached VictoriaMetrics");
    let via = query(&c.base, q, end).await;
    assert_eq!(via["status"], "success", "{via}");
    let by_instance = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["metric"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    r["value"][1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(by_instance(&via), by_instance(&direct));
    assert_eq!(
        by_instance(&via),
        vec![
            ("web-1".to_owned(), "117".to_owned()),
            ("web-2".to_owned(), "195".to_owned())
        ]
    );
    let range = common::query_range(&c.base, "feed_requests_total", end - 300_000, end, 60.0).await;
    assert_eq!(range["data"]["resultType"], "matrix", "{range}");
    assert_eq!(
        range["data"]["result"].as_array().map(Vec::len),
        Some(2),
        "{range}"
    );
    let series = api_get(
        &c.base,
        &format!(
            "/api/v1/series?match[]={}",
            urlencode("feed_requests_total")
        ),
    )
    .await;
    assert_eq!(series["data"].as_array().map(Vec::len), Some(2), "{series}");
    let values = api_get(&c.base, "/api/v1/label/instance/values").await;
    let values = values["data"].as_array().expect("values").clone();
    assert!(
        values.iter().any(|v| v == "web-1") && values.iter().any(|v| v == "web-2"),
        "{values:?}"
    );
    // A query error keeps its Prometheus shape (VictoriaMetrics calls a syntax error an
    // execution error: 422).
    let bad = query(&c.base, "sum(", end).await;
    assert_eq!(bad["status"], "error", "{bad}");
    assert!(
        bad["errorType"] == "bad_data" || bad["errorType"] == "execution",
        "{bad}"
    );

    // Scraped samples are forwarded too (the target is down: `up` is 0).
    let up = wait_for(Duration::from_secs(30), || async {
        let v = query(&vm_base, "up{job=\"self\"}", common::now_ms()).await;
        Some(v["data"]["result"].as_array()?.first()?["value"][1].clone())
    })
    .await
    .expect("scraped up forwarded");
    assert_eq!(up, "0");

    // Rules run the same: evaluated by VictoriaMetrics, alert state kept here.
    let base = c.base.clone();
    let alert = wait_for(Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let a = common::api_get(&base, "/api/v1/alerts").await;
            a["data"]["alerts"].as_array()?.first().cloned()
        }
    })
    .await
    .expect("TargetDown evaluated through VictoriaMetrics");
    assert_eq!(alert["labels"]["alertname"], "TargetDown");
    assert_eq!(alert["state"], "firing");

    // Nothing is stored locally.
    let data_dir = dir.path().join("data");
    assert!(
        !data_dir.join("wal").exists() && !data_dir.join("nunchi.db").exists(),
        "remote mode created local storage"
    );

    // VictoriaMetrics down: writes are refused with 503 (to be resent), queries say
    // unavailable, the collector is not ready.
    drop(vm);
    let later = data(end + 60_000, 2.0);
    let (code, text) = push(&c.write_url(), &later, None).await;
    assert_eq!(code, 503, "{text}");
    let v = query(&c.base, q, end).await;
    assert_eq!(v["errorType"], "unavailable", "{v}");
    let ready = common::http_get(format!("{}/-/ready", c.base))
        .await
        .expect("ready");
    assert_eq!(ready.status().as_u16(), 503);

    // Back up: the resent write lands.
    let (_vm, vm_base) = start_victoria(dir.path(), vm_port).await;
    let (code, text) = push(&c.write_url(), &later, None).await;
    assert_eq!(code, 204, "{text}");
    let got = wait_for(Duration::from_secs(30), || async {
        let v = query(&c.base, "max(feed_requests_total)", end + 60_000).await;
        (v["data"]["result"].as_array()?.first()?["value"][1] == "390").then_some(())
    })
    .await;
    assert!(got.is_some(), "resent write not visible; VM at {vm_base}");
}

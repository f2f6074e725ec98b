//! Query limits and bad queries get Prometheus' error shapes: `bad_data` (400) for a query
//! that does not parse or a bad parameter, `execution` (422) for one that would load too
//! many samples.

mod common;

use common::{Collector, api_get, now_ms, push, series, urlencode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_queries_are_answered_with_prometheus_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[query]\nmax_samples = 50\n").expect("write");
    let c = Collector::start(dir.path(), &["--config", config.to_str().expect("utf8")]).await;
    let t = now_ms();
    let samples: Vec<(i64, f64)> = (0..100)
        .map(|i| (t - 100_000 + i * 1000, i as f64))
        .collect();
    assert_eq!(
        push(
            &c.write_url(),
            &[series(&[("__name__", "many")], &samples)],
            None
        )
        .await
        .0,
        204
    );

    let get = |q: &str| {
        format!(
            "/api/v1/query?query={}&time={}",
            urlencode(q),
            t as f64 / 1000.0
        )
    };
    let ok = api_get(&c.base, &get("count_over_time(many[30s])")).await;
    assert_eq!(ok["data"]["result"][0]["value"][1], "30", "{ok}");

    let resp = common::http_get(format!("{}{}", c.base, get("count_over_time(many[5m])")))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 422);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        (v["status"].as_str(), v["errorType"].as_str()),
        (Some("error"), Some("execution"))
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too many samples"),
        "{v}"
    );

    let resp = common::http_get(format!("{}{}", c.base, get("rate(many[5m]")))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["errorType"], "bad_data");

    let resp = common::http_get(format!(
        "{}/api/v1/query_range?query=many&start=10&end=5&step=1",
        c.base
    ))
    .await
    .expect("get");
    assert_eq!(resp.status().as_u16(), 400);
    let resp = common::http_get(format!("{}/api/v1/query?query=many&time=yesterday", c.base))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 400);
}

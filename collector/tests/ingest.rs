//! remote_write ingest against the real binary: every limit answered with its 4xx and
//! counted, nothing of a refused request stored, the rest of a good request queryable.

mod common;

use common::{Collector, now_ms, push, push_body, query, series};

const TOKEN: &str = "token-of-writer-a";

async fn limited(dir: &std::path::Path) -> Collector {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[tokens]]
name = "a"
token = "{TOKEN}"
max_new_series_per_minute = 5

[limits]
max_body_size = "64KiB"
max_decompressed_size = "256KiB"
max_labels_per_series = 5
max_label_name_length = 20
max_label_value_length = 30
"#
        ),
    )
    .expect("write config");
    Collector::start(dir, &["--config", config.to_str().expect("utf8")]).await
}

fn count_all(v: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = v["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|r| {
            r["metric"]["__name__"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_answered_with_its_4xx_and_nothing_refused_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = limited(dir.path()).await;
    let url = c.write_url();
    let t = now_ms();
    let ok = [series(
        &[("__name__", "accepted"), ("job", "x")],
        &[(t, 1.0)],
    )];

    assert_eq!(push(&url, &ok, None).await.0, 401);
    assert_eq!(push(&url, &ok, Some("wrong-token-123")).await.0, 401);
    assert_eq!(push(&url, &ok, Some(TOKEN)).await.0, 204);

    let (code, text) = push_body(&url, vec![7u8; 100 * 1024], Some(TOKEN)).await;
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("max_body_size"), "{text}");

    // A snappy header that declares a 256 MiB payload: refused before decompressing.
    let bomb = vec![0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0];
    let (code, text) = push_body(&url, bomb, Some(TOKEN)).await;
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("decompressed"), "{text}");

    let (code, text) = push_body(&url, b"not snappy at all".to_vec(), Some(TOKEN)).await;
    assert_eq!(code, 400, "{text}");

    let many = [series(
        &[
            ("__name__", "too_many"),
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("e", "1"),
        ],
        &[(t, 1.0)],
    )];
    let (code, text) = push(&url, &many, Some(TOKEN)).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("max_labels_per_series"), "{text}");

    let long_name = [series(
        &[
            ("__name__", "long_name"),
            ("a_very_long_label_name_indeed", "1"),
        ],
        &[(t, 1.0)],
    )];
    let (code, text) = push(&url, &long_name, Some(TOKEN)).await;
    assert_eq!(
        (code, text.contains("max_label_name_length")),
        (400, true),
        "{text}"
    );

    let long_value = [series(
        &[("__name__", "long_value"), ("a", &"v".repeat(31))],
        &[(t, 1.0)],
    )];
    let (code, text) = push(&url, &long_value, Some(TOKEN)).await;
    assert_eq!(
        (code, text.contains("max_label_value_length")),
        (400, true),
        "{text}"
    );

    // One good series and one bad one in the same request: neither is stored.
    let mixed = [
        series(&[("__name__", "mixed_good")], &[(t, 1.0)]),
        series(
            &[("__name__", "mixed_bad"), ("a", &"v".repeat(31))],
            &[(t, 1.0)],
        ),
    ];
    assert_eq!(push(&url, &mixed, Some(TOKEN)).await.0, 400);

    // The budget is 5 new series a minute; one is spent. Five more are refused whole,
    // with Retry-After, and four fit.
    let five: Vec<_> = (0..5)
        .map(|i| {
            series(
                &[("__name__", "budget"), ("i", &i.to_string())],
                &[(t, 1.0)],
            )
        })
        .collect();
    let resp = common::client()
        .post(&url)
        .bearer_auth(TOKEN)
        .body(nunchi_codec::remote_write::encode(
            &nunchi_codec::remote_write::WriteRequest::from_series(&five),
        ))
        .send()
        .await
        .expect("push");
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(push(&url, &five[..4], Some(TOKEN)).await.0, 204);
    // Samples for existing series cost nothing.
    let later: Vec<_> = (0..4)
        .map(|i| {
            series(
                &[("__name__", "budget"), ("i", &i.to_string())],
                &[(t + 1000, 2.0)],
            )
        })
        .collect();
    assert_eq!(push(&url, &later, Some(TOKEN)).await.0, 204);

    let stored = count_all(&query(&c.base, r#"{__name__=~".+"}"#, t).await);
    assert_eq!(stored, ["accepted", "budget", "budget", "budget", "budget"]);

    for (reason, n) in [
        ("unauthorized", 2.0),
        ("body_too_large", 1.0),
        ("decompressed_too_large", 1.0),
        ("malformed", 1.0),
        ("label_limits", 4.0),
        ("series_limit", 1.0),
    ] {
        let got = c
            .metric(
                "nunchi_ingest_rejected_requests_total",
                Some(("reason", reason)),
            )
            .await;
        assert_eq!(got, n, "rejections for {reason}");
    }
    assert_eq!(
        c.metric("nunchi_ingest_samples_total", Some(("token", "a")))
            .await,
        9.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_samples_within_the_window_are_kept_and_older_ones_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &["--out-of-order-window", "1m"]).await;
    let url = c.write_url();
    let t = now_ms();
    let name = [("__name__", "ooo")];
    assert_eq!(push(&url, &[series(&name, &[(t, 3.0)])], None).await.0, 204);
    // Another writer's older sample, within the window.
    assert_eq!(
        push(&url, &[series(&name, &[(t - 30_000, 2.0)])], None)
            .await
            .0,
        204
    );
    // A retry of the same sample is harmless.
    assert_eq!(
        push(&url, &[series(&name, &[(t - 30_000, 2.0)])], None)
            .await
            .0,
        204
    );
    // Too old: refused and said so; the good sample in the same request is kept.
    let (code, text) = push(
        &url,
        &[series(&name, &[(t - 120_000, 1.0), (t + 1000, 4.0)])],
        None,
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("out-of-order window"), "{text}");
    let v = query(&c.base, "ooo[5m]", t + 1000).await;
    let values: Vec<&str> = v["data"]["result"][0]["values"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|p| p[1].as_str().unwrap_or_default())
        .collect();
    assert_eq!(values, ["2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_cannot_push_are_scraped_with_prometheus_semantics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            "# TYPE jobs_done_total counter\njobs_done_total{queue=\"mail\"} 42\n"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let down = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let scrape = format!("batch=http://{target}/metrics,gone=http://127.0.0.1:{down}/metrics");
    let c = Collector::start(
        dir.path(),
        &["--scrape", &scrape, "--scrape-interval", "200ms"],
    )
    .await;
    let base = c.base.clone();
    let got = common::wait_for(std::time::Duration::from_secs(20), || async {
        let v = query(&base, "jobs_done_total", now_ms()).await;
        Some(v["data"]["result"].as_array()?.first()?.clone())
    })
    .await
    .expect("scraped series");
    assert_eq!(got["metric"]["job"], "batch");
    assert_eq!(got["metric"]["instance"], target.to_string());
    assert_eq!(got["metric"]["queue"], "mail");
    assert_eq!(got["value"][1], "42");
    let up = query(&base, "up", now_ms()).await;
    let mut ups: Vec<(String, String)> = up["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap_or_default().to_owned(),
                r["value"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ups.sort();
    assert_eq!(
        ups,
        [
            ("batch".to_owned(), "1".to_owned()),
            ("gone".to_owned(), "0".to_owned())
        ]
    );
    let duration = query(&base, "scrape_duration_seconds{job=\"batch\"}", now_ms()).await;
    assert_eq!(duration["data"]["result"].as_array().map(Vec::len), Some(1));
}

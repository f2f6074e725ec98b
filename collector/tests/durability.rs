//! What the storage promises across crashes and time: every acknowledged sample survives
//! `kill -9`, data survives flushes and restarts, compaction keeps every sample, and
//! retention deletes old data.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Collector, api_get, now_ms, push, query, series, wait_for};

/// The `(t, v)` points of the single series a range-vector query returns.
async fn points(base: &str, q: &str, t: i64) -> Vec<(i64, f64)> {
    let v = query(base, q, t).await;
    let Some(values) = v["data"]["result"][0]["values"].as_array() else {
        return Vec::new();
    };
    values
        .iter()
        .map(|p| {
            let t = (p[0].as_f64().expect("time") * 1000.0).round() as i64;
            let v: f64 = p[1].as_str().expect("value").parse().expect("number");
            (t, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Collector::start(dir.path(), &[]).await;
    let url = c.write_url();
    let base_t = now_ms() - 60_000;
    let acked: Arc<Mutex<Vec<(i64, f64)>>> = Arc::default();
    let pusher = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..100_000i64 {
                // Ten samples per request, one per 10 ms of sample time.
                let samples: Vec<(i64, f64)> = (0..10)
                    .map(|j| (base_t + (i * 10 + j) * 10, (i * 10 + j) as f64))
                    .collect();
                let (code, _) = push(
                    &url,
                    &[series(&[("__name__", "durable"), ("w", "1")], &samples)],
                    None,
                )
                .await;
                if code != 204 {
                    break;
                }
                acked.lock().expect("lock").extend(samples);
            }
        })
    };
    wait_for(Duration::from_secs(30), || async {
        (acked.lock().expect("lock").len() >= 2_000).then_some(())
    })
    .await
    .expect("pushes acknowledged");
    c.kill9();
    pusher.await.expect("pusher");
    let acked = acked.lock().expect("lock").clone();
    c.restart().await;
    let q_at = acked.last().expect("some").0;
    let got = points(&c.base, "durable[5m]", q_at).await;
    let missing: Vec<_> = acked.iter().filter(|p| !got.contains(p)).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged, {} back; missing e.g. {missing:?}",
        acked.len(),
        got.len()
    );

    // A clean stop flushes to the database and empties the write-ahead log; the data is
    // still all there after another start, and after compaction.
    c.terminate();
    c.restart().await;
    assert_eq!(points(&c.base, "durable[5m]", q_at).await, got);
    let compacted = common::client()
        .post(format!("{}/api/v1/admin/compact", c.base))
        .send()
        .await
        .expect("compact");
    assert!(compacted.status().is_success());
    assert_eq!(points(&c.base, "durable[5m]", q_at).await, got);
    c.kill9();
    c.restart().await;
    assert_eq!(points(&c.base, "durable[5m]", q_at).await, got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(
        dir.path(),
        &["--retention", "3s", "--flush-interval", "200ms"],
    )
    .await;
    let t = now_ms();
    let s = [series(
        &[("__name__", "short_lived")],
        &[(t - 1000, 1.0), (t, 2.0)],
    )];
    assert_eq!(push(&c.write_url(), &s, None).await.0, 204);
    assert_eq!(points(&c.base, "short_lived[1m]", t).await.len(), 2);
    // After the retention period the samples, then the series, are deleted from storage.
    let gone = wait_for(Duration::from_secs(30), || async {
        let status = api_get(&c.base, "/api/v1/status/storage").await;
        (status["data"]["series"] == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "series still stored; log:\n{}",
        c.log_text()
    );
    assert!(points(&c.base, "short_lived[1m]", t).await.is_empty());
    let labels = api_get(&c.base, "/api/v1/labels").await;
    assert_eq!(labels["data"], serde_json::json!([]));
    assert!(
        c.metric("nunchi_storage_retention_deleted_chunks_total", None)
            .await
            >= 1.0
    );
}

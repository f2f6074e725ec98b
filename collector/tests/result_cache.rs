//! The range query result cache gives the same answers as computing every step: a window
//! that moves on step by step (a refreshing dashboard) reuses its older steps, a late write
//! of old samples is seen at once, and queries whose steps depend on the query's own range
//! (`@ end()`) are never served from it.

mod common;

use common::{Collector, api_get, now_ms, push, series, urlencode};
use nunchi_model::Series;

const STEP_MS: i64 = 60_000;

/// Counters and gauges of 6 instances over the last 3 hours, 15 s apart.
fn data(end: i64) -> Vec<Series> {
    let mut out = Vec::new();
    for i in 0..6 {
        let instance = format!("host-{i}:9100");
        for mode in ["user", "system"] {
            let samples: Vec<(i64, f64)> = (0..720)
                .map(|k| {
                    let t = end - 3 * 3_600_000 + k * 15_000;
                    // A counter reset half-way for one instance.
                    let base = if i == 2 && k >= 360 { 0 } else { k };
                    (t, (base * (i + 1) * 3 + k % 7) as f64)
                })
                .collect();
            out.push(series(
                &[
                    ("__name__", "cpu_seconds_total"),
                    ("instance", &instance),
                    ("mode", mode),
                ],
                &samples,
            ));
        }
        let samples: Vec<(i64, f64)> = (0..720)
            .map(|k| {
                (
                    end - 3 * 3_600_000 + k * 15_000,
                    ((k * 37 + i) % 101) as f64,
                )
            })
            .collect();
        out.push(series(
            &[("__name__", "load1"), ("instance", &instance)],
            &samples,
        ));
    }
    out
}

fn range_path(q: &str, start: i64, end: i64, nocache: bool) -> String {
    format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60{}",
        urlencode(q),
        start / 1000,
        end / 1000,
        if nocache { "&nocache=1" } else { "" }
    )
}

const QUERIES: [&str; 6] = [
    "sum by (instance) (rate(cpu_seconds_total[5m]))",
    "rate(cpu_seconds_total[5m])",
    "load1 > 50",
    "max_over_time(rate(cpu_seconds_total{mode=\"user\"}[5m])[10m:1m])",
    "sum by (instance) (rate(cpu_seconds_total[5m])) / on (instance) load1",
    "avg(load1 offset 10m)",
];

/// Asks every query for a 2 h window ending at `end`, cached and computed in full, and
/// checks the answers are the same and not empty.
async fn same_answers(c: &Collector, end: i64) {
    for q in QUERIES {
        let cached = api_get(&c.base, &range_path(q, end - 7_200_000, end, false)).await;
        let full = api_get(&c.base, &range_path(q, end - 7_200_000, end, true)).await;
        assert_eq!(cached["status"], "success", "{q}: {cached}");
        assert!(
            full["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{q}: {full}"
        );
        assert_eq!(
            cached["data"], full["data"],
            "{q} up to {end}: cached and computed answers differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_range_answers_equal_computed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let data_end = now_ms().div_euclid(STEP_MS) * STEP_MS - STEP_MS;
    let (status, body) = push(&c.write_url(), &data(data_end), None).await;
    assert_eq!(status, 204, "{body}");

    // A dashboard refreshing every minute: the window moves on by one step each time, and
    // its newest steps reach into the last 5 minutes (computed every time, never kept).
    // The first window is asked twice: computed, then served whole.
    let first = data_end - 40 * STEP_MS;
    same_answers(&c, first).await;
    for k in 0..=40 {
        same_answers(&c, first + k * STEP_MS).await;
    }
    let lookups = |r: &'static str| {
        c.metric(
            "nunchi_query_result_cache_lookups_total",
            Some(("result", r)),
        )
    };
    assert!(lookups("partial").await > 0.0, "no partial hits");
    assert!(lookups("hit").await > 0.0, "no whole hits");
    assert!(lookups("miss").await > 0.0, "no misses");
    assert!(c.metric("nunchi_query_result_cache_bytes", None).await > 0.0);

    // A series arrives late, with samples back in the kept steps: the next answers have it.
    let late_end = first + 20 * STEP_MS;
    let late: Vec<(i64, f64)> = (0..240)
        .map(|k| (late_end - 3_600_000 + k * 15_000, (k * 5) as f64))
        .collect();
    let (status, body) = push(
        &c.write_url(),
        &[
            series(
                &[
                    ("__name__", "cpu_seconds_total"),
                    ("instance", "late-host:9100"),
                    ("mode", "user"),
                ],
                &late,
            ),
            series(
                &[("__name__", "load1"), ("instance", "late-host:9100")],
                &late,
            ),
        ],
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(
        c.metric(
            "nunchi_query_result_cache_invalidations_total",
            Some(("reason", "late_write"))
        )
        .await
            >= 1.0
    );
    same_answers(&c, late_end).await;
    let v = api_get(
        &c.base,
        &range_path(QUERIES[0], late_end - 7_200_000, late_end, false),
    )
    .await;
    assert!(
        v["data"]["result"].as_array().is_some_and(|r| r
            .iter()
            .any(|s| s["metric"]["instance"] == "late-host:9100")),
        "the late series is missing: {v}"
    );

    // Steps pinned to the query's own end are never reused across windows.
    let uncacheable = lookups("uncacheable").await;
    let pinned = "rate(cpu_seconds_total{instance=\"host-1:9100\",mode=\"user\"}[5m] @ end())";
    for k in [30, 31] {
        let end = first + k * STEP_MS;
        let cached = api_get(&c.base, &range_path(pinned, end - 7_200_000, end, false)).await;
        let full = api_get(&c.base, &range_path(pinned, end - 7_200_000, end, true)).await;
        assert_eq!(cached["data"], full["data"], "{pinned}");
    }
    assert!(lookups("uncacheable").await >= uncacheable + 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_size_zero_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[query]\nresult_cache_size = \"0\"\n").expect("write");
    let c = Collector::start(dir.path(), &["--config", config.to_str().expect("utf8")]).await;
    let data_end = now_ms().div_euclid(STEP_MS) * STEP_MS - 30 * STEP_MS;
    let (status, body) = push(&c.write_url(), &data(data_end), None).await;
    assert_eq!(status, 204, "{body}");
    for _ in 0..2 {
        let v = api_get(
            &c.base,
            &range_path(QUERIES[0], data_end - 7_200_000, data_end, false),
        )
        .await;
        assert_eq!(v["status"], "success", "{v}");
    }
    let lookups = |r: &'static str| {
        c.metric(
            "nunchi_query_result_cache_lookups_total",
            Some(("result", r)),
        )
    };
    assert_eq!(lookups("uncacheable").await, 2.0);
    assert_eq!(lookups("hit").await + lookups("partial").await, 0.0);
}

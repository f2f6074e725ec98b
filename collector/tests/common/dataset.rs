//! The data set the differential tests load into the collector and into a real
//! Prometheus alike.

use nunchi_model::Series;

use super::{Collector, push, series};

/// 40 minutes of data at 15 s: counters (one with a reset), gauges, a classic histogram,
/// an info metric, a series that ends with a staleness marker, one that just stops, a
/// sparse series and an `up` that drops.
pub fn dataset(end: i64) -> Vec<Series> {
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
        out.push(series(
            &[
                ("__name__", "node_uname_info"),
                ("job", "node"),
                ("instance", inst),
                ("nodename", &format!("host-{inst}")),
            ],
            &times.iter().map(|&t| (t, 1.0)).collect::<Vec<_>>(),
        ));
        // A classic histogram: cumulative bucket counters, one more bucket filling
        // as the instance number grows.
        let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
        let mut counts = [0.0f64; 6];
        let mut buckets: Vec<Vec<(i64, f64)>> = vec![Vec::new(); bounds.len()];
        for (k, &t) in times.iter().enumerate() {
            let mut cumulative = 0.0;
            for (b, count) in counts.iter_mut().enumerate() {
                cumulative +=
                    ((k * (b + 1) + ii * 5) % 7) as f64 + (b == ii + 1) as u8 as f64 * 4.0;
                *count += cumulative;
                buckets[b].push((t, *count));
            }
        }
        for (b, le) in bounds.iter().enumerate() {
            out.push(series(
                &[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("job", "api"),
                    ("instance", inst),
                    ("le", le),
                ],
                &buckets[b],
            ));
        }
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
    // Stops without a staleness marker: gone from instant queries 5 minutes later.
    let stopped: Vec<(i64, f64)> = times[..times.len() * 2 / 3]
        .iter()
        .enumerate()
        .map(|(k, &t)| (t, k as f64))
        .collect();
    out.push(series(
        &[("__name__", "stopped_gauge"), ("job", "batch")],
        &stopped,
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

/// Loads [`dataset`] into the collector and into the Prometheus at `prom` (started with
/// the remote-write receiver); returns the data's end, a whole minute, so query times
/// line up with samples in both.
pub async fn load_both(c: &Collector, prom: &str) -> i64 {
    let end = (super::now_ms() / 60_000 - 1) * 60_000;
    for s in &dataset(end) {
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
    end
}

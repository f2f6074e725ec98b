//! The HTTP API's answers, status code by status code, from the axum router in process:
//! no socket and no collector binary. Each test builds the same router `run` serves, over
//! the embedded store in a temporary directory, from a collector configuration.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use nunchi_codec::remote_write::{WriteRequest, encode};
use nunchi_collector::api::{self, AppState};
use nunchi_collector::config::CollectorConfig;
use nunchi_collector::ingest::remote_write::Ingest;
use nunchi_collector::query::cache::CacheOptions;
use nunchi_collector::query::gate::QueryGate;
use nunchi_collector::storage::Storage;
use nunchi_collector::store::LocalStore;
use nunchi_collector::{query_limits, storage_options};
use nunchi_model::{Label, Labels, Series};
use prometheus::Registry;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "router-test-token";

/// The router over a fresh store, configured by `extra` TOML (a `[[tokens]]` entry for
/// [`TOKEN`] is always there).
async fn router(extra: &str) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "data_dir = {:?}\n{extra}\n[[tokens]]\nname = \"agents\"\ntoken = \"{TOKEN}\"\n",
        dir.path().display().to_string(),
    );
    let config = CollectorConfig::from_toml(&text, Path::new("router.toml")).expect("config");
    let registry = Registry::new();
    let storage = Storage::open(storage_options(&config), &registry)
        .await
        .expect("storage");
    let store = LocalStore::new(
        storage,
        CacheOptions {
            max_bytes: config.query.result_cache_size.as_u64(),
            fresh_window: config.query.result_cache_fresh_window,
        },
        QueryGate::new(config.query.max_concurrency),
        &registry,
    )
    .expect("store");
    let ingest =
        Ingest::new(config.limits.clone(), config.tokens.clone(), &registry).expect("ingest");
    let state = Arc::new(AppState {
        backend: Arc::new(store),
        ingest,
        limits: query_limits(&config),
        registry,
        alerting: None,
    });
    (api::app(state), dir)
}

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    let mut l = vec![Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    l.extend(labels.iter().map(|(n, v)| Label {
        name: (*n).into(),
        value: (*v).into(),
    }));
    l.sort_by(|a, b| a.name.cmp(&b.name));
    let mut s = Series::single(Labels::from_sorted(l), samples[0].0, samples[0].1);
    for &(t, v) in &samples[1..] {
        s.samples.push(nunchi_model::Sample {
            timestamp_ms: t,
            value: v,
        });
    }
    s
}

fn body_of(series: &[Series]) -> Vec<u8> {
    encode(&WriteRequest::from_series(series))
}

fn write_request(body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/write")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(Body::from(body))
        .expect("request")
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A Prometheus error envelope of `kind`.
    fn assert_error(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let j = self.json();
        assert_eq!(j["status"], "error", "{j}");
        assert_eq!(j["errorType"], kind, "{j}");
        assert!(!j["error"].as_str().unwrap_or("").is_empty(), "{j}");
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

fn now_ms() -> i64 {
    nunchi_model::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_unknown_paths() {
    let (app, _dir) = router("").await;
    let a = get(&app, "/-/healthy").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains("healthy"));
    assert_eq!(get(&app, "/-/ready").await.status, StatusCode::OK);
    let m = get(&app, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text().contains("nunchi_storage_head_samples"),
        "{}",
        m.text()
    );
    assert_eq!(
        get(&app, "/api/v1/nothing").await.status,
        StatusCode::NOT_FOUND
    );
    let a = send(
        &app,
        Request::delete("/api/v1/query")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let b = get(&app, "/api/v1/status/buildinfo").await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.json()["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_write_is_answered_by_every_read_endpoint() {
    let (app, _dir) = router("").await;
    let t = now_ms();
    let s = series(
        "router_up",
        &[("job", "node")],
        &[(t - 1000, 1.0), (t, 2.0)],
    );
    let a = send(&app, write_request(body_of(&[s]))).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());

    let q = get(
        &app,
        &format!("/api/v1/query?query=router_up&time={}", t as f64 / 1000.0),
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    let j = q.json();
    assert_eq!(j["data"]["resultType"], "vector");
    assert_eq!(j["data"]["result"][0]["metric"]["job"], "node");
    assert_eq!(j["data"]["result"][0]["value"][1], "2");

    // The same query as a form POST, as Grafana sends it.
    let form = send(
        &app,
        Request::post("/api/v1/query")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "query=router_up&time={}",
                t as f64 / 1000.0
            )))
            .expect("request"),
    )
    .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text());
    assert_eq!(form.json()["data"], j["data"]);

    let r = get(
        &app,
        &format!(
            "/api/v1/query_range?query=router_up&start={}&end={}&step=1",
            (t - 1000) as f64 / 1000.0,
            t as f64 / 1000.0
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["data"]["resultType"], "matrix");

    let l = get(&app, "/api/v1/labels").await;
    assert_eq!(l.status, StatusCode::OK);
    let names = l.json()["data"].clone();
    assert!(
        names
            .as_array()
            .is_some_and(|n| n.contains(&Value::from("job"))),
        "{names}"
    );
    let v = get(&app, "/api/v1/label/job/values").await;
    assert_eq!(v.json()["data"], serde_json::json!(["node"]));
    let s = get(&app, "/api/v1/series?match[]=router_up").await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["data"][0]["job"], "node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_carry_their_status_and_store_nothing() {
    let (app, _dir) = router(
        "[limits]\nmax_body_size = \"4KiB\"\nmax_decompressed_size = \"64KiB\"\nmax_new_series_per_minute = 5\n",
    )
    .await;
    let t = now_ms();
    let one = body_of(&[series("refused_total", &[], &[(t, 1.0)])]);

    // 401: no token, and a wrong one.
    let mut req = write_request(one.clone());
    req.headers_mut().remove(header::AUTHORIZATION);
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);
    let mut req = write_request(one.clone());
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer not-the-token".parse().expect("header"),
    );
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);

    // 415: a type this receiver does not take, so the sender can fall back.
    let mut req = write_request(one.clone());
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("header"),
    );
    assert_eq!(
        send(&app, req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    // 400: a body that is not snappy, and a label name given twice.
    let a = send(&app, write_request(b"not snappy at all".to_vec())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(!a.text().trim().is_empty());
    let dup = WriteRequest {
        timeseries: vec![nunchi_codec::remote_write::TimeSeries {
            labels: vec![
                nunchi_codec::remote_write::Label {
                    name: "__name__".into(),
                    value: "dup".into(),
                },
                nunchi_codec::remote_write::Label {
                    name: "a".into(),
                    value: "1".into(),
                },
                nunchi_codec::remote_write::Label {
                    name: "a".into(),
                    value: "2".into(),
                },
            ],
            samples: vec![nunchi_codec::remote_write::Sample {
                value: 1.0,
                timestamp: t,
            }],
        }],
        ..Default::default()
    };
    let a = send(&app, write_request(encode(&dup))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.text().contains("label \"a\" is given more than once"),
        "{}",
        a.text()
    );

    // 413: a body over limits.max_body_size.
    let big: Vec<Series> = (0..400)
        .map(|i| {
            series(
                "big_series_name_to_fill_the_body",
                // Values that do not compress, so the body is over the limit.
                &[(
                    "i",
                    &format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                )],
                &[(t, 1.0)],
            )
        })
        .collect();
    let body = body_of(&big);
    assert!(body.len() > 4096, "{}", body.len());
    let a = send(&app, write_request(body)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
    assert!(a.text().contains("limits.max_body_size"), "{}", a.text());

    // 429 with Retry-After: more new series than the writer's budget.
    let many: Vec<Series> = (0..10)
        .map(|i| series("budget", &[("i", &i.to_string())], &[(t, 1.0)]))
        .collect();
    let a = send(&app, write_request(body_of(&many))).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");

    // Nothing of the refused requests was stored.
    let q = get(
        &app,
        &format!(
            "/api/v1/query?query={}",
            nunchi_testkit::urlencode(r#"count({__name__=~"budget|dup|big.*|refused_total"})"#)
        ),
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    assert_eq!(q.json()["data"]["result"], serde_json::json!([]));

    // A request within the budget is still taken.
    let a = send(&app, write_request(one)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_bad_data_and_heavy_ones_execution_errors() {
    let (app, _dir) = router("[query]\nmax_samples = 10\n").await;
    let t = now_ms();
    let points: Vec<(i64, f64)> = (0..30).map(|i| (t - 29_000 + i * 1000, i as f64)).collect();
    let a = send(
        &app,
        write_request(body_of(&[series("heavy", &[], &points)])),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());

    for uri in [
        "/api/v1/query?query=sum(",
        "/api/v1/query",
        "/api/v1/query?query=up&time=yesterday",
        "/api/v1/query?query=up&timeout=soon",
        "/api/v1/query_range?query=up&start=10&end=20",
        "/api/v1/query_range?query=up&start=10&end=20&step=0",
        "/api/v1/query_range?query=up&start=20&end=10&step=1",
        "/api/v1/query_range?query=up&start=0&end=100000&step=1",
        "/api/v1/label/0bad/values",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.text());
        a.assert_error(StatusCode::BAD_REQUEST, "bad_data");
    }

    let a = get(
        &app,
        &format!(
            "/api/v1/query?query=count_over_time(heavy[1m])&time={}",
            t as f64 / 1000.0
        ),
    )
    .await;
    a.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "execution");
    assert!(
        a.json()["error"].as_str().unwrap_or("").contains("sample"),
        "{}",
        a.text()
    );
}

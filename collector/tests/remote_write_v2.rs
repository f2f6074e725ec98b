//! remote_write 2.0 against the real binary, with bodies built by Google's protobuf
//! runtime and python-snappy (Debian's `python3-protobuf`, `python3-snappy`, and `protoc`
//! from `protobuf-compiler` compiling the messages in `tests/data/remote_write_v2.proto`):
//! every float sample stored, the `*-Written` headers answered, metadata kept; histograms
//! refused with 415 and nothing of their request stored; bad references, duplicate label
//! names (1.0 too) and unknown content types refused with the statuses Prometheus uses.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Collector, api_get, now_ms, push, query, require, series};
use serde_json::json;

const V2_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// A 2.0 body for `spec` (see `tests/data/remote_write_v2_encode.py`).
fn encode_v2(dir: &std::path::Path, spec: &serde_json::Value) -> Vec<u8> {
    let protoc = require("protoc", "protobuf-compiler");
    let python = require("python3", "python3-protobuf python3-snappy");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let out = dir.join("generated");
    std::fs::create_dir_all(&out).expect("mkdir");
    let st = Command::new(protoc)
        .arg(format!("-I{data}"))
        .arg(format!("--python_out={}", out.display()))
        .arg("remote_write_v2.proto")
        .status()
        .expect("run protoc");
    assert!(st.success(), "protoc failed");
    let mut child = Command::new(python)
        .arg(format!("{data}/remote_write_v2_encode.py"))
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the encoder");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("write spec");
    let o = child.wait_with_output().expect("encoder output");
    assert!(
        o.status.success(),
        "encoder failed (apt-get install python3-protobuf python3-snappy): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// POSTs `body` as `content_type`; returns the status, the three `*-Written` headers and
/// the body text.
async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, [Option<i64>; 3], String) {
    let r = common::client()
        .post(url)
        .header("Content-Type", content_type)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .await
        .expect("post");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let written = [
        h("X-Prometheus-Remote-Write-Samples-Written"),
        h("X-Prometheus-Remote-Write-Histograms-Written"),
        h("X-Prometheus-Remote-Write-Exemplars-Written"),
    ];
    (
        r.status().as_u16(),
        written,
        r.text().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_requests_are_stored_or_refused_as_the_specification_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let t = now_ms() - 60_000;
    let spec = json!([
        {"labels": {"__name__": "v2_requests_total", "job": "api", "code": "200"},
         "samples": [[t, 1.0], [t + 15000, 2.0], [t + 30000, 3.0]],
         "type": "counter", "help": "Requests served.", "start": t - 60000,
         "exemplars": [[t + 30000, 1.0, {"trace_id": "abc123"}]]},
        {"labels": {"__name__": "v2_temperature_celsius", "job": "api"},
         "samples": [[t, 20.5], [t + 15000, 21.0], [t + 30000, 21.5]],
         "type": "gauge", "help": "Temperature.", "unit": "celsius"}
    ]);
    let (status, written, text) = post(&c.write_url(), V2_TYPE, encode_v2(dir.path(), &spec)).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(written, [Some(6), Some(0), Some(0)]);
    let at = t + 30_000;
    for (q, want) in [
        ("count_over_time(v2_requests_total[1m])", "3"),
        ("sum_over_time(v2_temperature_celsius[1m])", "63"),
        ("v2_requests_total{code=\"200\",job=\"api\"}", "3"),
    ] {
        let v = query(&c.base, q, at).await;
        assert_eq!(v["data"]["result"][0]["value"][1], want, "{q}: {v}");
    }
    let meta = api_get(&c.base, "/api/v1/metadata?metric=v2_temperature_celsius").await;
    let m = &meta["data"]["v2_temperature_celsius"][0];
    assert_eq!(
        (m["type"].as_str(), m["help"].as_str(), m["unit"].as_str()),
        (Some("gauge"), Some("Temperature."), Some("celsius")),
        "{meta}"
    );

    // Native histograms: 415, so the sender falls back; nothing of the request is kept.
    let spec = json!([
        {"labels": {"__name__": "v2_with_histogram_floats"}, "samples": [[t, 1.0]]},
        {"labels": {"__name__": "v2_latency_seconds"}, "histograms": [[t, 10, 2.5]]}
    ]);
    let (status, written, text) = post(&c.write_url(), V2_TYPE, encode_v2(dir.path(), &spec)).await;
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("native histograms"), "{text}");
    assert_eq!(written, [Some(0), Some(0), Some(0)]);
    let v = query(&c.base, "v2_with_histogram_floats", t).await;
    assert_eq!(v["data"]["result"], json!([]), "{v}");

    // A label given twice in one series: 400 naming the series, nothing stored.
    let spec = json!([{"labels": {"__name__": "v2_dup", "a": "1"}, "extra_labels": [["a", "2"]],
                       "samples": [[t, 1.0]]}]);
    let (status, written, text) = post(&c.write_url(), V2_TYPE, encode_v2(dir.path(), &spec)).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"v2_dup\"") && text.contains("more than once"),
        "{text}"
    );
    assert_eq!(written[0], Some(0));
    let v = query(&c.base, "v2_dup", t).await;
    assert_eq!(v["data"]["result"], json!([]), "{v}");

    // A reference outside the symbols table: 400.
    let spec = json!([{"labels": {"__name__": "v2_bad"}, "bad_ref": 99, "samples": [[t, 1.0]]}]);
    let (status, written, text) = post(&c.write_url(), V2_TYPE, encode_v2(dir.path(), &spec)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("outside of the symbols table"), "{text}");
    assert_eq!(written[0], Some(0));

    // Types and encodings this receiver does not take: 415.
    let (status, _, text) = post(
        &c.write_url(),
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        vec![0],
    )
    .await;
    assert_eq!(status, 415, "{text}");
    let r = common::client()
        .post(c.write_url())
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(vec![0u8])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);

    // 1.0 with a label name given twice: 400 naming the series, neither value stored.
    let mut req = nunchi_codec::remote_write::WriteRequest::from_series(&[series(
        &[("__name__", "v1_dup"), ("a", "1")],
        &[(t, 1.0)],
    )]);
    req.timeseries[0]
        .labels
        .push(nunchi_codec::remote_write::Label {
            name: "a".to_owned(),
            value: "2".to_owned(),
        });
    let (status, text) = common::push_body(
        &c.write_url(),
        nunchi_codec::remote_write::encode(&req),
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"v1_dup\"") && text.contains("\"a\""),
        "{text}"
    );
    let v = query(&c.base, "v1_dup", t).await;
    assert_eq!(v["data"]["result"], json!([]), "{v}");

    // 1.0 still works beside it.
    let (status, _) = push(
        &c.write_url(),
        &[series(&[("__name__", "v1_after")], &[(t, 7.0)])],
        None,
    )
    .await;
    assert_eq!(status, 204);
}

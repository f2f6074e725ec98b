//! Hot paths of the wire formats: exposition parse, remote_write encode and decode.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use nunchi_codec::{exposition, remote_write};
use std::hint::black_box;

const NODE_EXPORTER: &str = include_str!("../testdata/node_exporter.txt");

fn benches(c: &mut Criterion) {
    c.bench_function("exposition_parse_node_exporter", |b| {
        b.iter(|| exposition::parse(black_box(NODE_EXPORTER), 0).map(|e| e.series.len()))
    });
    let series = exposition::parse(NODE_EXPORTER, 1_700_000_000_000)
        .map(|e| e.series)
        .unwrap_or_default();
    let req = remote_write::WriteRequest::from_series(&series);
    c.bench_function("remote_write_encode_node_exporter", |b| {
        b.iter(|| remote_write::encode(black_box(&req)).len())
    });
    let body = remote_write::encode(&req);
    c.bench_function("remote_write_decode_node_exporter", |b| {
        b.iter(|| remote_write::decode(black_box(&body), 64 << 20).map(|r| r.timeseries.len()))
    });
}

criterion_group!(codec, benches);
criterion_main!(codec);

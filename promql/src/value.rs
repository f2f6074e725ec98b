//! Values PromQL expressions evaluate to, and their Prometheus HTTP API JSON form.

use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME};
use rayon::prelude::*;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

pub use nunchi_model::number::{Formatted, format_value, push_value};

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Its labels (shared: most elements carry their series' set unchanged).
    pub labels: Arc<Labels>,
    /// Its value.
    pub value: f64,
}

/// The value of an expression at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string.
    String(String),
    /// Labelled numbers.
    Vector(Vec<Element>),
}

impl Value {
    /// The name of the type, as Prometheus' errors spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
        }
    }
}

/// Labels without `__name__`.
pub fn drop_name(l: &Labels) -> Labels {
    let mut l = l.clone();
    l.remove(METRIC_NAME);
    l
}

/// A query's answer, in the shapes of `/api/v1/query` and `/api/v1/query_range`.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// Instant query: a scalar at a time.
    Scalar(i64, f64),
    /// Instant query: a string at a time.
    String(i64, String),
    /// Instant query: a vector at a time.
    Vector(i64, Vec<Element>),
    /// Range query: series of points.
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
}

struct Point(i64, f64);

/// A timestamp in seconds as Prometheus writes it: `1700000000` or `1700000000.5`.
struct Seconds(i64);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&Seconds(self.0))?;
        seq.serialize_element(Formatted::new(self.1).as_str())?;
        seq.end()
    }
}

struct Metric<'a>(&'a Labels);

impl Serialize for Metric<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for l in self.0 {
            m.serialize_entry(&l.name, &l.value)?;
        }
        m.end()
    }
}

impl Serialize for QueryResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            QueryResult::Scalar(t, v) => {
                m.serialize_entry("resultType", "scalar")?;
                m.serialize_entry("result", &Point(*t, *v))?;
            }
            QueryResult::String(t, v) => {
                m.serialize_entry("resultType", "string")?;
                m.serialize_entry("result", &(Seconds(*t), v))?;
            }
            QueryResult::Vector(t, els) => {
                m.serialize_entry("resultType", "vector")?;
                let items: Vec<VectorItem<'_>> = els.iter().map(|e| VectorItem(e, *t)).collect();
                m.serialize_entry("result", &items)?;
            }
            QueryResult::Matrix(series) => {
                m.serialize_entry("resultType", "matrix")?;
                let items: Vec<MatrixItem<'_>> =
                    series.iter().map(|(l, p)| MatrixItem(l, p)).collect();
                m.serialize_entry("result", &items)?;
            }
        }
        m.end()
    }
}

struct VectorItem<'a>(&'a Element, i64);

impl Serialize for VectorItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &Metric(&self.0.labels))?;
        m.serialize_entry("value", &Point(self.1, self.0.value))?;
        m.end()
    }
}

/// Writes a range query's success answer into `out`.
pub fn write_matrix_response(
    series: &[(Labels, Vec<(i64, f64)>)],
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let parts = write_matrix_parts(series)?;
    out.reserve(parts.iter().map(Vec::len).sum());
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(())
}

/// A range query's success answer, in parts to be sent one after the other: large answers
/// are written on all cores, each core a part, and sent without joining them.
pub fn write_matrix_parts(
    series: &[(Labels, Vec<(i64, f64)>)],
) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    const HEAD: &[u8] = br#"{"status":"success","data":{"resultType":"matrix","result":["#;
    let points: usize = series.iter().map(|(_, p)| p.len()).sum();
    let parts = rayon::current_num_threads()
        .min(points / PARALLEL_MIN_POINTS + 1)
        .min(series.len().max(1));
    let size = series.len().div_ceil(parts).max(1);
    let times = TimeTexts::of(series);
    type Part<'a> = &'a [(Labels, Vec<(i64, f64)>)];
    let write = |(k, part): (usize, Part<'_>)| {
        // Sized up front: a buffer grown to megabytes is copied over and over.
        let points: usize = part.iter().map(|(_, p)| p.len()).sum();
        let labels: usize = part
            .iter()
            .flat_map(|(l, _)| l.iter().map(|x| x.name.len() + x.value.len() + 6))
            .sum();
        let mut buf = Vec::with_capacity(points * 32 + labels + part.len() * 32 + HEAD.len());
        buf.extend_from_slice(if k == 0 { HEAD } else { b"," });
        for (i, (l, p)) in part.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_matrix_item(l, p, &times, &mut buf)?;
        }
        Ok::<_, serde_json::Error>(buf)
    };
    let mut out = if parts <= 1 {
        vec![write((0, series))?]
    } else {
        series
            .par_chunks(size)
            .enumerate()
            .map(write)
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(last) = out.last_mut() {
        last.extend_from_slice(b"]}}");
    }
    Ok(out)
}

/// The text that opens a point, `[<time>,"`, of every time on a range answer's step grid,
/// written once for all its series: an answer repeats the same times in every series.
struct TimeTexts {
    first: i64,
    step: i64,
    texts: Vec<TimeText>,
}

/// One opening text, in a fixed-size buffer so that it is copied without a call.
#[derive(Clone, Copy)]
struct TimeText {
    bytes: [u8; TIME_TEXT],
    len: u8,
}

/// Room for `[`, a time in seconds (at most 21 characters) and `,"`.
const TIME_TEXT: usize = 32;

/// Most grid times [`TimeTexts`] writes ahead: twice Prometheus' limit of points per series.
const MAX_TIME_TEXTS: i64 = 22_000;

impl TimeTexts {
    /// The grid of `series`: from their earliest point to their latest, by the smallest
    /// gap between a series' first two points. Empty where that would be too many.
    fn of(series: &[(Labels, Vec<(i64, f64)>)]) -> TimeTexts {
        let first = series
            .iter()
            .filter_map(|(_, p)| p.first())
            .map(|p| p.0)
            .min();
        let last = series
            .iter()
            .filter_map(|(_, p)| p.last())
            .map(|p| p.0)
            .max();
        let step = series
            .iter()
            .filter_map(|(_, p)| Some(p.get(1)?.0 - p.first()?.0))
            .min();
        let mut texts = Vec::new();
        if let (Some(first), Some(last), Some(step)) = (first, last, step)
            && step > 0
            && (last - first) / step < MAX_TIME_TEXTS
        {
            let mut t = first;
            let mut text = Vec::with_capacity(TIME_TEXT);
            while t <= last {
                text.clear();
                text.push(b'[');
                write_seconds(t, &mut text);
                text.extend_from_slice(b",\"");
                let mut bytes = [0; TIME_TEXT];
                bytes[..text.len()].copy_from_slice(&text);
                texts.push(TimeText {
                    bytes,
                    len: text.len() as u8,
                });
                t += step;
            }
        }
        TimeTexts {
            first: first.unwrap_or(0),
            step: step.unwrap_or(1).max(1),
            texts,
        }
    }

    /// Appends the opening of a point at `t`. `at` is the grid position a series' points
    /// have reached: they are in time order, so it only moves forward.
    #[inline]
    fn push(&self, t: i64, at: &mut usize, buf: &mut Vec<u8>) {
        while *at < self.texts.len() && self.first + (*at as i64) * self.step < t {
            *at += 1;
        }
        match self.texts.get(*at) {
            Some(text) if self.first + (*at as i64) * self.step == t => {
                buf.extend_from_slice(&text.bytes);
                buf.truncate(buf.len() - TIME_TEXT + usize::from(text.len));
            }
            _ => {
                buf.push(b'[');
                write_seconds(t, buf);
                buf.extend_from_slice(b",\"");
            }
        }
    }
}

/// Appends `t` (ms) in seconds, as `Seconds` serializes it.
fn write_seconds(t: i64, buf: &mut Vec<u8>) {
    if t % 1000 == 0 {
        buf.extend_from_slice(itoa::Buffer::new().format(t / 1000).as_bytes());
    } else {
        buf.extend_from_slice(
            zmij::Buffer::new()
                .format_finite(t as f64 / 1000.0)
                .as_bytes(),
        );
    }
}

/// One series of a matrix, as `MatrixItem` serializes it. The points are written straight
/// into `buf`: their text never needs escaping, and an answer can hold millions.
fn write_matrix_item(
    labels: &Labels,
    points: &[(i64, f64)],
    times: &TimeTexts,
    buf: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    buf.extend_from_slice(br#"{"metric":"#);
    serde_json::to_writer(&mut *buf, &Metric(labels))?;
    buf.extend_from_slice(br#","values":["#);
    let mut at = 0;
    for (i, &(t, v)) in points.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        times.push(t, &mut at, buf);
        push_value(buf, v);
        buf.extend_from_slice(b"\"]");
    }
    buf.extend_from_slice(b"]}");
    Ok(())
}

/// Below this many points an answer is written on one core.
const PARALLEL_MIN_POINTS: usize = 50_000;

struct MatrixItem<'a>(&'a Labels, &'a [(i64, f64)]);

struct Points<'a>(&'a [(i64, f64)]);

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|&(t, v)| Point(t, v)))
    }
}

impl Serialize for MatrixItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &Metric(self.0))?;
        m.serialize_entry("values", &Points(self.1))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_answer_is_written_as_its_serialization() {
        let points: Vec<(i64, f64)> = [
            (1_700_000_000_000, 1.5),
            (1_700_000_000_250, f64::NAN),
            (-1_500, f64::INFINITY),
            (0, -2.5e-7),
            (1_700_000_060_001, 1e21),
        ]
        .into();
        let m = vec![
            (Labels::from_pairs([("a", "x\"y"), ("b", "\u{e9}")]), points),
            (Labels::default(), Vec::new()),
        ];
        let mut ours = Vec::new();
        write_matrix_response(&m, &mut ours).expect("written");
        let want = serde_json::json!({
            "status": "success",
            "data": serde_json::to_value(QueryResult::Matrix(m)).expect("serialized"),
        });
        let ours: serde_json::Value = serde_json::from_slice(&ours).expect("JSON");
        assert_eq!(ours, want);
        assert_eq!(
            ours["data"]["result"][0]["values"],
            serde_json::json!([
                [1700000000, "1.5"],
                [1700000000.25, "NaN"],
                [-1.5, "+Inf"],
                [0, "-2.5e-07"],
                [1700000060.001, "1e+21"]
            ])
        );
    }

    #[test]
    fn values_are_written_as_prometheus_does() {
        let r = QueryResult::Vector(
            1_500,
            vec![Element {
                labels: Arc::new(Labels::from_pairs([("a", "b")])),
                value: 2.5,
            }],
        );
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1.5,"2.5"]}]}"#
        );
        let m = QueryResult::Matrix(vec![(Labels::new(), vec![(2_000, 1.0)])]);
        assert_eq!(
            serde_json::to_string(&m).expect("json"),
            r#"{"resultType":"matrix","result":[{"metric":{},"values":[[2,"1"]]}]}"#
        );
        // Written in parts, the same text as in one piece.
        let big: Vec<(Labels, Vec<(i64, f64)>)> = (0..300)
            .map(|i| {
                let l = Labels::from_pairs([("i", i.to_string().as_str())]);
                (
                    l,
                    (0..1000)
                        .map(|k| (k * 1000, (i * k) as f64 / 7.0))
                        .collect(),
                )
            })
            .collect();
        // On a step grid, with gaps, a series that starts late, and points off the grid.
        let gaps: Vec<(Labels, Vec<(i64, f64)>)> = vec![
            (
                Labels::from_pairs([("i", "a")]),
                vec![(10_000, 1.0), (70_000, 2.0), (190_000, 3.5)],
            ),
            (
                Labels::from_pairs([("i", "b")]),
                vec![
                    (130_000, 4.0),
                    (250_000, -5.0),
                    (250_500, 6.0),
                    (310_000, 7.0),
                ],
            ),
        ];
        let mut out = Vec::new();
        write_matrix_response(&gaps, &mut out).expect("write");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON"),
            serde_json::json!({
                "status": "success",
                "data": serde_json::to_value(QueryResult::Matrix(gaps)).expect("json"),
            })
        );
        let mut out = Vec::new();
        write_matrix_response(&big, &mut out).expect("write");
        let whole = serde_json::json!({
            "status": "success",
            "data": serde_json::to_value(QueryResult::Matrix(big)).expect("json"),
        });
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON"),
            whole
        );
    }
}

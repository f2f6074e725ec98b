//! Values PromQL expressions evaluate to, and their Prometheus HTTP API JSON form.

use std::sync::Arc;

use nunchi_model::{Labels, METRIC_NAME};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

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

/// A value as Prometheus writes it (`jsonutil.MarshalFloat`): Go's shortest digits,
/// plain below 1e21 and from 1e-6, with an exponent (`1e+21`, `6.5e-07`) outside;
/// `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes `6.5e-7`; Go writes `6.5e-07`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
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
        seq.serialize_element(&format_value(self.1))?;
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

struct MatrixItem<'a>(&'a Labels, &'a [(i64, f64)]);

impl Serialize for MatrixItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &Metric(self.0))?;
        let points: Vec<Point> = self.1.iter().map(|&(t, v)| Point(t, v)).collect();
        m.serialize_entry("values", &points)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_prometheus_does() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(
            format_value(123456789012345680000.0),
            "123456789012345680000"
        );
        assert_eq!(format_value(6.540546422436074e-10), "6.540546422436074e-10");
        assert_eq!(format_value(-2.5e-7), "-2.5e-07");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
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
    }
}

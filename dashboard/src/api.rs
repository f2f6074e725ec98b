//! Access to the collector's Prometheus HTTP API and the answers the pages use.
//!
//! [`Api`] is the one way a page reads data: on the server it calls the collector's API
//! router in process (provided as context by [`crate::ssr`]), in the browser it fetches the
//! same paths over HTTP. Answers are decoded from Prometheus' JSON into the plain types
//! below, which are what a page's resource serializes into the HTML for hydration.

use std::collections::BTreeMap;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A series label set.
pub type Metric = BTreeMap<String, String>;

/// One series of an instant (one point) or range answer. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Series {
    /// Labels.
    pub metric: Metric,
    /// `(time, value)` points, oldest first.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The newest value.
    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }

    /// The labels without `__name__`.
    pub fn metric_without_name(&self) -> Metric {
        let mut m = self.metric.clone();
        m.remove("__name__");
        m
    }

    /// A label's value, or "".
    pub fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

pub use nunchi_model::api::{
    Alert, AlertDiscovery, Attempt, Cooldown, Deliveries, GettableSilence as Silence, OutboxEntry,
    Rule, RuleDiscovery, RuleGroup, SilenceMatcher, SilenceStatus,
};

/// Prometheus' JSON envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct RawSeries {
    metric: Metric,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn parse_value(s: &str) -> f64 {
    nunchi_model::number::parse_value(s).unwrap_or(f64::NAN)
}

fn decode_query(d: QueryData) -> Result<Vec<Series>, String> {
    match d.result_type.as_str() {
        "vector" | "matrix" => {
            let raw: Vec<RawSeries> =
                serde_json::from_value(d.result).map_err(|e| format!("bad answer: {e}"))?;
            Ok(raw
                .into_iter()
                .map(|r| Series {
                    metric: r.metric,
                    points: r
                        .value
                        .into_iter()
                        .chain(r.values)
                        .map(|(t, v)| (t, parse_value(&v)))
                        .collect(),
                })
                .collect())
        }
        "scalar" => {
            let (t, v): (f64, String) =
                serde_json::from_value(d.result).map_err(|e| format!("bad answer: {e}"))?;
            Ok(vec![Series {
                metric: Metric::new(),
                points: vec![(t, parse_value(&v))],
            }])
        }
        other => Err(format!("a {other} answer cannot be shown")),
    }
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The way to the collector's API from wherever the code runs.
#[derive(Clone)]
pub struct Api {
    #[cfg(feature = "ssr")]
    router: axum::Router,
}

impl Api {
    /// On the server: the collector's API router, called in process.
    #[cfg(feature = "ssr")]
    pub fn new(router: axum::Router) -> Api {
        Api { router }
    }

    /// The API for the current page (server: from context; browser: over HTTP).
    pub fn current() -> Api {
        #[cfg(feature = "ssr")]
        {
            leptos::prelude::use_context::<Api>()
                .expect("the collector provides the API to the dashboard")
        }
        #[cfg(not(feature = "ssr"))]
        {
            Api {}
        }
    }

    /// GETs `path` and decodes the JSON body.
    pub fn get_json<T: DeserializeOwned + 'static>(
        &self,
        path: String,
    ) -> impl Future<Output = Result<T, String>> + Send + 'static + use<T> {
        #[cfg(feature = "ssr")]
        {
            let router = self.router.clone();
            async move {
                use http_body_util::BodyExt;
                use tower::ServiceExt;
                let req = axum::http::Request::get(&path)
                    .body(axum::body::Body::empty())
                    .map_err(|e| e.to_string())?;
                let resp = router.oneshot(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                decode_body(status.as_u16(), &body)
            }
        }
        #[cfg(not(feature = "ssr"))]
        {
            browser::get_json(path)
        }
    }

    /// GETs a Prometheus API path and unwraps its `data`.
    pub fn data<T: DeserializeOwned + 'static>(
        &self,
        path: String,
    ) -> impl Future<Output = Result<T, String>> + Send + 'static + use<T> {
        let f = self.get_json::<Envelope<T>>(path);
        async move {
            let e = f.await?;
            match (e.status.as_str(), e.data) {
                ("success", Some(d)) => Ok(d),
                _ => Err(format!(
                    "{}: {}",
                    e.error_type.unwrap_or_else(|| "error".into()),
                    e.error.unwrap_or_default()
                )),
            }
        }
    }

    /// An instant query at `time` (Unix seconds; `None`: now).
    pub fn query(
        &self,
        expr: &str,
        time: Option<f64>,
    ) -> impl Future<Output = Result<Vec<Series>, String>> + Send + 'static + use<> {
        let mut path = format!("/api/v1/query?query={}", encode(expr));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let f = self.data::<QueryData>(path);
        async move { decode_query(f.await?) }
    }

    /// A range query; `step` in seconds.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> impl Future<Output = Result<Vec<Series>, String>> + Send + 'static + use<> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step:.3}",
            encode(expr)
        );
        let f = self.data::<QueryData>(path);
        async move { decode_query(f.await?) }
    }

    /// Sends a request with a JSON body (or none) from the browser; the server never
    /// changes state while rendering.
    pub async fn send(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, String> {
        #[cfg(feature = "hydrate")]
        {
            browser::send(method, path, body).await
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = (method, path, body);
            Err("only the browser sends changes".into())
        }
    }
}

fn decode_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(v),
        Err(e) if (200..300).contains(&status) => Err(format!("bad answer: {e}")),
        Err(_) => Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(body).trim()
        )),
    }
}

#[cfg(not(feature = "ssr"))]
mod browser {
    use std::future::Future;

    use serde::de::DeserializeOwned;
    use serde_json::Value;

    pub(super) fn get_json<T: DeserializeOwned + 'static>(
        path: String,
    ) -> impl Future<Output = Result<T, String>> + Send + 'static + use<T> {
        #[cfg(feature = "hydrate")]
        {
            send_wrapper::SendWrapper::new(async move {
                let resp = gloo_net::http::Request::get(&path)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.binary().await.map_err(|e| e.to_string())?;
                super::decode_body(status, &body)
            })
        }
        #[cfg(not(feature = "hydrate"))]
        {
            async move {
                let _ = path;
                Err::<T, String>("no API in this build".into())
            }
        }
    }

    #[cfg(feature = "hydrate")]
    pub(super) async fn send(
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, String> {
        use gloo_net::http::{Method, RequestBuilder};
        let m = match method {
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        };
        let b = RequestBuilder::new(&path).method(m);
        let resp = match body {
            Some(v) => b.json(&v).map_err(|e| e.to_string())?.send().await,
            None => b.send().await,
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if (200..300).contains(&status) {
            Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
        } else {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(format!("HTTP {status}: {}", msg.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vectors_matrices_and_scalars() {
        let v: QueryData = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"host":"a"},"value":[10.5,"0.25"]}]}"#,
        )
        .expect("json");
        let s = decode_query(v).expect("decodes");
        assert_eq!(s[0].label("host"), "a");
        assert_eq!(s[0].points, vec![(10.5, 0.25)]);
        let m: QueryData = serde_json::from_str(
            r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"+Inf"],[3,"NaN"]]}]}"#,
        )
        .expect("json");
        let s = decode_query(m).expect("decodes");
        assert_eq!(s[0].points[1].1, f64::INFINITY);
        assert!(s[0].points[2].1.is_nan());
        let sc: QueryData =
            serde_json::from_str(r#"{"resultType":"scalar","result":[5,"3"]}"#).expect("json");
        assert_eq!(decode_query(sc).expect("decodes")[0].last(), Some(3.0));
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("a{b=\"c d\"}"), "a%7Bb%3D%22c%20d%22%7D");
    }

    #[test]
    fn error_bodies_are_reported() {
        let e = decode_body::<Value>(400, b"nope").expect_err("an error");
        assert_eq!(e, "HTTP 400: nope");
    }
}

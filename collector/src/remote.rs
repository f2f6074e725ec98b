//! Remote storage mode: a Prometheus-compatible TSDB (a VictoriaMetrics cluster, Mimir,
//! Thanos Receive) holds the series. Writes are forwarded to its remote_write endpoint and
//! acknowledged only once it has acknowledged them; queries and the series, label and
//! metadata endpoints are answered by its Prometheus HTTP API, so PromQL is evaluated
//! where the data is.

use std::sync::Arc;

use nunchi_model::Labels;
use nunchi_model::number::parse_value;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::Value as Json;

use crate::config::RemoteConfig;
use crate::query::{Element, QueryError, QueryResult};

/// Why a forwarded write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The remote refused the data (a 4xx other than 429): resending will not help.
    #[error("remote storage refused the write ({status}): {message}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The remote could not take it now (5xx, 429, timeout, connection): resend later.
    #[error("remote storage unavailable: {0}")]
    Unavailable(String),
}

/// A client for the remote TSDB.
pub struct Remote {
    client: reqwest::Client,
    config: RemoteConfig,
    forwarded: prometheus::IntCounterVec,
}

impl Remote {
    /// A client for `config`, its metrics registered in `registry`.
    pub fn new(
        config: RemoteConfig,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Remote>, crate::CollectorError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("nunchi-collector/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .build()?;
        let forwarded = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "nunchi_remote_requests_total",
                "Requests to the remote storage, by endpoint and outcome.",
            ),
            &["endpoint", "outcome"],
        )?;
        registry.register(Box::new(forwarded.clone()))?;
        Ok(Arc::new(Remote {
            client,
            config,
            forwarded,
        }))
    }

    fn authorised(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.bearer_token {
            Some(t) => b.header(AUTHORIZATION, format!("Bearer {t}")),
            None => b,
        }
    }

    fn count(&self, endpoint: &str, outcome: &str) {
        self.forwarded.with_label_values(&[endpoint, outcome]).inc();
    }

    /// Forwards a remote_write body (snappy-compressed protobuf) as received.
    pub async fn forward(&self, body: Vec<u8>) -> Result<(), ForwardError> {
        let resp = self
            .authorised(self.client.post(self.config.write_url.clone()))
            .header(CONTENT_ENCODING, "snappy")
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.count("write", "error");
                return Err(ForwardError::Unavailable(nunchi_scrape::error_chain(&e)));
            }
        };
        let status = resp.status();
        if status.is_success() {
            self.count("write", "ok");
            return Ok(());
        }
        let message = resp.text().await.unwrap_or_default();
        let message = message.trim().chars().take(512).collect::<String>();
        self.count("write", "refused");
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(ForwardError::Refused {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(ForwardError::Unavailable(format!("{status}: {message}")))
        }
    }

    /// Calls an endpoint of the remote's Prometheus API with form parameters and returns
    /// its `data`; its errors keep their Prometheus type.
    pub async fn api(&self, path: &str, params: &[(String, String)]) -> Result<Json, QueryError> {
        let mut url = self.config.query_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        let endpoint = path.trim_start_matches("/api/v1/");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let resp = self
            .authorised(self.client.post(url))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                self.count(endpoint, "error");
                QueryError::Unavailable(format!(
                    "remote storage: {}",
                    nunchi_scrape::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            self.count(endpoint, "error");
            QueryError::Unavailable(format!(
                "remote storage: {}",
                nunchi_scrape::error_chain(&e)
            ))
        })?;
        let body: Json = serde_json::from_slice(&bytes).map_err(|e| {
            self.count(endpoint, "error");
            QueryError::Unavailable(format!(
                "remote storage answered {status} without a Prometheus API body: {e}"
            ))
        })?;
        if body["status"] == "success" {
            self.count(endpoint, "ok");
            return Ok(body["data"].clone());
        }
        self.count(endpoint, "refused");
        let message = body["error"].as_str().unwrap_or("unknown error").to_owned();
        // The error's Prometheus type, or (where a TSDB puts its status code there, as
        // VictoriaMetrics does) the type Prometheus gives that status.
        Err(match (body["errorType"].as_str(), status.as_u16()) {
            (Some("bad_data"), _) | (_, 400) => QueryError::BadData(message),
            (Some("execution"), _) | (_, 422) => QueryError::Execution(message),
            (Some("timeout"), _) | (_, 504) => QueryError::Timeout("remote storage"),
            _ => QueryError::Unavailable(format!("remote storage ({status}): {message}")),
        })
    }

    /// An instant query.
    pub async fn instant(&self, query: &str, t: i64) -> Result<QueryResult, QueryError> {
        let data = self
            .api(
                "/api/v1/query",
                &[
                    ("query".to_owned(), query.to_owned()),
                    ("time".to_owned(), seconds(t)),
                ],
            )
            .await?;
        parse_result(&data, t)
    }

    /// A range query.
    pub async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult, QueryError> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query".to_owned(), query.to_owned()),
                    ("start".to_owned(), seconds(start)),
                    ("end".to_owned(), seconds(end)),
                    ("step".to_owned(), seconds(step)),
                ],
            )
            .await?;
        parse_result(&data, end)
    }

    /// Whether the remote answers queries.
    pub async fn ready(&self) -> Result<(), QueryError> {
        self.instant("vector(1)", crate::storage::now_ms())
            .await
            .map(|_| ())
    }
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn bad_answer(what: &str) -> QueryError {
    QueryError::Unavailable(format!("remote storage sent a malformed {what}"))
}

/// A `[time, "value"]` pair.
fn point(p: &Json) -> Result<(i64, f64), QueryError> {
    let t = p[0].as_f64().ok_or_else(|| bad_answer("timestamp"))?;
    let v = p[1].as_str().ok_or_else(|| bad_answer("value"))?;
    let v = parse_value(v).ok_or_else(|| bad_answer("value"))?;
    Ok(((t * 1000.0).round() as i64, v))
}

fn metric(m: &Json) -> Result<Labels, QueryError> {
    let obj = m.as_object().ok_or_else(|| bad_answer("metric"))?;
    Ok(Labels::from_pairs(obj.iter().map(|(k, v)| {
        (k.as_str(), v.as_str().unwrap_or_default())
    })))
}

/// A query's `data` as a [`QueryResult`].
fn parse_result(data: &Json, t: i64) -> Result<QueryResult, QueryError> {
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => {
            let (ts, v) = point(result)?;
            Ok(QueryResult::Scalar(ts, v))
        }
        Some("string") => Ok(QueryResult::String(
            t,
            result[1].as_str().unwrap_or_default().to_owned(),
        )),
        Some("vector") => {
            let mut at = t;
            let mut els = Vec::new();
            for r in result.as_array().ok_or_else(|| bad_answer("vector"))? {
                let (ts, value) = point(&r["value"])?;
                at = ts;
                els.push(Element {
                    labels: Arc::new(metric(&r["metric"])?),
                    value,
                });
            }
            Ok(QueryResult::Vector(at, els))
        }
        Some("matrix") => {
            let mut out = Vec::new();
            for r in result.as_array().ok_or_else(|| bad_answer("matrix"))? {
                let points = r["values"]
                    .as_array()
                    .ok_or_else(|| bad_answer("matrix"))?
                    .iter()
                    .map(point)
                    .collect::<Result<Vec<_>, _>>()?;
                out.push((metric(&r["metric"])?, points));
            }
            Ok(QueryResult::Matrix(out))
        }
        _ => Err(bad_answer("result type")),
    }
}

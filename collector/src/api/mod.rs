//! The HTTP API: remote_write ingest and the Prometheus query API, with Prometheus' JSON
//! envelopes (`{"status":"success","data":...}` and
//! `{"status":"error","errorType":...,"error":...}`) and status codes.
//!
//! [`app`] builds the router, so tests can drive it without a socket.

pub mod alerting;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;

use crate::ingest::remote_write::{Format, Ingest, WriteError};
use crate::query::parse::{MAX_DURATION_SECS, MAX_TIME_MS};
use crate::query::{QueryError, QueryLimits, QueryResult};
use crate::storage::now_ms;
use crate::store::{Lookup, SharedStore};
use nunchi_codec::remote_write_v2;

/// What the handlers share.
pub struct AppState {
    /// Where series live.
    pub backend: SharedStore,
    /// remote_write handling.
    pub ingest: Ingest,
    /// Query limits.
    pub limits: QueryLimits,
    /// Self-metrics.
    pub registry: Registry,
    /// Rules and alert delivery (absent in tests that do not need them).
    pub alerting: Option<Arc<crate::alerting::Alerting>>,
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "remote_write failed");
        } else {
            tracing::debug!(error = %self, "remote_write refused");
        }
        let mut resp = (status, format!("{self}\n")).into_response();
        if let WriteError::SeriesBudget { retry_after_s, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A Prometheus API error.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, kind) = match &e {
            QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            QueryError::Execution(_) | QueryError::TooManySamples(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "execution")
            }
            QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            QueryError::Storage(_) | QueryError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        match &e {
            QueryError::Timeout(_) | QueryError::Unavailable(_) => {
                tracing::warn!(error = %e, "query failed");
            }
            _ if status.is_server_error() => tracing::error!(error = %e, "query failed"),
            _ => {}
        }
        ApiError {
            status,
            kind,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({
                "status": "error",
                "errorType": self.kind,
                "error": self.message,
            })),
        )
            .into_response()
    }
}

/// `{"status":"success","data":...}`, serialised straight from `data`.
#[derive(Serialize)]
struct Success<T> {
    status: &'static str,
    data: T,
}

/// A JSON body already written.
fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A JSON body sent part by part, with its length up front.
fn json_parts_response(mut parts: Vec<Vec<u8>>, bytes: usize) -> Response {
    if parts.len() <= 1 {
        return json_response(parts.pop().unwrap_or_default());
    }
    let chunks = parts
        .into_iter()
        .map(|p| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(p)));
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            ),
            (axum::http::header::CONTENT_LENGTH, bytes.into()),
        ],
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

fn internal(message: String) -> Response {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        message,
    }
    .into_response()
}

fn success(data: impl Serialize) -> Response {
    axum::Json(Success {
        status: "success",
        data,
    })
    .into_response()
}

/// The router.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/v1/write",
            post(write).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/storage", get(storage_status))
        .route("/api/v1/admin/compact", post(compact))
        .route("/metrics", get(metrics))
        .route(
            "/-/healthy",
            get(|| async { "nunchi-collector is healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .merge(alerting::routes())
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// The answer to a request whose handler panicked: the server stays up, the client learns
/// it was our fault (the panic itself is in the log).
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        message: "internal error: the request failed unexpectedly (see the collector's log)"
            .to_owned(),
    }
    .into_response()
}

async fn write(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // Who is asking is settled before what they sent.
    if let Err(e) = s.ingest.authenticate(auth) {
        return s.ingest.refused(e).into_response();
    }
    let format = match Format::of(text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING)) {
        Ok(f) => f,
        Err(e) => return s.ingest.refused(e).into_response(),
    };
    // Read one byte past the limit, so an oversized body is told apart from a full one.
    let limit = s.ingest.max_body_size();
    let body = match axum::body::to_bytes(body, limit.saturating_add(1)).await {
        Ok(b) => b.to_vec(),
        Err(_) => vec![0; limit.saturating_add(1)],
    };
    let (mut resp, written) = match s.ingest.write(&s.backend, auth, format, body).await {
        Ok(n) => {
            if let Some(a) = &s.alerting {
                a.manager.samples_arrived();
            }
            (StatusCode::NO_CONTENT.into_response(), n)
        }
        Err(e) => {
            let n = match &e {
                WriteError::Refused { written, .. } => *written,
                _ => 0,
            };
            (e.into_response(), n)
        }
    };
    if format == Format::V2 {
        for (name, n) in [
            (remote_write_v2::SAMPLES_WRITTEN, written),
            (remote_write_v2::HISTOGRAMS_WRITTEN, 0),
            (remote_write_v2::EXEMPLARS_WRITTEN, 0),
        ] {
            // `from_bytes` takes the mixed case the specification spells them in.
            if let Ok(name) = axum::http::HeaderName::from_bytes(name.as_bytes()) {
                resp.headers_mut().insert(name, HeaderValue::from(n));
            }
        }
    }
    resp
}

/// Parameters from the query string and, for POST, the form body (Prometheus accepts
/// both).
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError {
                status: e.status(),
                kind: "bad_data",
                message: format!("cannot read the request: {}", e.body_text()),
            }
            .into_response()
        })?;
        Ok(Params::from(&method, query, &headers, &body))
    }
}

impl Params {
    fn from(method: &Method, query: Option<String>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && form {
            v.extend(url::form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `match[]` selectors.
    fn matchers(
        &self,
        limits: &crate::query::TextLimits,
    ) -> Result<Vec<Vec<promql_parser::label::Matcher>>, ApiError> {
        self.all("match[]")
            .map(|m| {
                let bad =
                    |e: String| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}"));
                match crate::query::parse::parse_limited(m, limits).map_err(bad)? {
                    promql_parser::parser::Expr::VectorSelector(vs) => {
                        if !vs.matchers.or_matchers.is_empty() {
                            return Err(
                                bad("\"or\" inside a selector is not supported".to_owned()),
                            );
                        }
                        Ok(crate::query::selector_matchers(&vs))
                    }
                    _ => Err(bad(format!("{m:?} is not a series selector"))),
                }
            })
            .collect()
    }

    /// `start` and `end`, all of time where absent.
    fn span(&self) -> Result<(i64, i64), ApiError> {
        Ok((
            self.time("start", Some(i64::MIN))?,
            self.time("end", Some(i64::MAX))?,
        ))
    }

    /// `limit`: a positive count, or none (0 or absent).
    fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse::<usize>()
                .map(|n| (n > 0).then_some(n))
                .map_err(|_| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"limit\": cannot parse {s:?} to a valid limit"
                    ))
                }),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{name}\": missing")))
    }

    fn time(&self, name: &str, default: Option<i64>) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => default.ok_or_else(|| {
                ApiError::bad_data(format!("invalid parameter \"{name}\": missing"))
            }),
            Some(s) => parse_time(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}"))),
        }
    }
}

/// A timestamp as Prometheus accepts it: Unix seconds (fractions allowed) or RFC 3339,
/// within [`MAX_TIME_MS`] of the epoch (about 73 million years).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let ms = if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        (f * 1000.0).round()
    } else {
        humantime::parse_rfc3339_weak(s)
            .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_millis() as f64,
                Err(e) => -(e.duration().as_millis() as f64),
            })
            .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))?
    };
    if ms.abs() > MAX_TIME_MS as f64 {
        return Err(format!(
            "cannot parse {s:?} to a valid timestamp: it lies more than {} years from 1970",
            MAX_TIME_MS / 1000 / 31_556_952
        ));
    }
    Ok(ms as i64)
}

/// A duration as Prometheus accepts it: seconds (fractions allowed) or `1m30s` style, at
/// most what a signed 64-bit count of nanoseconds holds (about 292 years).
pub fn parse_step(s: &str) -> Result<i64, String> {
    let secs = match s.parse::<f64>() {
        Ok(f) if f.is_finite() => f,
        Ok(_) => return Err(format!("cannot parse {s:?} to a valid duration")),
        Err(_) => promql_parser::util::parse_duration(s)
            .map(|d| d.as_secs_f64())
            .map_err(|_| format!("cannot parse {s:?} to a valid duration"))?,
    };
    if secs.abs() >= MAX_DURATION_SECS {
        return Err(format!(
            "cannot parse {s:?} to a valid duration. It overflows int64"
        ));
    }
    Ok((secs * 1000.0).round() as i64)
}

fn limits_for(s: &AppState, p: &Params) -> Result<QueryLimits, ApiError> {
    let mut limits = s.limits;
    if let Some(t) = p.get("timeout") {
        let ms = parse_step(t)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        if ms > 0 {
            limits.timeout = limits
                .timeout
                .min(std::time::Duration::from_millis(ms as u64));
        }
    }
    Ok(limits)
}

async fn query(State(s): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let text = p.required("query")?;
    let t = p.time("time", Some(now_ms()))?;
    let limits = limits_for(&s, &p)?;
    Ok(success(s.backend.instant(text, t, limits).await?))
}

async fn query_range(State(s): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let text = p.required("query")?;
    let start = p.time("start", None)?;
    let end = p.time("end", None)?;
    let step = parse_step(p.required("step")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    let limits = limits_for(&s, &p)?;
    let nocache = p.get("nocache").is_some_and(|v| v == "1" || v == "true");
    let began = std::time::Instant::now();
    let r = s
        .backend
        .range(text, (start, end, step), limits, nocache)
        .await?;
    let answered_ms = began.elapsed().as_secs_f64() * 1000.0;
    Ok(match r {
        QueryResult::Matrix(m) => {
            let written = crate::query::value::write_matrix_parts(&m);
            drop(m);
            match written {
                Ok(parts) => {
                    let bytes: usize = parts.iter().map(Vec::len).sum();
                    tracing::debug!(
                        answered_ms,
                        written_ms = began.elapsed().as_secs_f64() * 1000.0,
                        bytes,
                        "range query answered"
                    );
                    json_parts_response(parts, bytes)
                }
                Err(e) => internal(format!("writing the answer: {e}")),
            }
        }
        other => success(other),
    })
}

/// The selection of a series, label-name or label-value request.
fn lookup<'a>(
    p: &'a Params,
    matchers: &'a [Vec<promql_parser::label::Matcher>],
) -> Result<Lookup<'a>, ApiError> {
    let (start, end) = p.span()?;
    Ok(Lookup {
        matchers,
        start,
        end,
        limit: p.limit()?,
        params: &p.0,
    })
}

async fn labels(State(s): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let matchers = p.matchers(&s.limits.text)?;
    Ok(success(
        s.backend.label_names(lookup(&p, &matchers)?).await?,
    ))
}

async fn series(State(s): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let matchers = p.matchers(&s.limits.text)?;
    if matchers.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    Ok(success(s.backend.series(lookup(&p, &matchers)?).await?))
}

async fn label_values(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !nunchi_model::is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let p = Params::from(&Method::GET, q, &HeaderMap::new(), &[]);
    let matchers = p.matchers(&s.limits.text)?;
    Ok(success(
        s.backend
            .label_values(&name, lookup(&p, &matchers)?)
            .await?,
    ))
}

async fn metadata(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::from(&Method::GET, q, &HeaderMap::new(), &[]);
    let count = |name: &str| -> Result<Option<usize>, ApiError> {
        match p.get(name) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(_) => Err(ApiError::bad_data(format!(
                    "invalid parameter \"{name}\": {v:?} is not a number"
                ))),
            },
        }
    };
    let limit = count("limit")?;
    let per_metric = count("limit_per_metric")?;
    let metric = p.get("metric").filter(|m| !m.is_empty());
    Ok(success(
        s.backend.metadata(metric, limit, per_metric, &p.0).await?,
    ))
}

async fn exemplars(State(s): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    // Exemplars are not stored: a valid request gets an empty answer.
    crate::query::parse_with(p.required("query")?, &s.limits.text)?;
    p.span()?;
    Ok(success(Vec::<()>::new()))
}

async fn buildinfo() -> Response {
    // `version` is the Prometheus API level served, which clients such as Grafana read to
    // pick features; the collector's own version is in `nunchiVersion`.
    success(serde_json::json!({
        "version": PROMETHEUS_API_VERSION,
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "nunchi-collector",
        "nunchiVersion": env!("CARGO_PKG_VERSION"),
    }))
}

/// The Prometheus release whose HTTP API and PromQL the collector answers like.
pub const PROMETHEUS_API_VERSION: &str = "2.42.0";

async fn storage_status(State(s): State<Arc<AppState>>) -> Response {
    success(s.backend.status())
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    match s.backend.ready().await {
        Ok(()) => "nunchi-collector is ready.\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn compact(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let blocks = s.backend.compact().await?;
    Ok(success(serde_json::json!({ "blocks": blocks })))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        buf,
    )
        .into_response()
}

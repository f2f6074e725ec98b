//! The HTTP API: remote_write ingest and the Prometheus query API, with Prometheus' JSON
//! envelopes (`{"status":"success","data":...}` and
//! `{"status":"error","errorType":...,"error":...}`) and status codes.
//!
//! [`app`] builds the router, so tests can drive it without a socket.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;

use crate::ingest::remote_write::{Ingest, WriteError};
use crate::query::{Engine, QueryError, QueryLimits};
use crate::storage::{Storage, now_ms};

/// What the handlers share.
pub struct AppState {
    /// The storage.
    pub storage: Arc<Storage>,
    /// remote_write handling.
    pub ingest: Ingest,
    /// Query limits.
    pub limits: QueryLimits,
    /// Self-metrics.
    pub registry: Registry,
}

/// The HTTP status a refused write gets.
pub fn write_status(e: &WriteError) -> StatusCode {
    match e {
        WriteError::Unauthorized => StatusCode::UNAUTHORIZED,
        WriteError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Decode(nunchi_codec::remote_write::DecodeError::TooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        WriteError::Decode(_) | WriteError::Labels(_) | WriteError::Refused(_) => {
            StatusCode::BAD_REQUEST
        }
        WriteError::SeriesBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
        WriteError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        let status = write_status(&self);
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
            QueryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "query failed");
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

fn success(data: impl Serialize) -> Response {
    axum::Json(serde_json::json!({ "status": "success", "data": data })).into_response()
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
        .route("/api/v1/status/storage", get(storage_status))
        .route("/api/v1/admin/compact", post(compact))
        .route("/metrics", get(metrics))
        .route(
            "/-/healthy",
            get(|| async { "nunchi-collector is healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .with_state(state)
}

async fn write(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Read one byte past the limit, so an oversized body is told apart from a full one.
    let limit = s.ingest.max_body_size();
    let body = match axum::body::to_bytes(body, limit.saturating_add(1)).await {
        Ok(b) => b.to_vec(),
        Err(_) => vec![0; limit.saturating_add(1)],
    };
    match s.ingest.write(&s.storage, auth, body).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parameters from the query string and, for POST, the form body.
struct Params(Vec<(String, String)>);

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

/// A timestamp as Prometheus accepts it: Unix seconds (fractions allowed) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok((f * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        })
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// A duration as Prometheus accepts it: seconds (fractions allowed) or `1m30s` style.
pub fn parse_step(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        return if f.is_finite() {
            Ok((f * 1000.0).round() as i64)
        } else {
            Err(format!("cannot parse {s:?} to a valid duration"))
        };
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
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

async fn query(
    State(s): State<Arc<AppState>>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from(&method, q, &headers, &body);
    let text = p.required("query")?;
    let t = p.time("time", Some(now_ms()))?;
    let expr = crate::query::parse(text)?;
    let limits = limits_for(&s, &p)?;
    let r = Engine::new(s.storage.as_ref(), limits)
        .instant(&expr, t)
        .await?;
    Ok(success(r))
}

async fn query_range(
    State(s): State<Arc<AppState>>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from(&method, q, &headers, &body);
    let text = p.required("query")?;
    let start = p.time("start", None)?;
    let end = p.time("end", None)?;
    let step = parse_step(p.required("step")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    let expr = crate::query::parse(text)?;
    let limits = limits_for(&s, &p)?;
    let r = Engine::new(s.storage.as_ref(), limits)
        .range(&expr, start, end, step)
        .await?;
    Ok(success(r))
}

async fn labels(State(s): State<Arc<AppState>>) -> Response {
    success(s.storage.label_names())
}

async fn storage_status(State(s): State<Arc<AppState>>) -> Response {
    success(s.storage.status())
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    match s.storage.status().last_error {
        None => "nunchi-collector is ready.\n".into_response(),
        Some(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}\n")).into_response(),
    }
}

async fn compact(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let blocks = s.storage.flush_and_compact().await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        message: e.to_string(),
    })?;
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

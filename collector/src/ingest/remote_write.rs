//! `POST /api/v1/write`: Prometheus remote_write 1.0 and 2.0 (protobuf, snappy block
//! format), told apart by `Content-Type` as the 2.0 specification says: no type, plain
//! `application/x-protobuf` or `proto=prometheus.WriteRequest` is 1.0;
//! `proto=io.prometheus.write.v2.Request` is 2.0; any other type, `proto` or
//! `Content-Encoding` is refused with 415, so that a sender can fall back. A 2.0 request
//! is resolved into 1.0's messages (and logged in that form); a 2.0 answer carries the
//! `X-Prometheus-Remote-Write-*-Written` headers, errors included.
//!
//! A request is checked whole before anything of it is stored: the bearer token, the body
//! and decompressed sizes, every series' labels against the limits (a label name given
//! twice in one series is refused, naming the series, as Prometheus does), and the
//! writer's new-series budget. Over any limit it is refused with a 4xx naming the limit (413 for
//! sizes, 429 with `Retry-After` for the series budget, 400 otherwise) and counted; a
//! refused request leaves no trace in storage. An accepted one is in the write-ahead log
//! before the 204 goes out.
//!
//! Samples the head refuses (too far out of order, or a second value for a stored
//! timestamp) are answered with 400 after the rest of the request is stored, as Prometheus
//! does; exact duplicates are accepted silently, so a writer's retry is harmless.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use nunchi_codec::remote_write::{self, DecodeError, WriteRequest};
use nunchi_codec::remote_write_v2::{self, V2Error};
use nunchi_model::{METRIC_NAME, is_valid_label_name};
use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::{IngestLimits, TokenConfig};
use crate::remote::ForwardError;
use crate::storage::{StorageError, canonicalize};
use crate::store::{BackendError, SharedStore};

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No or an unknown bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The body is over `limits.max_body_size`.
    #[error("request body is larger than limits.max_body_size ({0} bytes)")]
    BodyTooLarge(u64),
    /// The body does not decode, or decompresses past the limit.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The body's type, encoding or content is not one this receiver takes (415: the
    /// sender may fall back to another protocol version).
    #[error("{0}")]
    Unsupported(String),
    /// A series breaks a label limit.
    #[error("{0}")]
    Labels(String),
    /// The writer's new-series budget is spent.
    #[error(
        "new series limit reached: {name} may create {limit} series per minute; this request would create {wanted}. Retry after {retry_after_s}s"
    )]
    SeriesBudget {
        /// The writer.
        name: String,
        /// Its budget.
        limit: u64,
        /// New series in the request.
        wanted: u64,
        /// Seconds until enough budget has refilled.
        retry_after_s: u64,
    },
    /// Some samples could not be stored (the rest were).
    #[error("{reason}")]
    Refused {
        /// Samples stored.
        written: u64,
        /// What was refused.
        reason: String,
    },
    /// Storage could not take the write; the writer should retry.
    #[error("storage unavailable: {0}")]
    Storage(#[from] StorageError),
    /// The remote storage did not take the write (remote storage mode).
    #[error(transparent)]
    Remote(#[from] ForwardError),
}

impl From<BackendError> for WriteError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Storage(e) => WriteError::Storage(e),
            BackendError::Remote(e) => WriteError::Remote(e),
        }
    }
}

impl WriteError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            WriteError::Unauthorized => StatusCode::UNAUTHORIZED,
            WriteError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WriteError::Decode(nunchi_codec::remote_write::DecodeError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            WriteError::Decode(_) | WriteError::Labels(_) | WriteError::Refused { .. } => {
                StatusCode::BAD_REQUEST
            }
            WriteError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WriteError::SeriesBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            WriteError::Storage(_) | WriteError::Remote(ForwardError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WriteError::Remote(ForwardError::Refused { .. }) => StatusCode::BAD_REQUEST,
        }
    }

    /// The counter label for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::Unauthorized => "unauthorized",
            WriteError::BodyTooLarge(_) => "body_too_large",
            WriteError::Decode(DecodeError::TooLarge { .. }) => "decompressed_too_large",
            WriteError::Decode(_) => "malformed",
            WriteError::Unsupported(_) => "unsupported",
            WriteError::Labels(_) => "label_limits",
            WriteError::SeriesBudget { .. } => "series_limit",
            WriteError::Refused { .. } => "samples_refused",
            WriteError::Storage(_) => "storage_error",
            WriteError::Remote(ForwardError::Refused { .. }) => "remote_refused",
            WriteError::Remote(ForwardError::Unavailable(_)) => "remote_unavailable",
        }
    }
}

impl From<V2Error> for WriteError {
    fn from(e: V2Error) -> Self {
        match e {
            V2Error::Protobuf(e) => WriteError::Decode(DecodeError::Protobuf(e)),
            V2Error::Invalid(m) => WriteError::Labels(m),
            V2Error::Unsupported(m) => WriteError::Unsupported(m),
            e @ V2Error::TooLarge { .. } => {
                WriteError::Labels(format!("{e} (limits.max_decompressed_size)"))
            }
        }
    }
}

/// The protocol version of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

impl Format {
    /// The format `Content-Type` and `Content-Encoding` name, as Prometheus' receiver
    /// reads them.
    pub fn of(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Format, WriteError> {
        if let Some(enc) = content_encoding
            && !enc.trim().is_empty()
            && !enc
                .trim()
                .eq_ignore_ascii_case(remote_write::CONTENT_ENCODING)
        {
            return Err(WriteError::Unsupported(format!(
                "unsupported Content-Encoding {enc:?}: remote_write bodies are snappy"
            )));
        }
        let Some(ct) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(Format::V1);
        };
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        if !media.eq_ignore_ascii_case(remote_write::CONTENT_TYPE) {
            return Err(WriteError::Unsupported(format!(
                "unsupported Content-Type {ct:?}: expected application/x-protobuf"
            )));
        }
        let mut format = Format::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("proto") {
                format = match v.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Format::V1,
                    remote_write_v2::PROTO => Format::V2,
                    other => {
                        return Err(WriteError::Unsupported(format!(
                            "unsupported proto message {other:?}: this receiver takes prometheus.WriteRequest and {}",
                            remote_write_v2::PROTO
                        )));
                    }
                };
            }
        }
        Ok(format)
    }
}

/// A token bucket of new series per writer.
struct Budget {
    tokens: f64,
    at: Instant,
}

/// Ingest state shared by all requests.
pub struct Ingest {
    limits: IngestLimits,
    tokens: Vec<TokenConfig>,
    budgets: Mutex<HashMap<String, Budget>>,
    requests: IntCounterVec,
    samples: IntCounterVec,
    rejected: IntCounterVec,
}

const ANONYMOUS: &str = "anonymous";

impl Ingest {
    /// Ingest with these limits and tokens, registering its counters.
    pub fn new(
        limits: IngestLimits,
        tokens: Vec<TokenConfig>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "nunchi_ingest_requests_total",
                "remote_write requests, by writer and HTTP status.",
            ),
            &["token", "code"],
        )?;
        let samples = IntCounterVec::new(
            Opts::new(
                "nunchi_ingest_samples_total",
                "Samples accepted through remote_write, by writer.",
            ),
            &["token"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "nunchi_ingest_rejected_requests_total",
                "remote_write requests refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(samples.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        Ok(Ingest {
            limits,
            tokens,
            budgets: Mutex::new(HashMap::new()),
            requests,
            samples,
            rejected,
        })
    }

    /// The largest body accepted, in bytes.
    pub fn max_body_size(&self) -> usize {
        self.limits.max_body_size.as_u64() as usize
    }

    /// The writer a request's `Authorization` header identifies.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<(String, u64), WriteError> {
        if self.tokens.is_empty() {
            return Ok((ANONYMOUS.to_owned(), self.limits.max_new_series_per_minute));
        }
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(WriteError::Unauthorized)?;
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
            .map(|t| {
                (
                    t.name.clone(),
                    t.max_new_series_per_minute
                        .unwrap_or(self.limits.max_new_series_per_minute),
                )
            })
            .ok_or(WriteError::Unauthorized)
    }

    /// Handles one request in `format`; returns the samples stored (exemplars and created
    /// timestamps of 2.0 requests are not kept).
    pub async fn write(
        &self,
        backend: &SharedStore,
        authorization: Option<&str>,
        format: Format,
        body: Vec<u8>,
    ) -> Result<u64, WriteError> {
        let (name, budget) = match self.authenticate(authorization) {
            Ok(x) => x,
            Err(e) => return Err(self.refuse(ANONYMOUS, e)),
        };
        match self.write_as(backend, &name, budget, format, body).await {
            Ok(n) => {
                self.requests
                    .with_label_values(&[name.as_str(), "204"])
                    .inc();
                self.samples.with_label_values(&[name.as_str()]).inc_by(n);
                Ok(n)
            }
            Err(e) => Err(self.refuse(&name, e)),
        }
    }

    /// Counts a request refused before it was read (its format), and hands the error back.
    pub fn refused(&self, e: WriteError) -> WriteError {
        self.refuse(ANONYMOUS, e)
    }

    fn refuse(&self, name: &str, e: WriteError) -> WriteError {
        self.rejected.with_label_values(&[e.reason()]).inc();
        let code = e.status().as_u16().to_string();
        self.requests
            .with_label_values(&[name, code.as_str()])
            .inc();
        e
    }

    async fn write_as(
        &self,
        backend: &SharedStore,
        name: &str,
        budget: u64,
        format: Format,
        body: Vec<u8>,
    ) -> Result<u64, WriteError> {
        if body.len() as u64 > self.limits.max_body_size.as_u64() {
            return Err(WriteError::BodyTooLarge(self.limits.max_body_size.as_u64()));
        }
        let max = self.limits.max_decompressed_size.as_u64() as usize;
        let mut req = match format {
            Format::V1 => remote_write::decode(&body, max)?,
            Format::V2 => {
                let raw = remote_write::decompress(&body, max)?;
                remote_write_v2::into_v1(remote_write_v2::decode(&raw)?, max)?
            }
        };
        check_duplicate_names(&req)?;
        canonicalize(&mut req);
        self.check_labels(&req)?;
        // The log and the remote take 1.0 bodies.
        let body = match format {
            Format::V1 => body,
            Format::V2 => remote_write::encode(&req),
        };
        let new = backend.count_new_series(&req);
        if new > 0 {
            self.spend(name, budget, new)?;
        }
        let o = backend.write(body, &req).await?;
        if o.too_old > 0 || o.conflicting > 0 {
            return Err(WriteError::Refused {
                written: o.appended,
                reason: format!(
                    "stored {} samples; refused {} older than the out-of-order window and {} with a different value for a stored timestamp",
                    o.appended, o.too_old, o.conflicting
                ),
            });
        }
        Ok(o.appended)
    }

    fn check_labels(&self, req: &WriteRequest) -> Result<(), WriteError> {
        let l = &self.limits;
        for ts in &req.timeseries {
            let series = || {
                let name = ts
                    .labels
                    .iter()
                    .find(|x| x.name == METRIC_NAME)
                    .map_or("", |x| x.value.as_str());
                format!("series {name:?}")
            };
            if ts.labels.len() > l.max_labels_per_series {
                return Err(WriteError::Labels(format!(
                    "{} has {} labels, over limits.max_labels_per_series ({})",
                    series(),
                    ts.labels.len(),
                    l.max_labels_per_series
                )));
            }
            if !ts.labels.iter().any(|x| x.name == METRIC_NAME) {
                return Err(WriteError::Labels(
                    "a series has no metric name (__name__)".to_owned(),
                ));
            }
            for x in &ts.labels {
                if x.name.len() > l.max_label_name_length {
                    return Err(WriteError::Labels(format!(
                        "{}: label name of {} bytes is over limits.max_label_name_length ({})",
                        series(),
                        x.name.len(),
                        l.max_label_name_length
                    )));
                }
                if x.value.len() > l.max_label_value_length {
                    return Err(WriteError::Labels(format!(
                        "{}: value of label {:?} is {} bytes, over limits.max_label_value_length ({})",
                        series(),
                        x.name,
                        x.value.len(),
                        l.max_label_value_length
                    )));
                }
                if !is_valid_label_name(&x.name) {
                    return Err(WriteError::Labels(format!(
                        "{}: invalid label name {:?}",
                        series(),
                        x.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn spend(&self, name: &str, limit: u64, wanted: u64) -> Result<(), WriteError> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let b = budgets.entry(name.to_owned()).or_insert(Budget {
            tokens: limit as f64,
            at: now,
        });
        let per_sec = limit as f64 / 60.0;
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(limit as f64);
        b.at = now;
        if (wanted as f64) > b.tokens {
            let missing = wanted as f64 - b.tokens;
            let retry_after_s = if per_sec > 0.0 {
                (missing / per_sec).ceil() as u64
            } else {
                60
            };
            return Err(WriteError::SeriesBudget {
                name: name.to_owned(),
                limit,
                wanted,
                retry_after_s: retry_after_s.clamp(1, 60),
            });
        }
        b.tokens -= wanted as f64;
        Ok(())
    }
}

/// Refuses a series that names a label twice (before [`canonicalize`] would keep one of
/// the values silently).
fn check_duplicate_names(req: &WriteRequest) -> Result<(), WriteError> {
    for ts in &req.timeseries {
        if let Some(repeated) = remote_write::repeated_label_name(&ts.labels) {
            let name = ts
                .labels
                .iter()
                .find(|x| x.name == METRIC_NAME)
                .map_or("", |x| x.value.as_str());
            return Err(WriteError::Labels(format!(
                "series {name:?}: label {repeated:?} is given more than once (duplicate label names)"
            )));
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

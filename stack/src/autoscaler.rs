//! A local autoscaler that consumes nunchi's scale webhooks: it checks the HMAC signature,
//! drops a request whose idempotency key it has already acted on, and adds or removes
//! feed-app instances (within the fleet's minimum and maximum). `hold` is logged, never
//! acted on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nunchi_model::ScaleAction;
use serde::Deserialize;

use crate::fleet::Fleet;

/// The `scale` object of a scale webhook, as nunchi sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScaleObject {
    /// `scale_out`, `scale_in` or `hold`.
    pub action: ScaleAction,
    /// Instances to add or remove.
    pub step: u32,
    /// The group.
    pub target_group: String,
    /// The value that caused it.
    pub value: Option<f64>,
    /// The threshold it crossed.
    pub threshold: Option<f64>,
    /// Why.
    pub reason: String,
    /// The rule.
    #[serde(default)]
    pub rule: String,
    /// The same for the same decision.
    pub idempotency_key: String,
    /// RFC 3339 end of the cooldown.
    pub cooldown_until: String,
}

/// One request the autoscaler acted on (or held).
#[derive(Debug, Clone)]
pub struct ScaleEvent {
    /// The request.
    pub request: ScaleObject,
    /// When it arrived.
    pub at: Instant,
    /// Instances after acting on it.
    pub size_after: usize,
}

struct Inner {
    fleet: Arc<Fleet>,
    secret: String,
    seen: Mutex<HashSet<String>>,
    events: Mutex<Vec<ScaleEvent>>,
    refused: Mutex<u32>,
}

/// The autoscaler.
#[derive(Clone)]
pub struct Autoscaler(Arc<Inner>);

impl Autoscaler {
    /// Scales `fleet`, accepting requests signed with `secret`.
    pub fn new(fleet: Arc<Fleet>, secret: &str) -> Autoscaler {
        Autoscaler(Arc::new(Inner {
            fleet,
            secret: secret.to_owned(),
            seen: Mutex::new(HashSet::new()),
            events: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
        }))
    }

    /// What it has received, oldest first.
    pub fn events(&self) -> Vec<ScaleEvent> {
        self.0
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests refused for a bad signature or body.
    pub fn refused(&self) -> u32 {
        *self.0.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The autoscaler as an axum app (`POST /scale`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/scale", post(scale))
            .with_state(self.clone())
    }

    fn refuse(&self, status: StatusCode, why: &str) -> Response {
        *self.0.refused.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        tracing::warn!(why, "scale request refused");
        (status, format!("{why}\n")).into_response()
    }
}

async fn scale(State(a): State<Autoscaler>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let signed = h("x-nunchi-timestamp").parse::<i64>().is_ok_and(|ts| {
        nunchi_alerts::notify::verify(&a.0.secret, ts, &body, &h("x-nunchi-signature"))
    });
    if !signed {
        return a.refuse(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let req: ScaleObject = match serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["scale"].clone()).ok())
    {
        Some(r) => r,
        None => return a.refuse(StatusCode::BAD_REQUEST, "no scale object"),
    };
    let fresh =
        a.0.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.idempotency_key.clone());
    if !fresh {
        tracing::info!(key = %req.idempotency_key, "scale request already handled");
        return (StatusCode::OK, "already handled\n").into_response();
    }
    let step = usize::try_from(req.step.max(1)).unwrap_or(1);
    let changed = match req.action {
        ScaleAction::ScaleOut => match a.0.fleet.scale_out(step).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "scale-out failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
            }
        },
        ScaleAction::ScaleIn => a.0.fleet.scale_in(step).await,
        ScaleAction::Hold => 0,
    };
    let size_after = a.0.fleet.size().await;
    tracing::info!(
        action = ?req.action,
        group = %req.target_group,
        value = ?req.value,
        threshold = ?req.threshold,
        reason = %req.reason,
        changed,
        instances = size_after,
        "scale request"
    );
    a.0.events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ScaleEvent {
            request: req,
            at: Instant::now(),
            size_after,
        });
    (StatusCode::OK, "ok\n").into_response()
}

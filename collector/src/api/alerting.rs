//! Alerting endpoints: Prometheus' `/api/v1/rules` and `/api/v1/alerts`, Alertmanager's
//! v2 silences API (`/api/v2/silences`, `/api/v2/silence/{id}`), the delivery log and
//! dead letters (`/api/v1/deliveries`, retry and discard), and `POST /-/reload`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use nunchi_alerts::store::OutboxState;
use nunchi_alerts::{Silence, SilenceMatcher};
use nunchi_model::number::format_exp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, success};
use crate::rules::alerting::ActiveAlert;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn unavailable() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "unavailable",
        message: "alerting is not running".into(),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "alerting API failed");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        message: e.to_string(),
    }
}

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v2/silences", get(silences).post(create_silence))
        .route(
            "/api/v2/silence/{id}",
            delete(expire_silence).get(get_silence),
        )
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/deliveries/{id}/retry", post(retry))
        .route("/api/v1/deliveries/{id}/discard", post(discard))
        .route("/-/reload", post(reload).put(reload))
}

fn alert_json(a: &ActiveAlert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at),
        "value": format_exp(a.value),
    });
    if let Some(k) = a.keep_firing_since {
        v["keepFiringSince"] = json!(rfc3339(k));
    }
    if a.flapping {
        v["flapping"] = json!(true);
    }
    v
}

#[derive(Deserialize)]
struct RulesParams {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn rules(
    State(s): State<Arc<AppState>>,
    Query(p): Query<RulesParams>,
) -> Result<Response, ApiError> {
    let want = match p.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some("alerting"),
        Some("record") => Some("recording"),
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "unsupported type {other:?}: use alert or record"
            )));
        }
    };
    let groups = match &s.alerting {
        Some(a) => a.manager.snapshot().await,
        None => Vec::new(),
    };
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .rules
                .iter()
                .filter(|r| want.is_none_or(|w| w == r.kind))
                .map(|r| {
                    let mut v = if r.kind == "alerting" {
                        json!({
                            "state": r.state.map_or("inactive", |s| s.as_str()),
                            "name": r.name,
                            "query": r.query,
                            "duration": r.duration,
                            "keepFiringFor": r.keep_firing_for,
                            "labels": r.labels,
                            "annotations": r.annotations,
                            "alerts": r.alerts.iter().map(alert_json).collect::<Vec<_>>(),
                        })
                    } else {
                        json!({"name": r.name, "query": r.query, "labels": r.labels})
                    };
                    v["health"] = json!(r.health);
                    if !r.last_error.is_empty() {
                        v["lastError"] = json!(r.last_error);
                    }
                    v["evaluationTime"] = json!(r.evaluation_time);
                    v["lastEvaluation"] = json!(rfc3339(r.last_evaluation));
                    v["type"] = json!(r.kind);
                    if let Some(g) = &r.scale {
                        v["scaleGroup"] = json!(g);
                    }
                    v
                })
                .collect();
            json!({
                "name": g.name,
                "file": g.file,
                "rules": rules,
                "interval": g.interval,
                "limit": g.limit,
                "evaluationTime": g.evaluation_time,
                "lastEvaluation": rfc3339(g.last_evaluation),
            })
        })
        .collect();
    // What the delivery configuration warns of (a Slack credentials file that cannot be
    // read), for the dashboard's Rules page; Prometheus clients ignore the extra key.
    let warnings = s
        .alerting
        .as_ref()
        .map(|a| a.am.config().warnings.clone())
        .unwrap_or_default();
    Ok(success(
        json!({ "groups": groups, "alertingWarnings": warnings }),
    ))
}

async fn alerts(State(s): State<Arc<AppState>>) -> Response {
    let mut out = Vec::new();
    if let Some(a) = &s.alerting {
        for g in a.manager.snapshot().await {
            for r in g.rules {
                out.extend(r.alerts.iter().map(alert_json));
            }
        }
    }
    success(json!({ "alerts": out }))
}

/// A silence as Alertmanager's v2 API writes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<SilenceMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    #[serde(default)]
    comment: String,
}

fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::bad_data(format!("{field}: {v:?} is not an RFC 3339 time: {e}")))
}

fn silence_json(s: &Silence) -> Value {
    let now = nunchi_model::now_ms();
    let state = if s.ends_at <= now {
        "expired"
    } else if s.starts_at > now {
        "pending"
    } else {
        "active"
    };
    json!({
        "id": s.id,
        "status": {"state": state},
        "updatedAt": rfc3339(s.starts_at.min(now)),
        "comment": s.comment,
        "createdBy": s.created_by,
        "startsAt": rfc3339(s.starts_at),
        "endsAt": rfc3339(s.ends_at),
        "matchers": s.matchers,
    })
}

async fn silences(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    Ok(Json(a.am.silences().iter().map(silence_json).collect::<Vec<_>>()).into_response())
}

async fn get_silence(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    match a.am.silences().into_iter().find(|x| x.id == id) {
        Some(x) => Ok(Json(silence_json(&x)).into_response()),
        None => Ok((StatusCode::NOT_FOUND, format!("silence {id} not found\n")).into_response()),
    }
}

async fn create_silence(
    State(s): State<Arc<AppState>>,
    body: Result<Json<PostableSilence>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    let Json(p) = body.map_err(|e| ApiError::bad_data(e.body_text()))?;
    let silence = Silence {
        id: p.id.unwrap_or_default(),
        matchers: p.matchers,
        starts_at: parse_time("startsAt", &p.starts_at)?,
        ends_at: parse_time("endsAt", &p.ends_at)?,
        created_by: p.created_by,
        comment: p.comment,
    };
    match a.am.put_silence(silence).await {
        Ok(id) => Ok(Json(json!({ "silenceID": id })).into_response()),
        Err(nunchi_alerts::AlertsError::Silence(e)) => Err(ApiError::bad_data(e.to_string())),
        Err(e) => Err(internal(e)),
    }
}

async fn expire_silence(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    match a.am.expire_silence(&id).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(nunchi_alerts::AlertsError::NoSuchSilence(_)) => {
            Ok((StatusCode::NOT_FOUND, format!("silence {id} not found\n")).into_response())
        }
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
struct DeliveriesParams {
    limit: Option<i64>,
}

async fn deliveries(
    State(s): State<Arc<AppState>>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    let limit = p.limit.unwrap_or(200).clamp(1, 10_000);
    let store = a.am.store();
    let attempts = store.attempts(limit).await.map_err(internal)?;
    let dead = store
        .outbox(OutboxState::Dead, limit)
        .await
        .map_err(internal)?;
    let pending = store
        .outbox(OutboxState::Pending, limit)
        .await
        .map_err(internal)?;
    let mut cooldowns = BTreeMap::new();
    for h in &a.am.config().scale_hooks {
        for g in &h.groups {
            if let Ok(Some((until, last))) = a.am.cooldown(g).await {
                cooldowns.insert(g.clone(), json!({"until": rfc3339(until), "last": last}));
            }
        }
    }
    Ok(success(json!({
        "attempts": attempts,
        "deadLetters": dead,
        "pending": pending,
        "cooldowns": cooldowns,
    })))
}

async fn retry(State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    match a.am.delivery().retry(id).await.map_err(internal)? {
        true => Ok(success(json!({"id": id, "state": "pending"}))),
        false => Err(ApiError::bad_data(format!("{id} is not a dead letter"))),
    }
}

async fn discard(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    match a.am.delivery().discard(id).await.map_err(internal)? {
        true => Ok(success(json!({"id": id, "state": "discarded"}))),
        false => Err(ApiError::bad_data(format!("{id} is not a dead letter"))),
    }
}

async fn reload(State(s): State<Arc<AppState>>) -> Response {
    let Some(a) = &s.alerting else {
        return (StatusCode::OK, "nothing to reload\n").into_response();
    };
    match a.reload().await {
        Ok(n) => (StatusCode::OK, format!("reloaded: {n} rules\n")).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

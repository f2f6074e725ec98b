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
use nunchi_model::api;
use nunchi_model::number::format_exp;
use nunchi_model::time::rfc3339;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, success};
use crate::rules::alerting::ActiveAlert;

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

fn alert_view(a: &ActiveAlert) -> api::Alert {
    api::Alert {
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        state: a.state.as_str().to_owned(),
        active_at: rfc3339(a.active_at),
        keep_firing_since: a.keep_firing_since.map(rfc3339),
        value: format_exp(a.value),
        flapping: a.flapping,
    }
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
    let groups = groups
        .into_iter()
        .map(|g| api::RuleGroup {
            rules: g
                .rules
                .iter()
                .filter(|r| want.is_none_or(|w| w == r.kind))
                .map(|r| {
                    let alerting = r.kind == "alerting";
                    api::Rule {
                        state: alerting
                            .then(|| r.state.map_or("inactive", |s| s.as_str()).to_owned()),
                        name: r.name.clone(),
                        query: r.query.clone(),
                        duration: alerting.then_some(r.duration),
                        keep_firing_for: alerting.then_some(r.keep_firing_for),
                        labels: r.labels.clone(),
                        annotations: alerting.then(|| r.annotations.clone()),
                        alerts: alerting.then(|| r.alerts.iter().map(alert_view).collect()),
                        health: r.health.to_owned(),
                        last_error: (!r.last_error.is_empty()).then(|| r.last_error.clone()),
                        evaluation_time: r.evaluation_time,
                        last_evaluation: rfc3339(r.last_evaluation),
                        kind: r.kind.to_owned(),
                        scale_group: r.scale.clone(),
                    }
                })
                .collect(),
            name: g.name,
            file: g.file,
            interval: g.interval,
            limit: g.limit as u64,
            evaluation_time: g.evaluation_time,
            last_evaluation: rfc3339(g.last_evaluation),
        })
        .collect();
    // What the delivery configuration warns of (a Slack credentials file that cannot be
    // read), for the dashboard's Rules page; Prometheus clients ignore the extra key.
    let alerting_warnings = s
        .alerting
        .as_ref()
        .map(|a| a.am.config().warnings.clone())
        .unwrap_or_default();
    Ok(success(api::RuleDiscovery {
        groups,
        alerting_warnings,
    }))
}

async fn alerts(State(s): State<Arc<AppState>>) -> Response {
    let mut out = Vec::new();
    if let Some(a) = &s.alerting {
        for g in a.manager.snapshot().await {
            for r in g.rules {
                out.extend(r.alerts.iter().map(alert_view));
            }
        }
    }
    success(api::AlertDiscovery { alerts: out })
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
    nunchi_model::time::parse_rfc3339(v)
        .map_err(|e| ApiError::bad_data(format!("{field}: {v:?} is not an RFC 3339 time: {e}")))
}

fn silence_view(s: &Silence) -> api::GettableSilence {
    let now = nunchi_model::now_ms();
    let state = if s.ends_at <= now {
        "expired"
    } else if s.starts_at > now {
        "pending"
    } else {
        "active"
    };
    api::GettableSilence {
        id: s.id.clone(),
        status: api::SilenceStatus {
            state: state.to_owned(),
        },
        updated_at: rfc3339(s.starts_at.min(now)),
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        starts_at: rfc3339(s.starts_at),
        ends_at: rfc3339(s.ends_at),
        matchers: s.matchers.clone(),
    }
}

async fn silences(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    Ok(Json(a.am.silences().iter().map(silence_view).collect::<Vec<_>>()).into_response())
}

async fn get_silence(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = s.alerting.as_ref().ok_or_else(unavailable)?;
    match a.am.silences().into_iter().find(|x| x.id == id) {
        Some(x) => Ok(Json(silence_view(&x)).into_response()),
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
                cooldowns.insert(
                    g.clone(),
                    api::Cooldown {
                        until: rfc3339(until),
                        last,
                    },
                );
            }
        }
    }
    Ok(success(api::Deliveries {
        attempts,
        dead_letters: dead,
        pending,
        cooldowns,
    }))
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

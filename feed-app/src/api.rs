//! HTTP routes, input validation and request metrics.
//!
//! Identity is the `X-User-Id` header (this is a demonstration service). Every input is
//! validated; errors are JSON `{"error": "..."}` with a 4xx status ([`AppError`]).

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use nunchi_model::now_ms;
use serde::Deserialize;

use crate::AppState;
use crate::error::AppError;
use crate::feed;

/// Longest user name.
pub const MAX_NAME: usize = 32;
/// Longest post text, in characters.
pub const MAX_TEXT: usize = 280;
/// Longest link.
pub const MAX_LINK: usize = 2048;
/// Largest page.
pub const MAX_LIMIT: usize = 100;

/// Days since the Unix epoch (UTC), the unit of DAU.
pub fn today() -> i64 {
    now_ms() / 86_400_000
}

/// The service's router.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/users", post(create_user))
        .route("/api/follows/{user_id}", put(follow).delete(unfollow))
        .route("/api/posts", post(create_post))
        .route("/api/feed", get(read_feed))
        .route("/healthz", get(|| async { "ok\n" }));
    let router = match state.metrics {
        Some(_) => api
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(state.clone(), track)),
        None => api,
    };
    router
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .with_state(state)
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    if let Some(m) = &state.metrics {
        let status = resp.status().as_u16().to_string();
        m.http_requests
            .with_label_values(&[&route, &method, &status])
            .inc();
        if resp.extensions().get::<crate::error::DbFailure>().is_some() {
            m.db_errors.inc();
        }
        m.http_duration
            .with_label_values(&[&route, &method])
            .observe(start.elapsed().as_secs_f64());
    }
    resp
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(m) => {
            let body = m.render(today()).await;
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The acting user from `X-User-Id`, checked to exist; records them as active today.
async fn user(state: &AppState, headers: &HeaderMap) -> Result<i64, AppError> {
    let raw = headers
        .get("x-user-id")
        .ok_or_else(|| AppError::Unauthorized("missing X-User-Id header".into()))?
        .to_str()
        .map_err(|_| AppError::Unauthorized("X-User-Id must be a number".into()))?;
    let id: i64 = raw
        .trim()
        .parse()
        .map_err(|_| AppError::Unauthorized("X-User-Id must be a number".into()))?;
    if id <= 0 {
        return Err(AppError::Unauthorized("X-User-Id must be positive".into()));
    }
    let day = today();
    if !state.seen_active.contains_key(&(id, day)) {
        if !state.db.user_exists(id).await? {
            return Err(AppError::Unauthorized(format!("user {id} does not exist")));
        }
        state.db.record_activity(id, day).await?;
        state.seen_active.insert((id, day), ());
    }
    Ok(id)
}

fn json_error(e: JsonRejection) -> AppError {
    AppError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
}

async fn create_user(
    State(state): State<AppState>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(u) = body.map_err(json_error)?;
    let name = u.name.trim();
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(AppError::BadRequest(format!(
            "name must be 1 to {MAX_NAME} characters of letters, digits, '_' or '-'"
        )));
    }
    match state.db.create_user(name, now_ms()).await? {
        Some(id) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": id, "name": name })),
        )
            .into_response()),
        None => Err(AppError::Conflict(format!("name {name:?} is taken"))),
    }
}

/// The acting user and the user named in the path.
async fn parties(state: &AppState, headers: &HeaderMap, raw: &str) -> Result<(i64, i64), AppError> {
    let me = user(state, headers).await?;
    let them = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            AppError::BadRequest(format!("user id {raw:?} is not a positive integer"))
        })?;
    Ok((me, them))
}

async fn follow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, AppError> {
    let (me, them) = parties(&state, &headers, &raw).await?;
    if me == them {
        return Err(AppError::BadRequest("you cannot follow yourself".into()));
    }
    if !state.db.user_exists(them).await? {
        return Err(AppError::NotFound(format!("user {them} does not exist")));
    }
    if !state
        .db
        .follow(me, them, state.config.max_follows, now_ms())
        .await?
    {
        return Err(AppError::Limit(format!(
            "you already follow the maximum of {} users",
            state.config.max_follows
        )));
    }
    state.cache.invalidate_user(me).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unfollow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, AppError> {
    let (me, them) = parties(&state, &headers, &raw).await?;
    state.db.unfollow(me, them).await?;
    state.cache.invalidate_user(me).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    text: String,
    link: Option<String>,
}

async fn create_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewPost>, JsonRejection>,
) -> Result<Response, AppError> {
    let me = user(&state, &headers).await?;
    let Json(p) = body.map_err(json_error)?;
    let chars = p.text.chars().count();
    if p.text.trim().is_empty() || chars > MAX_TEXT {
        return Err(AppError::BadRequest(format!(
            "text must be 1 to {MAX_TEXT} characters"
        )));
    }
    if let Some(link) = &p.link {
        let ok = link.len() <= MAX_LINK
            && url::Url::parse(link).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(AppError::BadRequest(format!(
                "link must be an http(s) URL of at most {MAX_LINK} bytes"
            )));
        }
    }
    let post = state
        .db
        .create_post(me, &p.text, p.link.as_deref(), now_ms())
        .await?;
    state.cache.set_posts(std::slice::from_ref(&post)).await?;
    state.fanout.enqueue(&post).await;
    if let Some(m) = &state.metrics {
        m.posts.inc();
    }
    Ok((StatusCode::CREATED, Json(post)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    limit: Option<usize>,
    cursor: Option<i64>,
}

async fn read_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<feed::Page>, AppError> {
    let me = user(&state, &headers).await?;
    let Query(q) =
        query.map_err(|e| AppError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if q.cursor.is_some_and(|c| c <= 0) {
        return Err(AppError::BadRequest(
            "cursor must be a positive post id".into(),
        ));
    }
    let page = feed::read(&state, me, q.cursor, limit).await?;
    if let Some(m) = &state.metrics {
        m.feed_reads.inc();
    }
    Ok(Json(page))
}

//! The one error type of the HTTP API. Clients get a status and a JSON body
//! `{"error": "..."}`; internal failures are logged with their cause and answered with a
//! generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::cache::CacheError;
use crate::db::DbError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// No `X-User-Id` header, or not a user.
    #[error("{0}")]
    Unauthorized(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with current state (a taken name).
    #[error("{0}")]
    Conflict(String),
    /// A limit was reached (the follow limit).
    #[error("{0}")]
    Limit(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Marks a response caused by a database failure, so the metrics middleware counts it in
/// `feed_db_errors_total`.
#[derive(Debug, Clone, Copy)]
pub struct DbFailure;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            AppError::Limit(m) => (StatusCode::UNPROCESSABLE_ENTITY, m.clone()),
            AppError::Db(e) => {
                tracing::error!(error = %e, "database error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable".to_owned(),
                )
            }
            AppError::Cache(e) => {
                tracing::error!(error = %e, "cache error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache unavailable".to_owned(),
                )
            }
        };
        let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, AppError::Db(_)) {
            resp.extensions_mut().insert(DbFailure);
        }
        resp
    }
}

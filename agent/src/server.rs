//! The agent's HTTP server: `/metrics` (the registry in the text exposition format) and
//! `/-/healthy`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::host::HostCollector;

#[derive(Clone)]
struct Sources {
    registries: Vec<Registry>,
    host: Arc<HostCollector>,
}

/// The router: `GET /metrics` (host metrics, then the agent's own), `GET /-/healthy`.
pub fn app(registries: Vec<Registry>, host: Arc<HostCollector>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .with_state(Sources { registries, host })
}

async fn metrics(State(src): State<Sources>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(32 * 1024);
    let mut families = src.host.collect();
    for r in &src.registries {
        families.extend(r.gather());
    }
    match encoder.encode(&families, &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode /metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain".to_owned())],
                b"cannot encode metrics\n".to_vec(),
            )
        }
    }
}

//! A small round-robin HTTP load balancer in front of the feed-app instances.
//!
//! Backends are added when an instance is ready and removed before it is stopped, so no
//! request goes to an instance that is starting or draining. `GET /-/backends` lists them
//! with the requests each has served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(Default)]
struct Backends {
    list: Vec<(String, u64)>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer::new()
    }
}

/// The balancer's backend list, shared with the fleet that changes it.
#[derive(Clone)]
pub struct Balancer {
    backends: Arc<Mutex<Backends>>,
    next: Arc<AtomicUsize>,
    client: reqwest::Client,
}

impl Balancer {
    /// An empty balancer.
    pub fn new() -> Balancer {
        Balancer {
            backends: Arc::default(),
            next: Arc::default(),
            client: crate::http_client(),
        }
    }

    /// Starts sending requests to `url` (`http://host:port`).
    pub fn add(&self, url: &str) {
        let mut b = self.lock();
        if !b.list.iter().any(|(u, _)| u == url) {
            b.list.push((url.to_owned(), 0));
        }
    }

    /// Stops sending requests to `url`.
    pub fn remove(&self, url: &str) {
        self.lock().list.retain(|(u, _)| u != url);
    }

    /// The backends and the requests each has served.
    pub fn backends(&self) -> Vec<(String, u64)> {
        self.lock().list.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backends> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self) -> Option<String> {
        let mut b = self.lock();
        if b.list.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % b.list.len();
        b.list[i].1 += 1;
        Some(b.list[i].0.clone())
    }

    /// The balancer as an axum app.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/-/backends",
                get(|State(b): State<Balancer>| async move {
                    axum::Json(
                        b.backends()
                            .into_iter()
                            .map(|(url, served)| serde_json::json!({"url": url, "served": served}))
                            .collect::<Vec<_>>(),
                    )
                }),
            )
            .fallback(forward)
            .with_state(self.clone())
    }
}

/// Headers a proxy passes on (RFC 9110: not hop-by-hop, not the ones it recomputes).
fn end_to_end(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

async fn forward(
    State(b): State<Balancer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(backend) = b.pick() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no backend is up\n").into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = b.client.request(method, format!("{backend}{path}"));
    for (name, value) in headers.iter().filter(|(n, _)| end_to_end(n.as_str())) {
        req = req.header(name, value);
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let mut out = HeaderMap::new();
            for (name, value) in r.headers().iter().filter(|(n, _)| end_to_end(n.as_str())) {
                out.append(name, value.clone());
            }
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            *resp.headers_mut() = out;
            resp
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{backend}: {e}\n")).into_response(),
    }
}

//! Serving the dashboard from an axum server (the collector): server-rendered pages, the
//! browser bundle, the stylesheet and the `/live` tick stream.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tower_http::services::ServeDir;

use crate::api::Api;
use crate::{App, shell};

/// The stylesheet (light and dark themes).
pub const CSS: &str = include_str!("../style/nunchi.css");
const FAVICON: &str = include_str!("../style/favicon.svg");
/// How often `/live` ticks.
pub const TICK: Duration = Duration::from_secs(1);

/// The bundle's file names inside the assets directory.
pub const BUNDLE_FILES: [&str; 2] = ["nunchi_dashboard.js", "nunchi_dashboard_bg.wasm"];

/// True when `dir` holds the browser bundle.
pub fn has_bundle(dir: &std::path::Path) -> bool {
    BUNDLE_FILES.iter().all(|f| dir.join(f).is_file())
}

/// The dashboard's routes. `api` is the collector's API router, which pages query in
/// process while rendering; `assets` the directory of the browser bundle (served at
/// `/pkg`).
pub fn router(api: Router, assets: PathBuf) -> Router {
    let options = LeptosOptions::builder()
        .output_name("nunchi_dashboard")
        .site_pkg_dir("pkg")
        .site_root(assets.display().to_string())
        .build();
    let routes = generate_route_list(App);
    let api = Api::new(api);
    Router::new()
        .route(
            "/static/nunchi.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/static/favicon.svg",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], FAVICON) }),
        )
        .route("/live", get(live))
        .nest_service("/pkg", ServeDir::new(assets).precompressed_gzip())
        .leptos_routes_with_context(&options, routes, move || provide_context(api.clone()), {
            let options = options.clone();
            move || shell(options.clone())
        })
        .with_state(options)
}

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// `/live` streams open now (browsers with a visible, unpaused dashboard tab).
pub fn open_streams() -> usize {
    OPEN_STREAMS.load(Ordering::Relaxed)
}

/// Counts a stream as open while it lives.
struct Open;

impl Open {
    fn new() -> Open {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `tick` events, the first at once, then every [`TICK`]; the stream ends when the
/// browser closes it.
async fn live() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let open = Arc::new(Open::new());
    let ticks = futures_util::stream::unfold((true, open), |(first, open)| async move {
        if !first {
            tokio::time::sleep(TICK).await;
        }
        let e = Event::default()
            .event("tick")
            .data(nunchi_model::now_ms().to_string());
        Some((Ok(e), (false, open)))
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}

//! The dashboard, served next to the API: pages rendered by `nunchi-dashboard`, which read
//! their data from the API router in process, and the browser bundle from a directory.

use std::path::{Path, PathBuf};

use axum::Router;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Registry};

use crate::config::CollectorConfig;

/// `nunchi_dashboard_live_streams`, read when `/metrics` is scraped.
struct LiveStreams(IntGauge);

impl Collector for LiveStreams {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0
            .set(i64::try_from(nunchi_dashboard::ssr::open_streams()).unwrap_or(i64::MAX));
        self.0.collect()
    }
}

/// Registers the dashboard's self-metrics.
pub fn register_metrics(registry: &Registry) -> prometheus::Result<()> {
    let gauge = IntGauge::new(
        "nunchi_dashboard_live_streams",
        "Dashboard tabs with an open live stream (visible and not paused).",
    )?;
    registry.register(Box::new(LiveStreams(gauge)))
}

/// Where the browser bundle is looked for.
pub fn assets_dir(c: &CollectorConfig) -> PathBuf {
    if let Some(d) = &c.dashboard_assets {
        return d.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("dashboard/pkg")
}

/// The API and the dashboard in one router.
pub fn app(api: Router, assets: PathBuf) -> Router {
    if nunchi_dashboard::ssr::has_bundle(&assets) {
        tracing::info!(assets = %assets.display(), "dashboard bundle found");
    } else {
        tracing::warn!(
            assets = %assets.display(),
            "dashboard bundle not found: pages are served without interactivity; run scripts/build-dashboard"
        );
    }
    api.clone()
        .merge(nunchi_dashboard::ssr::router(api, assets))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::api::panicked,
        ))
}

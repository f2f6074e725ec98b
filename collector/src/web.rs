//! The dashboard, served next to the API: pages rendered by `nunchi-dashboard`, which read
//! their data from the API router in process, and the browser bundle from a directory.

use std::path::{Path, PathBuf};

use axum::Router;

use crate::config::CollectorConfig;

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
}

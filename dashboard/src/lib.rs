//! The nunchi dashboard, a Leptos app for operators: fleet, host, service, alerts, rules,
//! deliveries and an explore page.
//!
//! The `ssr` feature renders pages on the server (linked into the collector, see [`ssr`]);
//! the `hydrate` feature is compiled to wasm32 and makes the rendered pages interactive
//! (`scripts/build-dashboard` builds it). The two are never built together.
//!
//! Every figure comes from the collector's Prometheus HTTP API ([`api`]): on the server the
//! API router is called in process, in the browser over HTTP. A server-sent event stream
//! (`/live`) ticks once a second; each page refetches its queries on a tick while the tab is
//! visible. State that a link should carry (time range, filters, query) lives in the URL.
#![recursion_limit = "512"]

pub mod api;
pub mod app;
pub mod chart;
pub mod format;
pub mod live;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ssr;

pub use app::{App, shell};

/// Browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // When the page became interactive, for measurements (`window.nunchiHydratedAt`, ms
    // since navigation start).
    if let Some(w) = web_sys::window() {
        let at = w.performance().map(|p| p.now()).unwrap_or_default();
        let _ = js_sys::Reflect::set(&w, &"nunchiHydratedAt".into(), &at.into());
    }
}

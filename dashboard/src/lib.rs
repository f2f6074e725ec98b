//! The nunchi dashboard, a Leptos app: the `ssr` feature is linked into the collector and
//! the `hydrate` feature is compiled to wasm32 for the browser.
//!
//! This crate has no functionality yet; it is filled by the dashboard work.

//! The nunchi collector: receives remote_write, stores series, answers the Prometheus
//! HTTP API, evaluates rules and serves the dashboard.
//!
//! This crate has no functionality yet; its ingest, storage, query and rule modules land
//! with the collector's own work.

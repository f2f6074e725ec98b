//! Alert delivery for nunchi, in Alertmanager's model: routing, grouping, silences,
//! inhibition, repeat intervals, and notifiers for Slack and signed webhooks.
//!
//! This crate has no functionality yet; it is filled by the alerting work.

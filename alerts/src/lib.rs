//! Alert delivery for nunchi, in Alertmanager's model: configuration in Alertmanager's own
//! YAML ([`config`]), the routing tree ([`route`]), grouping with `group_wait`,
//! `group_interval` and `repeat_interval` ([`dispatch`]), [`silence`]s, inhibition
//! ([`inhibit`]), and notifiers for Slack, webhooks and scale hooks ([`notify`]) behind a
//! durable outbox with retries and dead letters ([`delivery`], [`store`]).
//!
//! The crate has no HTTP server: the collector feeds it alerts from its rule evaluator and
//! exposes its state on its API.

pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod inhibit;
pub mod matcher;
pub mod notify;
pub mod route;
pub mod silence;
pub mod store;

pub use config::{Config, ConfigError};
pub use delivery::DeliveryOptions;
pub use dispatch::{Alertmanager, AlertsError, GroupView, ScaleOutcome};
pub use silence::{Silence, SilenceMatcher};
pub use store::{Store, StoreError};

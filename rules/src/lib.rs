//! Rules: Prometheus rule files ([`file`]), annotation templates ([`template`]), alerting
//! rule state ([`alerting`]) and the manager that evaluates groups, writes recorded series
//! and `ALERTS`, hands alerts to delivery and reloads files ([`manager`]).

pub mod alerting;
pub mod file;
pub mod manager;
pub mod template;

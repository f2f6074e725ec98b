//! The manager's rules and alerts as `/api/v1/rules` and `/api/v1/alerts` show them.

use std::collections::BTreeMap;

use nunchi_model::AlertState;
use serde::Serialize;

use super::{Manager, RuleRun};
use crate::alerting::ActiveAlert;
use crate::file::RuleKind;

impl Manager {
    /// Every group's rules as `/api/v1/rules` shows them.
    pub async fn snapshot(&self) -> Vec<GroupView> {
        let groups: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(g, _)| g.clone())
            .collect();
        let mut out = Vec::new();
        for g in groups {
            let g = g.lock().await;
            out.push(GroupView {
                name: g.name.clone(),
                file: g.file.display().to_string(),
                interval: g.interval.as_secs_f64(),
                limit: g.limit,
                evaluation_time: g.health.duration.as_secs_f64(),
                last_evaluation: g.health.last_evaluation,
                rules: g
                    .rules
                    .iter()
                    .map(|r| {
                        let rule = r.rule();
                        let h = r.health();
                        let (kind, state, alerts, duration, keep, annotations) =
                            match (r, &rule.kind) {
                                (
                                    RuleRun::Alerting(a, _),
                                    RuleKind::Alerting {
                                        for_,
                                        keep_firing_for,
                                        annotations,
                                        ..
                                    },
                                ) => {
                                    let mut alerts: Vec<ActiveAlert> = a
                                        .alerts
                                        .values()
                                        .filter(|x| x.state != AlertState::Inactive || x.flapping)
                                        .cloned()
                                        .collect();
                                    alerts.sort_by(|x, y| x.labels.cmp(&y.labels));
                                    (
                                        "alerting",
                                        Some(a.state()),
                                        alerts,
                                        for_.as_secs_f64(),
                                        keep_firing_for.as_secs_f64(),
                                        annotations.clone(),
                                    )
                                }
                                _ => ("recording", None, Vec::new(), 0.0, 0.0, BTreeMap::new()),
                            };
                        RuleView {
                            name: rule.name().to_owned(),
                            query: rule.expr_text.clone(),
                            kind,
                            state,
                            duration,
                            keep_firing_for: keep,
                            labels: rule.labels.clone(),
                            annotations,
                            alerts,
                            health: match (&h.last_error, h.last_evaluation) {
                                (Some(_), _) => "err",
                                (None, 0) => "unknown",
                                _ => "ok",
                            },
                            last_error: h.last_error.clone().unwrap_or_default(),
                            evaluation_time: h.duration.as_secs_f64(),
                            last_evaluation: h.last_evaluation,
                            scale: rule.scale.as_ref().map(|s| s.group.clone()),
                        }
                    })
                    .collect(),
            });
        }
        out
    }
}

/// A group as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Name.
    pub name: String,
    /// File.
    pub file: String,
    /// Interval (s).
    pub interval: f64,
    /// Series limit per rule.
    pub limit: usize,
    /// Last evaluation's duration (s).
    pub evaluation_time: f64,
    /// Last evaluation (ms).
    pub last_evaluation: i64,
    /// Rules.
    pub rules: Vec<RuleView>,
}

/// A rule as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// Name.
    pub name: String,
    /// Expression.
    pub query: String,
    /// `alerting` or `recording`.
    pub kind: &'static str,
    /// State (alerting rules).
    pub state: Option<AlertState>,
    /// `for` (s).
    pub duration: f64,
    /// `keep_firing_for` (s).
    pub keep_firing_for: f64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
    /// Pending and firing alerts.
    pub alerts: Vec<ActiveAlert>,
    /// `ok`, `err` or `unknown`.
    pub health: &'static str,
    /// The last error.
    pub last_error: String,
    /// Last evaluation's duration (s).
    pub evaluation_time: f64,
    /// Last evaluation (ms).
    pub last_evaluation: i64,
    /// Target group, for scaling rules.
    pub scale: Option<String>,
}

//! One alerting rule's alerts and their states, as Prometheus defines them: a label set in
//! the query result becomes pending; pending for `for` it fires; absent from the result it
//! resolves (a pending one is dropped), unless `keep_firing_for` keeps it firing. Resolved
//! alerts are kept for 15 minutes so their resolution is delivered.
//!
//! With nunchi's extensions, a firing alert also stays firing while the rule's clear
//! comparison still holds for it (hysteresis), and an alert that changes state too often
//! is marked flapping and presented as firing until it has been stable for the window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use nunchi_model::{Alert, AlertState, fingerprint};
use serde::{Deserialize, Serialize};

use super::file::{Rule, RuleKind};
use super::template::{self, Data};

/// How long resolved alerts are kept (and re-sent).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// One alert of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// Value at the last evaluation.
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    /// When it started firing (ms).
    pub fired_at: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at: Option<i64>,
    /// Since when `keep_firing_for` has kept it firing (ms).
    pub keep_firing_since: Option<i64>,
    /// Whether the resolution has been handed to delivery.
    pub resolved_sent: bool,
    /// Times it changed between firing and resolved, within the flap window (ms).
    pub changes: Vec<i64>,
    /// Held as firing because it flaps.
    pub flapping: bool,
}

/// The evaluation result of a rule's query: label sets (without `__name__`) and values.
pub type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// An alerting rule with its alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    /// The rule.
    pub rule: Rule,
    /// Alerts by fingerprint.
    pub alerts: HashMap<u64, ActiveAlert>,
}

impl AlertingRule {
    /// A rule with no alerts.
    pub fn new(rule: Rule) -> AlertingRule {
        AlertingRule {
            rule,
            alerts: HashMap::new(),
        }
    }

    fn name(&self) -> &str {
        self.rule.name()
    }

    fn labels_for(
        &self,
        sample: &BTreeMap<String, String>,
        value: f64,
        ext: &BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let data = Data {
            labels: sample,
            value,
            external_labels: ext,
        };
        let mut labels = sample.clone();
        for (k, t) in &self.rule.labels {
            labels.insert(k.clone(), template::expand(t, &data));
        }
        labels.insert("alertname".to_owned(), self.name().to_owned());
        let annotations = match &self.rule.kind {
            RuleKind::Alerting { annotations, .. } => annotations
                .iter()
                .map(|(k, t)| (k.clone(), template::expand(t, &data)))
                .collect(),
            RuleKind::Recording { .. } => BTreeMap::new(),
        };
        (labels, annotations)
    }

    /// Whether any alert is firing.
    pub fn any_firing(&self) -> bool {
        self.alerts.values().any(|a| a.state == AlertState::Firing)
    }

    /// The rule's state: firing if any alert fires, else pending if any is pending.
    pub fn state(&self) -> AlertState {
        let mut s = AlertState::Inactive;
        for a in self.alerts.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => s = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        s
    }

    /// Applies one evaluation at `ts` (ms): `result` is the query's answer, `clear` the
    /// answer of the clear comparison (hysteresis), if the rule has one.
    pub fn eval(
        &mut self,
        ts: i64,
        result: &Samples,
        clear: Option<&Samples>,
        ext: &BTreeMap<String, String>,
    ) {
        let (for_, keep) = match &self.rule.kind {
            RuleKind::Alerting {
                for_,
                keep_firing_for,
                ..
            } => (*for_, *keep_firing_for),
            RuleKind::Recording { .. } => (Duration::ZERO, Duration::ZERO),
        };
        let mut seen = HashSet::new();
        for (sample, value) in result {
            let (labels, annotations) = self.labels_for(sample, *value, ext);
            let fp = fingerprint(&labels);
            seen.insert(fp);
            match self.alerts.get_mut(&fp) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = *value;
                    a.annotations = annotations;
                    a.keep_firing_since = None;
                }
                old => {
                    let (changes, flapping, fired_at) = old
                        .map(|o| (std::mem::take(&mut o.changes), o.flapping, o.fired_at))
                        .unwrap_or_default();
                    self.alerts.insert(
                        fp,
                        ActiveAlert {
                            labels,
                            annotations,
                            state: AlertState::Pending,
                            value: *value,
                            active_at: ts,
                            fired_at: if flapping { fired_at } else { None },
                            resolved_at: None,
                            keep_firing_since: None,
                            resolved_sent: false,
                            changes,
                            flapping,
                        },
                    );
                }
            }
        }
        let held: HashMap<u64, f64> = clear
            .map(|c| {
                c.iter()
                    .map(|(s, v)| (fingerprint(&self.labels_for(s, *v, ext).0), *v))
                    .collect()
            })
            .unwrap_or_default();
        let flap = self.rule.flap;
        let mut drop = Vec::new();
        for (fp, a) in &mut self.alerts {
            if seen.contains(fp) {
                continue;
            }
            match a.state {
                AlertState::Pending => drop.push(*fp),
                AlertState::Inactive => {
                    let stable = flap.is_none_or(|(w, _)| {
                        a.changes
                            .last()
                            .is_none_or(|t| ts - t > w.as_millis() as i64)
                    });
                    if stable && a.flapping {
                        a.flapping = false;
                        a.resolved_sent = false;
                    }
                    if a.resolved_at
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                        && !a.flapping
                    {
                        drop.push(*fp);
                    }
                }
                AlertState::Firing => {
                    if let Some(v) = held.get(fp) {
                        a.value = *v;
                        continue;
                    }
                    if !keep.is_zero() {
                        let since = *a.keep_firing_since.get_or_insert(ts);
                        if ts - since < keep.as_millis() as i64 {
                            continue;
                        }
                    }
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                    a.resolved_sent = false;
                    a.keep_firing_since = None;
                    a.changes.push(ts);
                }
            }
        }
        for fp in drop {
            self.alerts.remove(&fp);
        }
        for a in self.alerts.values_mut() {
            if a.state == AlertState::Pending && ts - a.active_at >= for_.as_millis() as i64 {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
                a.changes.push(ts);
            }
            if let Some((window, max)) = flap {
                let w = window.as_millis() as i64;
                a.changes.retain(|t| ts - t <= w);
                if a.changes.len() > max as usize && !a.flapping {
                    tracing::warn!(alert = %a.labels.get("alertname").map_or("", String::as_str), changes = a.changes.len(), "alert is flapping; held firing until stable");
                    a.flapping = true;
                }
            } else {
                a.changes.clear();
            }
        }
    }

    /// The alerts to hand to delivery after an evaluation at `ts`: firing (or flapping)
    /// ones valid until `valid_until`, and resolutions not yet sent.
    pub fn to_send(&mut self, ts: i64, valid_until: i64, generator_url: &str) -> Vec<Alert> {
        let threshold = self.rule.comparison.as_ref().map(|c| c.threshold);
        let mut out = Vec::new();
        for a in self.alerts.values_mut() {
            let firing = a.state == AlertState::Firing || (a.flapping && a.fired_at.is_some());
            let ends_at = if firing {
                valid_until
            } else if a.state == AlertState::Inactive && !a.resolved_sent && a.fired_at.is_some() {
                a.resolved_sent = true;
                a.resolved_at.unwrap_or(ts)
            } else {
                continue;
            };
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.fired_at.unwrap_or(a.active_at),
                ends_at,
                generator_url: generator_url.to_owned(),
                value: a.value,
                threshold,
                flapping: a.flapping,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rule(extra: &str) -> AlertingRule {
        let text = format!(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n{extra}"
        );
        let f =
            super::super::file::parse(Path::new("r.yml"), &text).unwrap_or_else(|e| panic!("{e}"));
        AlertingRule::new(f.groups[0].rules[0].clone())
    }

    fn s(v: f64) -> Samples {
        vec![([("instance".to_string(), "a".to_string())].into(), v)]
    }

    fn state(r: &AlertingRule) -> Option<AlertState> {
        r.alerts.values().next().map(|a| a.state)
    }

    #[test]
    fn pending_for_then_firing_then_resolved_as_prometheus() {
        let ext = BTreeMap::new();
        let mut r = rule("        for: 2s\n");
        r.eval(0, &s(5.0), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Pending));
        r.eval(1000, &s(5.0), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Pending));
        r.eval(2000, &s(5.0), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Firing));
        let sent = r.to_send(2000, 62_000, "");
        assert_eq!(
            (sent.len(), sent[0].starts_at, sent[0].ends_at),
            (1, 2000, 62_000)
        );
        assert_eq!(
            sent[0].labels.get("alertname").map(String::as_str),
            Some("A")
        );
        r.eval(3000, &Vec::new(), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Inactive));
        let sent = r.to_send(3000, 63_000, "");
        assert_eq!(sent[0].ends_at, 3000, "the resolution is sent once");
        assert!(r.to_send(4000, 64_000, "").is_empty());
        r.eval(3000 + RESOLVED_RETENTION_MS + 1, &Vec::new(), None, &ext);
        assert!(r.alerts.is_empty(), "dropped after the retention");
        // Pending alerts that stop holding are dropped, not resolved.
        r.eval(10_000_000, &s(5.0), None, &ext);
        r.eval(10_001_000, &Vec::new(), None, &ext);
        assert!(r.alerts.is_empty());
    }

    #[test]
    fn keep_firing_for_and_clear_threshold() {
        let ext = BTreeMap::new();
        let mut r = rule("        keep_firing_for: 3s\n");
        r.eval(0, &s(5.0), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Firing));
        r.eval(1000, &Vec::new(), None, &ext);
        r.eval(3000, &Vec::new(), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Firing), "kept firing for 3s");
        r.eval(4000, &Vec::new(), None, &ext);
        assert_eq!(state(&r), Some(AlertState::Inactive));

        let mut h = rule("        clear_threshold: 0.5\n");
        h.eval(0, &s(5.0), None, &ext);
        h.eval(1000, &Vec::new(), Some(&s(0.8)), &ext);
        assert_eq!(
            state(&h),
            Some(AlertState::Firing),
            "0.8 is above the clear threshold"
        );
        assert_eq!(h.alerts.values().next().map(|a| a.value), Some(0.8));
        h.eval(2000, &Vec::new(), Some(&Vec::new()), &ext);
        assert_eq!(state(&h), Some(AlertState::Inactive));
    }

    #[test]
    fn flapping_is_held_firing_until_stable() {
        let ext = BTreeMap::new();
        let mut r = rule("        flap_window: 10s\n        flap_max_changes: 2\n");
        for (i, v) in [5.0, 0.0, 5.0, 0.0].into_iter().enumerate() {
            let res = if v > 1.0 { s(v) } else { Vec::new() };
            r.eval(i as i64 * 1000, &res, None, &ext);
        }
        let a = r.alerts.values().next().cloned().expect("alert");
        assert!(a.flapping);
        assert_eq!(a.state, AlertState::Inactive);
        let sent = r.to_send(3000, 60_000, "");
        assert_eq!(sent[0].ends_at, 60_000, "held firing");
        r.eval(14_000, &Vec::new(), None, &ext);
        let sent = r.to_send(14_000, 74_000, "");
        assert!(!r.alerts.values().next().is_some_and(|a| a.flapping));
        assert_eq!(sent[0].ends_at, 3000, "resolved once stable");
    }
}

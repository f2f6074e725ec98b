//! The rule manager: loads rule files (paths and globs), evaluates each group on its own
//! interval, writes recorded series and `ALERTS` / `ALERTS_FOR_STATE` (with staleness
//! markers when they end), hands alerts and scale requests to delivery through
//! [`Notify`], and saves alert state after every evaluation that changed it, so pending
//! timers, `keep_firing_for` and flapping survive a restart.
//!
//! Reload ([`Manager::reload`]) reads every file first; if one is broken, the error is
//! returned and the rules already running keep running. Rules that survive a reload (same
//! group, name and expression) keep their alerts.
//!
//! Scaling rules never scale on missing data: when the rule's query fails, or the operand
//! of its comparison returns nothing (absent or stale series), a `hold` with the reason is
//! sent instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nunchi_model::{
    AlertState, Labels, STALE_NAN_BITS, Sample, ScaleAction, ScaleRequest, Series, now_ms,
};
use promql_parser::parser::Expr;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::alerting::{ActiveAlert, AlertingRule, Samples};
use super::file::{self, Rule, RuleFileError, RuleKind};
use nunchi_promql::{QueryError, QueryLimits, QueryResult};

mod ports;
mod view;
pub use view::{GroupView, RuleView};

pub use ports::{Appendable, Notify, Queryable, StateStore};

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Rule files: paths or glob patterns.
    pub files: Vec<String>,
    /// Interval of groups that set none.
    pub default_interval: Duration,
    /// Base URL for `generatorURL` links.
    pub external_url: String,
    /// Query limits for rule evaluation.
    pub limits: QueryLimits,
    /// Labels added to template data as `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
}

/// A reload that failed: the old rules keep running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A pattern does not parse.
    #[error("rule file pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A file is broken.
    #[error(transparent)]
    File(#[from] RuleFileError),
}

/// Health of a rule's last evaluation.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When (ms), 0 before the first.
    pub last_evaluation: i64,
    /// How long it took.
    pub duration: Duration,
    /// The error, if it failed.
    pub last_error: Option<String>,
}

enum RuleRun {
    Alerting(AlertingRule, Health),
    Recording(Rule, Health, HashSet<Labels>),
}

impl RuleRun {
    fn rule(&self) -> &Rule {
        match self {
            RuleRun::Alerting(a, _) => &a.rule,
            RuleRun::Recording(r, _, _) => r,
        }
    }
    fn health(&self) -> &Health {
        match self {
            RuleRun::Alerting(_, h) | RuleRun::Recording(_, h, _) => h,
        }
    }
}

struct GroupRun {
    file: PathBuf,
    name: String,
    interval: Duration,
    limit: usize,
    rules: Vec<RuleRun>,
    health: Health,
    alert_series: HashSet<Labels>,
    saved: HashMap<String, String>,
}

impl GroupRun {
    fn key(&self, i: usize) -> String {
        rule_key(&self.file, &self.name, i, self.rules[i].rule().name())
    }
}

/// The key a rule's saved state is stored under.
fn rule_key(file: &std::path::Path, group: &str, index: usize, name: &str) -> String {
    format!("{}|{group}|{index}|{name}", file.display())
}

/// A group and the task evaluating it.
type RunningGroup = (Arc<Mutex<GroupRun>>, JoinHandle<()>);

/// The rule manager.
pub struct Manager {
    queryable: Arc<dyn Queryable>,
    appendable: Arc<dyn Appendable>,
    notify: Arc<dyn Notify>,
    state: Option<Arc<dyn StateStore>>,
    opts: ManagerOptions,
    groups: RwLock<Vec<RunningGroup>>,
    reload_lock: Mutex<()>,
    last_reload: RwLock<(i64, Option<String>)>,
    shutdown: watch::Receiver<bool>,
    wake: Arc<tokio::sync::Notify>,
}

fn samples_of(r: QueryResult) -> Result<Samples, String> {
    match r {
        QueryResult::Vector(_, v) => Ok(v
            .into_iter()
            .map(|e| {
                let labels = e
                    .labels
                    .iter()
                    .filter(|l| l.name != nunchi_model::METRIC_NAME)
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                (labels, e.value)
            })
            .collect()),
        QueryResult::Scalar(_, v) => Ok(vec![(BTreeMap::new(), v)]),
        other => Err(format!(
            "rule result is not a vector or scalar: {}",
            match other {
                QueryResult::String(..) => "string",
                _ => "matrix",
            }
        )),
    }
}

impl Manager {
    /// A manager with no groups yet; call [`Manager::reload`] to load the files.
    pub fn new(
        queryable: Arc<dyn Queryable>,
        appendable: Arc<dyn Appendable>,
        notify: Arc<dyn Notify>,
        state: Option<Arc<dyn StateStore>>,
        opts: ManagerOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            queryable,
            appendable,
            notify,
            state,
            opts,
            groups: RwLock::new(Vec::new()),
            reload_lock: Mutex::new(()),
            last_reload: RwLock::new((0, None)),
            shutdown,
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Tells the groups that new samples were stored: each evaluates early, but no sooner
    /// than a quarter of its interval after its last evaluation. A breaching sample is so
    /// seen within about that quarter instead of a whole interval.
    pub fn samples_arrived(&self) {
        self.wake.notify_waiters();
    }

    /// The rule files the patterns name now.
    fn paths(&self) -> Result<Vec<PathBuf>, ReloadError> {
        let mut out = Vec::new();
        for p in &self.opts.files {
            if p.contains(['*', '?', '[']) {
                let paths = glob::glob(p).map_err(|e| ReloadError::Pattern {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })?;
                let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                found.sort();
                out.extend(found);
            } else {
                out.push(PathBuf::from(p));
            }
        }
        Ok(out)
    }

    /// (Re)loads every rule file. On an error nothing changes and the error is returned.
    pub async fn reload(self: &Arc<Self>) -> Result<usize, ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let result = self.reload_inner().await;
        *self.last_reload.write().unwrap_or_else(|p| p.into_inner()) =
            (now_ms(), result.as_ref().err().map(ToString::to_string));
        match &result {
            Ok(n) => tracing::info!(rules = n, "rules loaded"),
            Err(e) => {
                tracing::error!(error = %e, "rule reload failed; the previous rules keep running")
            }
        }
        result
    }

    async fn reload_inner(self: &Arc<Self>) -> Result<usize, ReloadError> {
        let mut files = Vec::new();
        for p in self.paths()? {
            files.push(file::load_with(&p, &self.opts.limits.text)?);
        }
        let mut saved: HashMap<String, String> = match &self.state {
            Some(s) => s.load().await.into_iter().collect(),
            None => HashMap::new(),
        };
        let old: Vec<_> =
            std::mem::take(&mut *self.groups.write().unwrap_or_else(|p| p.into_inner()));
        let mut carried: HashMap<(PathBuf, String, String, String), AlertingRule> = HashMap::new();
        for (g, handle) in old {
            handle.abort();
            let g = g.lock().await;
            for r in &g.rules {
                if let RuleRun::Alerting(a, _) = r {
                    carried.insert(
                        (
                            g.file.clone(),
                            g.name.clone(),
                            a.rule.name().to_owned(),
                            a.rule.expr_text.clone(),
                        ),
                        a.clone(),
                    );
                }
            }
        }
        let mut count = 0;
        let mut new = Vec::new();
        for f in files {
            for g in f.groups {
                let mut run = GroupRun {
                    file: f.path.clone(),
                    name: g.name.clone(),
                    interval: g.interval.unwrap_or(self.opts.default_interval),
                    limit: g.limit,
                    rules: Vec::new(),
                    health: Health::default(),
                    alert_series: HashSet::new(),
                    saved: HashMap::new(),
                };
                for r in g.rules {
                    count += 1;
                    run.rules.push(match &r.kind {
                        RuleKind::Alerting { .. } => {
                            let key = (f.path.clone(), g.name.clone(), r.name().to_owned(), r.expr_text.clone());
                            let mut a = match carried.remove(&key) {
                                Some(mut old) => {
                                    old.rule = r;
                                    old
                                }
                                None => AlertingRule::new(r),
                            };
                            let k = rule_key(&run.file, &run.name, run.rules.len(), a.rule.name());
                            if a.alerts.is_empty()
                                && let Some(body) = saved.remove(&k)
                            {
                                match serde_json::from_str::<Vec<ActiveAlert>>(&body) {
                                    Ok(alerts) => {
                                        tracing::info!(rule = a.rule.name(), alerts = alerts.len(), "alert state restored");
                                        a.alerts = alerts.into_iter().map(|x| (nunchi_model::fingerprint(&x.labels), x)).collect();
                                        run.saved.insert(k, body);
                                    }
                                    Err(e) => tracing::warn!(rule = a.rule.name(), error = %e, "saved alert state unreadable; starting fresh"),
                                }
                            }
                            RuleRun::Alerting(a, Health::default())
                        }
                        RuleKind::Recording { .. } => RuleRun::Recording(r, Health::default(), HashSet::new()),
                    });
                }
                let run = Arc::new(Mutex::new(run));
                let handle = tokio::spawn(self.clone().run_group(run.clone()));
                new.push((run, handle));
            }
        }
        *self.groups.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(count)
    }

    async fn run_group(self: Arc<Self>, group: Arc<Mutex<GroupRun>>) {
        let interval = group.lock().await.interval;
        let mut shutdown = self.shutdown.clone();
        let mut last = Instant::now() - interval;
        let gap = interval / 4;
        loop {
            let since = last.elapsed();
            if since < interval {
                let wait = interval - since;
                let woken = tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    _ = self.wake.notified() => true,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                let since = last.elapsed();
                if woken && since < gap {
                    tokio::time::sleep(gap - since).await;
                }
            }
            last = Instant::now();
            self.eval_group(&group).await;
            if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn query(&self, expr: &Expr, text: &str, ts: i64) -> Result<Samples, String> {
        let r: Result<QueryResult, QueryError> = self
            .queryable
            .instant(expr, text, ts, self.opts.limits)
            .await;
        r.map_err(|e| e.to_string()).and_then(samples_of)
    }

    fn generator_url(&self, expr: &str) -> String {
        let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        format!(
            "{}/explore?query={q}",
            self.opts.external_url.trim_end_matches('/')
        )
    }

    /// Evaluates one group now.
    async fn eval_group(&self, group: &Mutex<GroupRun>) {
        let mut g = group.lock().await;
        let started = Instant::now();
        let ts = now_ms();
        let valid_until = ts + 4 * g.interval.max(Duration::from_secs(60)).as_millis() as i64;
        let mut out_series: Vec<Series> = Vec::new();
        let mut alerts_out = Vec::new();
        let mut alert_series = HashSet::new();
        let limit = g.limit;
        let mut saves = Vec::new();
        for i in 0..g.rules.len() {
            let key = g.key(i);
            let rule_started = Instant::now();
            let (expr, text) = {
                let r = g.rules[i].rule();
                (r.expr.clone(), r.expr_text.clone())
            };
            let result = self.query(&expr, &text, ts).await;
            let result = match result {
                Ok(s) if limit > 0 && s.len() > limit => {
                    Err(format!("exceeded limit of {limit} with {} series", s.len()))
                }
                other => other,
            };
            match &mut g.rules[i] {
                RuleRun::Recording(rule, health, prev) => {
                    let name = rule.name().to_owned();
                    let mut now_set = HashSet::new();
                    if let Ok(samples) = &result {
                        for (labels, v) in samples {
                            let mut l = Labels::from_pairs(
                                labels.iter().map(|(k, v)| (k.clone(), v.clone())),
                            );
                            for (k, v) in &rule.labels {
                                l.insert(k.clone(), v.clone());
                            }
                            l.insert(nunchi_model::METRIC_NAME, name.clone());
                            now_set.insert(l.clone());
                            out_series.push(Series {
                                labels: l,
                                samples: vec![Sample {
                                    timestamp_ms: ts,
                                    value: *v,
                                }],
                            });
                        }
                    }
                    for gone in prev.difference(&now_set) {
                        out_series.push(Series {
                            labels: gone.clone(),
                            samples: vec![Sample {
                                timestamp_ms: ts,
                                value: f64::from_bits(STALE_NAN_BITS),
                            }],
                        });
                    }
                    *prev = now_set;
                    *health = Health {
                        last_evaluation: ts,
                        duration: rule_started.elapsed(),
                        last_error: result.err(),
                    };
                }
                RuleRun::Alerting(rule, health) => {
                    let clear = match (&rule.rule.comparison, rule.any_firing()) {
                        (Some(c), true) => match &c.clear_expr {
                            Some(e) => {
                                let t = e.to_string();
                                self.query(e, &t, ts).await.ok()
                            }
                            None => None,
                        },
                        _ => None,
                    };
                    if let Ok(samples) = &result {
                        rule.eval(ts, samples, clear.as_ref(), &self.opts.external_labels);
                    }
                    let url = self.generator_url(&rule.rule.expr_text);
                    let sent = rule.to_send(ts, valid_until, &url);
                    if let Some(spec) = rule.rule.scale.clone() {
                        let hold = |reason: String| ScaleRequest {
                            action: ScaleAction::Hold,
                            step: 0,
                            target_group: spec.group.clone(),
                            value: None,
                            threshold: rule.rule.comparison.as_ref().map(|c| c.threshold),
                            reason,
                            rule: rule.rule.name().to_owned(),
                            idempotency_key: String::new(),
                            cooldown_until: 0,
                            at: ts,
                        };
                        match &result {
                            Err(e) => self
                                .notify
                                .scale(hold(format!("trigger query failed: {e}")), None),
                            Ok(_) => {
                                let operand =
                                    rule.rule.comparison.as_ref().map(|c| c.operand.clone());
                                let data = match operand {
                                    Some(op) => {
                                        let t = op.to_string();
                                        self.query(&op, &t, ts).await
                                    }
                                    None => Ok(Vec::new()),
                                };
                                match data {
                                    Err(e) => self
                                        .notify
                                        .scale(hold(format!("trigger query failed: {e}")), None),
                                    Ok(d) if d.is_empty() => self.notify.scale(
                                        hold(format!(
                                            "no data: {} returned nothing (absent or stale series)",
                                            rule.rule
                                                .comparison
                                                .as_ref()
                                                .map(|c| c.operand.to_string())
                                                .unwrap_or_default()
                                        )),
                                        None,
                                    ),
                                    Ok(_) => {
                                        for a in sent.iter().filter(|a| a.ends_at > ts) {
                                            self.notify.scale(
                                                ScaleRequest {
                                                    action: spec.action,
                                                    step: spec.step,
                                                    target_group: spec.group.clone(),
                                                    value: Some(a.value),
                                                    threshold: a.threshold,
                                                    reason: format!("{} fired", rule.rule.name()),
                                                    rule: rule.rule.name().to_owned(),
                                                    idempotency_key: String::new(),
                                                    cooldown_until: 0,
                                                    at: ts,
                                                },
                                                Some(a.clone()),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                    alerts_out.extend(sent);
                    for a in rule.alerts.values() {
                        if a.state == AlertState::Inactive {
                            continue;
                        }
                        let mut l = Labels::from_pairs(
                            a.labels.iter().map(|(k, v)| (k.clone(), v.clone())),
                        );
                        let mut fs = l.clone();
                        fs.insert(nunchi_model::METRIC_NAME, "ALERTS_FOR_STATE");
                        l.insert(nunchi_model::METRIC_NAME, "ALERTS");
                        l.insert("alertstate", a.state.as_str());
                        for (labels, v) in [(l, 1.0), (fs, a.active_at as f64 / 1000.0)] {
                            alert_series.insert(labels.clone());
                            out_series.push(Series {
                                labels,
                                samples: vec![Sample {
                                    timestamp_ms: ts,
                                    value: v,
                                }],
                            });
                        }
                    }
                    *health = Health {
                        last_evaluation: ts,
                        duration: rule_started.elapsed(),
                        last_error: result.err(),
                    };
                    let mut alerts: Vec<&ActiveAlert> = rule.alerts.values().collect();
                    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                    let body = serde_json::to_string(&alerts).unwrap_or_default();
                    saves.push((key, body));
                }
            }
        }
        for gone in g.alert_series.difference(&alert_series) {
            out_series.push(Series {
                labels: gone.clone(),
                samples: vec![Sample {
                    timestamp_ms: ts,
                    value: f64::from_bits(STALE_NAN_BITS),
                }],
            });
        }
        g.alert_series = alert_series;
        if !alerts_out.is_empty() {
            self.notify.send(alerts_out);
        }
        if !out_series.is_empty()
            && let Err(e) = self.appendable.append(&out_series).await
        {
            tracing::warn!(group = %g.name, error = %e, "cannot store rule results");
        }
        if let Some(store) = &self.state {
            for (key, body) in saves {
                if g.saved.get(&key) != Some(&body) {
                    let empty = body == "[]";
                    store
                        .save(key.clone(), (!empty).then(|| body.clone()))
                        .await;
                    g.saved.insert(key, body);
                }
            }
        }
        g.health = Health {
            last_evaluation: ts,
            duration: started.elapsed(),
            last_error: None,
        };
    }

    /// When the last reload happened and its error, if it failed.
    pub fn last_reload(&self) -> (i64, Option<String>) {
        self.last_reload
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

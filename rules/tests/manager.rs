//! The rule manager in process, with fakes of the four traits it reaches the world
//! through: a rule file on disk is loaded, its alerting rule fires on what the fake query
//! answers, the alert reaches `Notify`, `ALERTS` and the recorded series reach
//! `Appendable`, and the state is saved; no collector, store or network.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nunchi_model::{Alert, Labels, ScaleRequest, Series};
use nunchi_promql::{Element, QueryError, QueryLimits, QueryResult};

use nunchi_rules::manager::{Appendable, Manager, ManagerOptions, Notify, Queryable, StateStore};
use promql_parser::parser::Expr;

/// Answers every query with one series `{job="api"}` at 0.
struct Answers;

impl Queryable for Answers {
    fn instant<'a>(
        &'a self,
        _expr: &'a Expr,
        text: &'a str,
        t: i64,
        _limits: QueryLimits,
    ) -> BoxFuture<'a, Result<QueryResult, QueryError>> {
        if text.contains("sum") {
            // A recording rule's aggregation: one series without the name.
            return Box::pin(async move {
                Ok(QueryResult::Vector(
                    t,
                    vec![Element {
                        labels: Arc::new(Labels::from_pairs([("job", "api")])),
                        value: 0.0,
                    }],
                ))
            });
        }
        let value = 0.0;
        Box::pin(async move {
            Ok(QueryResult::Vector(
                t,
                vec![Element {
                    labels: Arc::new(Labels::from_pairs([("__name__", "up"), ("job", "api")])),
                    value,
                }],
            ))
        })
    }
}

#[derive(Default)]
struct World {
    appended: Mutex<Vec<Series>>,
    alerts: Mutex<Vec<Alert>>,
    saved: Mutex<BTreeMap<String, Option<String>>>,
}

struct Fakes(Arc<World>);

impl Appendable for Fakes {
    fn append<'a>(&'a self, series: &'a [Series]) -> BoxFuture<'a, Result<(), String>> {
        self.0
            .appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(series);
        Box::pin(async { Ok(()) })
    }
}

impl Notify for Fakes {
    fn send(&self, alerts: Vec<Alert>) {
        self.0
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(alerts);
    }
    fn scale(&self, _request: ScaleRequest, _alert: Option<Alert>) {}
}

impl StateStore for Fakes {
    fn load(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        Box::pin(async { Vec::new() })
    }
    fn save(&self, key: String, body: Option<String>) -> BoxFuture<'_, ()> {
        self.0
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, body);
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerting_rule_fires_through_the_traits_alone() {
    let dir = std::env::temp_dir().join(format!("nunchi-rules-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("rules.yml");
    std::fs::write(
        &file,
        "groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: Down\n        expr: up == 0\n        labels:\n          severity: page\n        annotations:\n          summary: \"{{ $labels.job }} is down\"\n",
    )
    .expect("rules");
    let world = Arc::new(World::default());
    let fakes = Arc::new(Fakes(world.clone()));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let manager = Manager::new(
        Arc::new(Answers),
        fakes.clone(),
        fakes.clone(),
        Some(fakes),
        ManagerOptions {
            files: vec![file.display().to_string()],
            default_interval: Duration::from_secs(1),
            external_url: "http://collector.example".into(),
            limits: QueryLimits::default(),
            external_labels: Default::default(),
        },
        shutdown,
    );
    assert_eq!(manager.reload().await.expect("loads"), 2);
    let mut fired = None;
    for _ in 0..100 {
        if let Some(a) = world
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
        {
            fired = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = fired.expect("the alert reached Notify");
    assert_eq!(a.labels.get("alertname").map(String::as_str), Some("Down"));
    assert_eq!(a.labels.get("job").map(String::as_str), Some("api"));
    assert_eq!(
        a.annotations.get("summary").map(String::as_str),
        Some("api is down")
    );
    assert!(
        a.generator_url.starts_with("http://collector.example/"),
        "{}",
        a.generator_url
    );
    let appended = world
        .appended
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let names: Vec<_> = appended
        .iter()
        .filter_map(|s| s.labels.get("__name__"))
        .collect();
    assert!(names.contains(&"ALERTS"), "{names:?}");
    assert!(names.contains(&"job:up:sum"), "{names:?}");
    assert!(
        !world
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty(),
        "state saved"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The flash-sale story end to end on the real binaries: feed-app instances with their
//! agents behind the balancer, the collector with the default and scaling rules, the local
//! Slack, the autoscaler; load jumps, Slack is paged, the fleet scales out, the new
//! instance serves, the alert resolves in Slack, and after the cooldown the fleet scales in.
//! Needs the workspace's debug binaries (`cargo test --workspace` builds them first).

use std::path::PathBuf;
use std::time::Duration;

use nunchi_model::ScaleAction;
use nunchi_stack::balancer::Balancer;
use nunchi_stack::fleet::{Fleet, FleetOptions};
use nunchi_stack::{Stack, StackOptions, autoscaler::Autoscaler, free_port, scenario};

fn bin_dir() -> PathBuf {
    nunchi_testkit::target_dir().join("debug")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flash_sale_pages_scales_out_resolves_and_scales_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = StackOptions {
        bin_dir: bin_dir(),
        data_dir: dir.path().to_owned(),
        collector_port: free_port().expect("port"),
        balancer_port: 0,
        cooldown: Duration::from_secs(20),
        scale_in_for: Duration::from_secs(10),
        ..StackOptions::default()
    };
    let stack = Stack::start(o, |s| eprintln!("starting {s}"))
        .await
        .expect("the stack starts");
    assert_eq!(stack.fleet.size().await, 2);
    let report = scenario::flash_sale(&stack, 22.0, |s| {
        eprintln!("+{:.1} s {}", s.after.as_secs_f64(), s.what)
    })
    .await;
    let events = stack.autoscaler.events();
    let refused = stack.autoscaler.refused();
    let log = std::fs::read_to_string(dir.path().join("collector.log")).unwrap_or_default();
    stack.stop().await;
    let report = report.unwrap_or_else(|e| {
        panic!(
            "{e}\nscale events: {events:?}\ncollector log tail:\n{}",
            log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        )
    });
    let page = report.page_after.expect("page latency");
    println!("load jump to Slack page: {:.1} s", page.as_secs_f64());
    assert!(page < Duration::from_secs(60), "{page:?}");
    assert_eq!(refused, 0, "every scale webhook was signed");
    let out = events
        .iter()
        .position(|e| e.request.action == ScaleAction::ScaleOut)
        .expect("scale-out");
    let inn = events
        .iter()
        .position(|e| e.request.action == ScaleAction::ScaleIn)
        .expect("scale-in");
    assert!(out < inn, "scale-out before scale-in: {events:?}");
    assert_eq!(events[out].size_after, 3);
    let gap = events[inn].at.duration_since(events[out].at);
    assert!(gap >= Duration::from_secs(19), "the cooldown held: {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_checks_signatures_and_acts_once_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = std::sync::Arc::new(Fleet::new(
        FleetOptions {
            bin_dir: bin_dir(),
            data_dir: dir.path().to_owned(),
            database_url: "sqlite::memory:".into(),
            redis_url: None,
            push_url: "http://127.0.0.1:1/api/v1/write".into(),
            min: 0,
            max: 0,
        },
        Balancer::new(),
    ));
    let a = Autoscaler::new(fleet, "s3cret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/scale", listener.local_addr().expect("addr"));
    let app = a.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = serde_json::to_vec(&serde_json::json!({
        "version": "4",
        "scale": {
            "action": "hold", "step": 1, "target_group": "feed-app", "value": null,
            "threshold": null, "reason": "no data", "rule": "R", "idempotency_key": "k1",
            "cooldown_until": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:00:00Z",
        },
    }))
    .expect("json");
    let client = nunchi_stack::http_client();
    let send = |secret: &'static str| {
        let ts = 1_700_000_000_000i64;
        client
            .post(&url)
            .header("X-Nunchi-Timestamp", ts.to_string())
            .header(
                "X-Nunchi-Signature",
                nunchi_alerts::notify::sign(secret, ts, &body),
            )
            .body(body.clone())
            .send()
    };
    assert_eq!(send("wrong").await.expect("send").status(), 401);
    assert_eq!(a.refused(), 1);
    assert_eq!(send("s3cret").await.expect("send").status(), 200);
    let again = send("s3cret").await.expect("send");
    assert_eq!(again.status(), 200);
    assert_eq!(again.text().await.unwrap_or_default(), "already handled\n");
    assert_eq!(a.events().len(), 1, "acted once for one idempotency key");
}

//! Delivery's bounded queues, against a real webhook endpoint that takes connections and
//! never answers: what finds its queue full is counted and dead-lettered, not held, and the
//! outbox keeps every notification.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nunchi_alerts::delivery::{Delivery, DeliveryOptions, overflow_counter};
use nunchi_alerts::notify::{Notification, Reason};
use nunchi_alerts::store::OutboxState;
use nunchi_alerts::{Config, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_dead_letters_what_does_not_fit() {
    // An endpoint that accepts and stays silent: every request waits for its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let yaml = format!(
        "route:\n  receiver: hook\nreceivers:\n  - name: hook\n    webhook_configs:\n      \
         - url: http://{addr}/alerts\n        timeout: 30s\n"
    );
    let config = Config::parse(Path::new("test.yml"), &yaml).expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::connect(&url).await.expect("store");
    let overflow = overflow_counter();
    let delivery = Delivery::new(
        store.clone(),
        Arc::new(RwLock::new(Arc::new(config))),
        "http://nunchi.test".into(),
        DeliveryOptions {
            queue_capacity: 2,
            overflow: overflow.clone(),
            ..Default::default()
        },
    );
    for i in 0..5 {
        let n = Notification {
            receiver: "hook".into(),
            group_key: format!("g{i}"),
            group_labels: Default::default(),
            alerts: Vec::new(),
            reason: Reason::NewGroup,
            at: nunchi_model::now_ms(),
            dashboard_url: None,
        };
        delivery.notify(&n).await;
    }
    assert_eq!(overflow.get(), 3, "two fit, three overflow");
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = store.outbox(OutboxState::Dead, 100).await.expect("outbox");
        if dead.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead.len(), 3, "the overflowed are dead letters: {dead:?}");
    for e in &dead {
        let why = e.last_error.as_deref().unwrap_or_default();
        assert!(why.starts_with("delivery queue full"), "{why}");
        assert_eq!(e.attempts, 0);
    }
    let pending = store
        .outbox(OutboxState::Pending, 100)
        .await
        .expect("outbox");
    assert_eq!(pending.len(), 2, "the two in flight stay pending");
}

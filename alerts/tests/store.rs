//! The delivery store on both databases the collector runs on: the embedded SQLite file
//! and the real PostgreSQL of this machine (127.0.0.1:5432, database `test`).

use nunchi_alerts::store::{NotifyRecord, OutboxEntry, OutboxState, SlackRef, next_id};
use nunchi_alerts::{Silence, SilenceMatcher, Store};

async fn exercise(store: &Store, tag: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    let id = next_id(now);
    let e = OutboxEntry {
        id,
        created_at: now,
        receiver: format!("r-{tag}"),
        integration: "webhook".into(),
        target: 0,
        group_key: format!("g-{tag}"),
        payload: serde_json::json!({"hello": tag}),
        state: OutboxState::Pending,
        attempts: 0,
        last_error: None,
    };
    store.enqueue(&e).await.expect("enqueue");
    store
        .set_state(id, OutboxState::Dead, 3, Some("HTTP 503"))
        .await
        .expect("state");
    let got = store
        .outbox_entry(id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(
        (got.state, got.attempts, got.last_error.as_deref()),
        (OutboxState::Dead, 3, Some("HTTP 503"))
    );
    assert_eq!(got.payload["hello"], tag);
    assert!(
        store
            .outbox(OutboxState::Dead, 1000)
            .await
            .expect("dead")
            .iter()
            .any(|x| x.id == id)
    );

    let rec = NotifyRecord {
        firing: vec![1, 2],
        resolved: vec![],
        flapping: vec![2],
        sent_at: now,
    };
    store
        .set_nflog(&e.group_key, &e.receiver, Some(&rec))
        .await
        .expect("nflog");
    let rec2 = NotifyRecord {
        firing: vec![1],
        ..rec.clone()
    };
    store
        .set_nflog(&e.group_key, &e.receiver, Some(&rec2))
        .await
        .expect("nflog update");
    let all = store.nflog().await.expect("nflog");
    assert_eq!(
        all.iter()
            .filter(|(g, r, _)| *g == e.group_key && *r == e.receiver)
            .map(|x| x.2.clone())
            .collect::<Vec<_>>(),
        vec![rec2]
    );
    store
        .set_nflog(&e.group_key, &e.receiver, None)
        .await
        .expect("forget");
    assert!(
        !store
            .nflog()
            .await
            .expect("nflog")
            .iter()
            .any(|(g, _, _)| *g == e.group_key)
    );

    let r = SlackRef {
        channel: "C1".into(),
        ts: "1.2".into(),
        digest: false,
    };
    store
        .set_slack_ref(&e.group_key, "t", Some(&r))
        .await
        .expect("ref");
    assert_eq!(
        store.slack_ref(&e.group_key, "t").await.expect("ref"),
        Some(r)
    );

    let s = Silence {
        id: format!("s-{tag}-{id}"),
        matchers: vec![SilenceMatcher {
            name: "alertname".into(),
            value: "X".into(),
            is_regex: false,
            is_equal: true,
        }],
        starts_at: now,
        ends_at: now + 60_000,
        created_by: "me".into(),
        comment: String::new(),
    };
    store.put_silence(&s).await.expect("silence");
    store
        .put_silence(&Silence {
            ends_at: now + 1,
            ..s.clone()
        })
        .await
        .expect("expire");
    let got: Vec<_> = store
        .silences(now)
        .await
        .expect("silences")
        .into_iter()
        .filter(|x| x.id == s.id)
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ends_at, now + 1);

    store
        .set_rule_state(&format!("k-{tag}"), Some("[1]"))
        .await
        .expect("rule state");
    store
        .set_rule_state(&format!("k-{tag}"), Some("[2]"))
        .await
        .expect("rule state");
    assert!(
        store
            .rule_states()
            .await
            .expect("states")
            .contains(&(format!("k-{tag}"), "[2]".into()))
    );
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::connect(&url).await.expect("connect");
    exercise(&store, "sqlite").await;
    drop(store);
    let again = Store::connect(&url).await.expect("reopen");
    assert!(
        again
            .rule_states()
            .await
            .expect("states")
            .iter()
            .any(|(k, _)| k == "k-sqlite"),
        "survives reopening"
    );
}

#[tokio::test]
async fn postgres() {
    use sqlx::Connection;
    let admin = std::env::var("NUNCHI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let db = format!(
        "nunchi_alerts_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = format!(
        "{}/{db}",
        admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
    );
    let store = Store::connect(&url).await.expect("connect");
    exercise(&store, "pg").await;
    drop(store);
    let again = Store::connect(&url).await.expect("reopen");
    assert!(
        again
            .rule_states()
            .await
            .expect("states")
            .iter()
            .any(|(k, _)| k == "k-pg")
    );
    drop(again);
    let _ = sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

#[test]
fn bad_urls_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let e = rt
        .block_on(Store::connect("mysql://x"))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("sqlite://"), "{e}");
}

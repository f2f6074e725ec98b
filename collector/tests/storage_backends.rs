//! The storage on each database it supports: the embedded SQLite file and a real
//! PostgreSQL server (`postgres://postgres@127.0.0.1:5432/test` unless
//! `NUNCHI_TEST_POSTGRES` names another). Written samples come back after a flush, after
//! compaction and after reopening, long ranges read the rollups, and reads running while
//! flushes and compactions rewrite blocks miss nothing.

use std::time::Duration;

use nunchi_collector::storage::{Storage, StorageOptions, now_ms};
use nunchi_model::{Labels, Sample, Series};
use prometheus::Registry;
use promql_parser::label::{MatchOp, Matcher};
use sqlx::Connection;

fn options(dir: &std::path::Path, url: Option<String>) -> StorageOptions {
    StorageOptions {
        data_dir: dir.to_owned(),
        database_url: url,
        retention: Duration::from_secs(30 * 86400),
        out_of_order_window: Duration::from_secs(600),
        flush_interval: Duration::from_secs(3600),
        block_span: Duration::from_secs(6 * 3600),
        rollup_resolution: Duration::from_secs(300),
        wal_sync: false,
        block_cache_bytes: 64 << 20,
    }
}

fn data(now: i64) -> Vec<Series> {
    // Two days at one sample a minute for three series.
    (0..3)
        .map(|i| Series {
            labels: Labels::from_pairs([("__name__", "bytes_total"), ("i", &i.to_string())]),
            samples: (0..2 * 1440)
                .map(|k| Sample {
                    timestamp_ms: now - (2 * 1440 - k) * 60_000,
                    value: (k * (i + 1)) as f64,
                })
                .collect(),
        })
        .collect()
}

async fn exercise(url: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = (now_ms() / 60_000) * 60_000;
    let input = data(now);
    let name = Matcher::new(MatchOp::Equal, "__name__", "bytes_total");
    let read = |s: std::sync::Arc<Storage>| {
        let name = name.clone();
        async move {
            let mut got = s
                .select(&[name], now - 3 * 86_400_000, now)
                .await
                .expect("select");
            got.sort_by(|a, b| a.labels.cmp(&b.labels));
            got.into_iter()
                .map(|s| (s.labels, s.samples.into_vec()))
                .collect::<Vec<_>>()
        }
    };
    let want: Vec<(Labels, Vec<Sample>)> = input
        .iter()
        .map(|s| (s.labels.clone(), s.samples.clone()))
        .collect();
    {
        let s = Storage::open(options(dir.path(), url.clone()), &Registry::new())
            .await
            .expect("open");
        s.write_series(&input).await.expect("write");
        assert_eq!(read(s.clone()).await, want, "from the head");
        s.flush().await.expect("flush");
        assert_eq!(read(s.clone()).await, want, "after a flush");
        let blocks = s.compact(true).await.expect("compact");
        assert!(
            blocks >= 3 * 8,
            "{blocks} blocks for two days of three series in 6 h spans"
        );
        assert_eq!(read(s.clone()).await, want, "after compaction");
        assert_eq!(read(s.clone()).await, want, "decoded blocks read again");
        let rollups = s
            .select_rollup(std::slice::from_ref(&name), now - 3 * 86_400_000, now)
            .await
            .expect("rollup");
        assert_eq!(rollups.len(), 3);
        // Five one-minute samples per five-minute bucket.
        let points = &rollups[0].points;
        assert!(
            (points.len() as i64 - 2 * 288).abs() <= 1,
            "{} points",
            points.len()
        );
        assert!(
            points
                .iter()
                .skip(1)
                .take(points.len() - 2)
                .all(|p| p.count == 5.0)
        );
        // A late sample lands in the newest block, which compaction then rewrites: reads
        // see the new block, not the decoded old one.
        let late = Series {
            labels: input[0].labels.clone(),
            samples: vec![Sample {
                timestamp_ms: now - 90_000,
                value: 0.5,
            }],
        };
        s.write_series(&[late]).await.expect("late write");
        s.flush().await.expect("flush");
        s.compact(true).await.expect("compact");
        let mut want = want.clone();
        let at = want[0].1.len() - 1;
        want[0].1.insert(
            at,
            Sample {
                timestamp_ms: now - 90_000,
                value: 0.5,
            },
        );
        assert_eq!(
            read(s.clone()).await,
            want,
            "after the newest block was rewritten"
        );
    }
    let s = Storage::open(options(dir.path(), url), &Registry::new())
        .await
        .expect("reopen");
    let got = read(s.clone()).await;
    assert_eq!(got.len(), want.len());
    assert_eq!(got[1..], want[1..], "after reopening");
    assert_eq!(got[0].1.len(), want[0].1.len() + 1, "after reopening");
}

/// Reads running while flushes and compactions rewrite the blocks they list never miss a
/// sample: a read whose listed blocks were replaced before their bytes were fetched starts
/// over.
async fn reads_race_rewrites(url: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = (now_ms() / 60_000) * 60_000;
    let input = data(now);
    let s = Storage::open(options(dir.path(), url), &Registry::new())
        .await
        .expect("open");
    s.write_series(&input).await.expect("write");
    s.flush_and_compact().await.expect("compact");
    let name = Matcher::new(MatchOp::Equal, "__name__", "bytes_total");
    let rounds = 40;
    let writer = {
        let s = s.clone();
        let labels = input[0].labels.clone();
        tokio::spawn(async move {
            for k in 0..rounds {
                // In order after the newest sample: the newest block is rewritten each time.
                let late = Series {
                    labels: labels.clone(),
                    samples: vec![Sample {
                        timestamp_ms: now + 1_000 * (k + 1),
                        value: 1e6 + k as f64,
                    }],
                };
                s.write_series(&[late]).await.expect("write");
                s.flush().await.expect("flush");
                s.compact(true).await.expect("compact");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let got = s
            .select(
                std::slice::from_ref(&name),
                now - 3 * 86_400_000,
                now + 3_600_000,
            )
            .await
            .expect("select");
        assert_eq!(got.len(), 3, "read {reads}: every series");
        for g in &got {
            let want = input
                .iter()
                .find(|i| i.labels == g.labels)
                .expect("known series");
            let kept: Vec<&Sample> = g.samples.iter().filter(|x| x.timestamp_ms <= now).collect();
            assert_eq!(kept.len(), want.samples.len(), "read {reads}: {}", g.labels);
            assert!(
                g.samples
                    .to_vec()
                    .windows(2)
                    .all(|w| w[0].timestamp_ms < w[1].timestamp_ms),
                "read {reads}: sorted, one sample per timestamp"
            );
        }
        reads += 1;
    }
    writer.await.expect("writer");
    let got = s
        .select(&[name], now - 3 * 86_400_000, now + 3_600_000)
        .await
        .expect("select");
    let first = got
        .iter()
        .find(|g| g.labels == input[0].labels)
        .expect("series");
    assert_eq!(
        first.samples.len(),
        input[0].samples.len() + rounds as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_miss_nothing_while_blocks_are_rewritten() {
    reads_race_rewrites(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_sample_through_flush_compaction_and_reopen() {
    exercise(None).await;
}

/// Runs `f` with the URL of a fresh database on the test PostgreSQL server, dropped after.
async fn on_fresh_postgres<F: Future<Output = ()>>(f: impl FnOnce(String) -> F) {
    let admin = std::env::var("NUNCHI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    sqlx::any::install_default_drivers();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = format!("nunchi_storage_{}_{}_{n}", std::process::id(), now_ms());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for this test: {e}"));
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => panic!("NUNCHI_TEST_POSTGRES must end in /DATABASE"),
    };
    f(url).await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_sample_through_flush_compaction_and_reopen() {
    on_fresh_postgres(|url| exercise(Some(url))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_miss_nothing_while_blocks_are_rewritten() {
    on_fresh_postgres(|url| reads_race_rewrites(Some(url))).await;
}

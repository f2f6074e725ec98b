//! A full disk under the data directory: writes are refused with 503 while nothing can be
//! logged, flushes fail and `/-/ready` says so; once space is freed, flushes, readiness and
//! WAL truncation come back without a restart, and every acknowledged sample is there.
//!
//! The small filesystem is a tmpfs mounted for the test, which needs root. CI runs as
//! root, and with `CI` set the test fails if it cannot mount; elsewhere it says so and
//! passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Collector, now_ms, push, series, wait_for};

/// A tmpfs mounted at a path, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        st.success().then(|| Mount(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

fn wal_segments(data: &Path) -> usize {
    std::fs::read_dir(data.join("wal")).map_or(0, |d| d.count())
}

async fn ready(c: &Collector) -> bool {
    common::http_get(format!("{}/-/ready", c.base))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_recovers_after_the_disk_was_full_and_keeps_every_acknowledged_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_mount) = Mount::tmpfs(&dir.path().join("small"), "24m") else {
        // CI runs as root: there the test must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs (needs root)"
        );
        println!("skipped: mounting a tmpfs needs root");
        return;
    };
    let small = dir.path().join("small");
    let c = Collector::start(&small, &["--flush-interval", "1s"]).await;
    let data = small.join("data");
    let t0 = now_ms() - 600_000;
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut refused = 0;
    let write = |i: usize| {
        let name = format!("s{}", i % 20);
        let t = t0 + i as i64 * 100;
        (name, t)
    };
    for i in 0..400 {
        let (name, t) = write(i);
        let (status, body) = push(
            &c.write_url(),
            &[series(
                &[("__name__", "disk"), ("s", &name)],
                &[(t, i as f64)],
            )],
            None,
        )
        .await;
        assert_eq!(status, 204, "{body}");
        acked.push((name, t));
    }
    // The disk fills: writes that cannot be logged are refused, none is lost.
    let filler = fill(&small);
    for i in 400..1400 {
        let (name, t) = write(i);
        let body = series(
            &[
                ("__name__", "disk"),
                ("s", &name),
                ("pad", &"x".repeat(1000)),
            ],
            &[(t, i as f64)],
        );
        let (status, text) = push(&c.write_url(), &[body], None).await;
        match status {
            204 => acked.push((format!("{name}+pad"), t)),
            503 => {
                refused += 1;
                assert!(
                    text.contains("No space left on device") || text.contains("storage"),
                    "{text}"
                );
            }
            other => panic!("write answered {other}: {text}"),
        }
    }
    assert!(refused > 0, "the disk never filled");
    let failing = wait_for(Duration::from_secs(30), || async {
        (!ready(&c).await).then_some(())
    })
    .await;
    assert!(
        failing.is_some(),
        "/-/ready never reported the failing flushes"
    );

    // Space comes back: the next flushes succeed, readiness and WAL truncation return.
    std::fs::remove_file(&filler).expect("free space");
    let back = wait_for(Duration::from_secs(60), || async {
        ready(&c).await.then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "/-/ready stayed 503 after space was freed; log:\n{}",
        c.log_text()
    );
    let truncated = wait_for(Duration::from_secs(30), || async {
        (wal_segments(&data) <= 3).then_some(())
    })
    .await;
    assert!(
        truncated.is_some(),
        "{} WAL segments left",
        wal_segments(&data)
    );
    assert!(
        !c.log_text().contains("non-zero transaction depth"),
        "{}",
        c.log_text()
    );

    // Every acknowledged sample is there.
    let end = t0 + 1400 * 100;
    let v = common::query(&c.base, "count(count_over_time(disk[20m]))", end).await;
    let series_count: usize = acked
        .iter()
        .map(|(n, _)| n.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(
        v["data"]["result"][0]["value"][1],
        series_count.to_string(),
        "{v}"
    );
    let v = common::query(&c.base, "sum(count_over_time(disk[20m]))", end).await;
    assert_eq!(
        v["data"]["result"][0]["value"][1],
        acked.len().to_string(),
        "{v}"
    );
    drop(c);
}

//! The agent binary as a user meets it: `--help`, configuration errors, and its `/metrics`
//! page checked by Debian's `promtool` and against Debian's `prometheus-node-exporter`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::{Agent, free_port, http_get, node_exporter_args, require, wait_for};
use nunchi_codec::exposition::{self, FamilyType};

fn agent_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nunchi-agent"))
}

#[test]
fn help_explains_every_option() {
    let out = agent_cmd().arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--interval",
        "--push-url",
        "--token",
        "--token-file",
        "--scrape",
        "--label",
        "--buffer-dir",
        "--buffer-max-size",
        "--replay",
        "--listen",
        "--config",
        "NUNCHI_AGENT_PUSH_URL",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "interval = \"1s\"\npush_urls = [\"http://x\"]\n").expect("write");
    let out = agent_cmd()
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("push_urls") && err.contains("agent.toml"),
        "{err}"
    );

    let out = agent_cmd()
        .args(["--buffer-max-size", "1KiB", "--check-config"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("buffer_max_size"));

    let out = agent_cmd()
        .env("NUNCHI_AGENT_INTERVAL", "soon")
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));

    let out = agent_cmd()
        .env("NUNCHI_AGENT_INTERVAL", "3s")
        .args(["--check-config", "--label", "team=web"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("interval = \"3s\"") && printed.contains("team = \"web\""),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_page() {
    let promtool = require("promtool", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--interval", "200ms"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = agent.metrics_text().await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 0: clean. Exit 3: lint remarks only (no parse error). The only remarks allowed
    // are node_exporter's own camelCase memory names, which the agent keeps on purpose.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool failed:\n{report}"
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("node_memory_") && line.contains("camelCase"),
            "unexpected promtool remark: {line}\n{report}"
        );
    }
    agent.terminate();
}

/// name -> (type, label names, label value sets) for the families the agent promises.
fn shape(
    text: &str,
    names: &BTreeSet<String>,
) -> BTreeMap<String, (FamilyType, BTreeSet<String>, BTreeSet<String>)> {
    let e = exposition::parse(text, 0).expect("parses");
    let mut out = BTreeMap::new();
    for f in &e.families {
        if names.contains(&f.name) {
            out.insert(f.name.clone(), (f.kind, BTreeSet::new(), BTreeSet::new()));
        }
    }
    for s in &e.series {
        let name = s.labels.metric_name().unwrap_or_default().to_owned();
        if let Some(entry) = out.get_mut(&name) {
            for l in s.labels.iter().filter(|l| l.name != "__name__") {
                entry.1.insert(l.name.clone());
                entry.2.insert(format!("{}={}", l.name, l.value));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_match_node_exporter_on_this_host() {
    let ne = require("prometheus-node-exporter", "prometheus-node-exporter");
    let port = free_port();
    let mut child = Command::new(ne)
        .args(node_exporter_args(port))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node_exporter");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let theirs = wait_for(Duration::from_secs(20), || async {
        http_get(&url).await.ok()?.text().await.ok()
    })
    .await
    .expect("node_exporter serves /metrics");
    let _ = child.kill();
    let _ = child.wait();

    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--interval", "200ms"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ours = agent.metrics_text().await;
    agent.terminate();

    let names: BTreeSet<String> = exposition::parse(&ours, 0)
        .expect("ours parses")
        .families
        .iter()
        .map(|f| f.name.clone())
        .filter(|n| n.starts_with("node_"))
        .collect();
    assert!(names.len() >= 30, "{names:?}");
    let (ours, theirs) = (shape(&ours, &names), shape(&theirs, &names));
    for (name, (kind, label_names, values)) in &ours {
        let (tkind, tlabel_names, tvalues) = theirs
            .get(name)
            .unwrap_or_else(|| panic!("node_exporter has no {name}"));
        assert_eq!(kind, tkind, "{name}: type");
        assert_eq!(label_names, tlabel_names, "{name}: label names");
        assert_eq!(values, tvalues, "{name}: series (label values)");
    }
}

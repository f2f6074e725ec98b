//! The shipped rule file is a valid Prometheus rule file (`promtool check rules`), and the
//! collector evaluates every one of its expressions.

mod common;

use std::process::Command;

use common::{Collector, query};

#[derive(serde::Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(serde::Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    expr: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rules_pass_promtool_and_evaluate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.yml");
    let promtool = common::require("promtool", "prometheus");
    let out = Command::new(promtool)
        .args(["check", "rules", path])
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file: RuleFile =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parses");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]).await;
    let mut n = 0;
    for e in file.groups.iter().flat_map(|g| &g.rules).map(|r| &r.expr) {
        let v = query(&c.base, e, common::now_ms()).await;
        assert_eq!(v["status"], "success", "{e}: {v}");
        n += 1;
    }
    assert!(n >= 10, "only {n} rules");
}

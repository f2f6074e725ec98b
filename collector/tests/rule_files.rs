//! Rule files: what Debian's `promtool check rules` accepts the collector accepts, and
//! what it rejects the collector rejects, naming the file and line.

mod common;

use std::process::Command;

use nunchi_collector::rules::file;

/// (name, file text, line the collector should name when it rejects the file).
const CASES: &[(&str, &str, u64)] = &[
    ("empty", "", 0),
    ("no-groups", "groups: []\n", 0),
    (
        "recording",
        "groups:\n  - name: g\n    interval: 30s\n    limit: 10\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n        labels:\n          team: infra\n",
        0,
    ),
    (
        "alert-full",
        "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 1m\n        keep_firing_for: 5m\n        labels:\n          severity: 1\n        annotations:\n          summary: \"{{ $labels.instance }} down\"\n",
        0,
    ),
    (
        "missing-expr",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        for: 1m\n",
        4,
    ),
    (
        "both",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
        4,
    ),
    (
        "neither",
        "groups:\n  - name: g\n    rules:\n      - expr: up\n",
        4,
    ),
    (
        "bad-expr",
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n      - alert: A\n        expr: sum(up\n",
        6,
    ),
    (
        "record-for",
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n        for: 1m\n",
        4,
    ),
    (
        "record-annotations",
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n        annotations:\n          a: b\n",
        4,
    ),
    (
        "record-keep-firing",
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n        keep_firing_for: 1m\n",
        4,
    ),
    (
        "record-name",
        "groups:\n  - name: g\n    rules:\n      - record: 1x\n        expr: up\n",
        4,
    ),
    (
        "label-name",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels:\n          1bad: x\n",
        4,
    ),
    (
        "annotation-name",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          bad-name: x\n",
        4,
    ),
    (
        "duplicate-group",
        "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
        4,
    ),
    ("empty-group-name", "groups:\n  - rules: []\n", 2),
    (
        "unknown-rule-field",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expresion: up\n",
        5,
    ),
    ("unknown-top-field", "groups: []\nrules: []\n", 2),
    (
        "bad-for",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5 minutes\n",
        6,
    ),
    (
        "bad-interval",
        "groups:\n  - name: g\n    interval: soon\n    rules: []\n",
        3,
    ),
    (
        "yaml-syntax",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n       expr: up\n",
        5,
    ),
];

#[test]
fn accepted_and_rejected_as_promtool_does() {
    let promtool = common::require("promtool", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mismatches = Vec::new();
    for (name, text, line) in CASES {
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, text).expect("write");
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&path)
            .output()
            .expect("promtool runs");
        let theirs = out.status.success();
        let ours = file::load(&path);
        if ours.is_ok() != theirs {
            mismatches.push(format!(
                "{name}: promtool {}, collector {:?}\n{}",
                if theirs { "accepts" } else { "rejects" },
                ours.as_ref().err(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        if let Err(e) = ours {
            assert_eq!(e.file, path, "{name}");
            assert_eq!(e.line, *line, "{name}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}:{line}: ", path.display())),
                "{e}"
            );
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let shipped = file::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/default.yml"
    )))
    .expect("the default rules load");
    assert_eq!(
        shipped.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
        12
    );
}

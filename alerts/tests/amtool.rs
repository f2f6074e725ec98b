//! Alertmanager configuration parity: every file under `testdata/amtool` is checked by
//! Debian's `amtool check-config` and by [`Config::load`]; `ok_*` files must pass both,
//! `bad_*` files must be refused by both (ours naming the file and the key).

use std::path::Path;

use nunchi_alerts::Config;

#[test]
fn accepts_what_amtool_accepts_and_refuses_what_it_refuses() {
    let amtool = nunchi_testkit::require("amtool", "prometheus-alertmanager");
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/amtool"
    ));
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("testdata")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let theirs = std::process::Command::new(&amtool)
            .arg("check-config")
            .arg(&f)
            .output()
            .expect("amtool");
        let ours = Config::load(&f);
        let want_ok = name.starts_with("ok_");
        assert_eq!(
            theirs.status.success(),
            want_ok,
            "amtool on {name}: {}",
            String::from_utf8_lossy(&theirs.stdout)
        );
        match ours {
            Ok(_) => assert!(want_ok, "{name}: accepted, amtool refuses it"),
            Err(e) => {
                assert!(!want_ok, "{name}: refused: {e}");
                assert!(e.to_string().contains(&name), "error names the file: {e}");
            }
        }
    }
}

#[test]
fn the_example_config_loads() {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/alertmanager.example.yml"
    ));
    let c = Config::load(p).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.receivers.contains_key("oncall"));
    assert!(!c.scale_hooks.is_empty());
    let critical = c
        .route
        .matching(&[("severity".to_string(), "critical".to_string())].into());
    assert_eq!(critical[0].group_wait, std::time::Duration::ZERO);
}

//! The `nunchi-collector` command line: help that explains every flag, and configuration
//! errors that name the key at fault.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nunchi-collector"))
        .args(args)
        .output()
        .expect("run nunchi-collector");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_the_flags_and_their_environment_variables() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--listen",
        "--data-dir",
        "--config",
        "--retention",
        "NUNCHI_COLLECTOR_RETENTION",
        "NUNCHI_COLLECTOR_DATA_DIR",
        "remote_write",
        "/api/v1/query_range",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}:\n{out}");
    }
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[limits]\nmax_labels_per_series = 0\n").expect("write");
    let (code, _, err) = run(&["--config", file.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("limits"), "{err}");
    let (code, _, err) = run(&["--retention", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--retention"), "{err}");
    let (code, out, err) = run(&["--check-config", "--retention", "2d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retention = \"2days\""), "{out}");
    // Remote storage mode needs both URLs, each http(s).
    let (code, _, err) = run(&["--remote-write-url", "http://vm:8428/api/v1/write"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--remote-query-url"), "{err}");
    let (code, _, err) = run(&[
        "--remote-write-url",
        "ftp://vm/api/v1/write",
        "--remote-query-url",
        "http://vm:8428",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("remote.write_url"), "{err}");
    let (code, out, err) = run(&[
        "--check-config",
        "--remote-write-url",
        "http://vm:8428/api/v1/write",
        "--remote-query-url",
        "http://vm:8428",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[remote]") && out.contains("query_url = \"http://vm:8428/\""),
        "{out}"
    );
}

//! Both binaries explain themselves, and feed-app refuses a database URL it cannot use.

use std::process::Command;

#[test]
fn help_explains_the_options() {
    for (bin, flags) in [
        (
            env!("CARGO_BIN_EXE_feed-app"),
            &[
                "--listen",
                "--database-url",
                "--redis-url",
                "--metrics",
                "X-User-Id",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_feed-loadgen"),
            &[
                "--target",
                "--rate",
                "--duration",
                "--profile",
                "flash-sale",
            ][..],
        ),
    ] {
        let out = Command::new(bin)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for f in flags {
            assert!(text.contains(f), "{bin} --help does not mention {f}");
        }
    }
}

#[test]
fn an_unusable_database_url_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_feed-app"))
        .args(["--listen", "127.0.0.1:0", "--database-url", "mysql://x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
}

//! Helpers shared by nunchi's integration tests and benches: free loopback ports, polling
//! until a condition holds, child processes that are killed when dropped, Debian tools a
//! test needs, and a plain HTTP GET.

pub mod browser;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub use nunchi_model::now_ms;

/// The path of a Debian tool a test needs; panics with an install hint when it is missing.
pub fn require(tool: &str, package: &str) -> String {
    let path = format!("/usr/bin/{tool}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install it with `apt-get install {package}` (scripts/test does this)"
    );
    path
}

/// A shared HTTP client (installing the rustls provider this workspace uses).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    })
}

/// GET with the shared client.
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

/// A loopback port nobody is listening on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("addr").port()
}

/// Waits until `url` answers 2xx; false if it did not within `timeout`.
pub async fn wait_ready(url: &str, timeout: Duration) -> bool {
    wait_for(timeout, || async {
        http_get(url)
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await
    .is_some()
}

/// Polls `f` until it returns `Some`, or the timeout passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The workspace's root directory.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, or `target/` in the workspace).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A workspace binary from the debug build; panics with what to run when it is missing.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let p = target_dir().join("debug").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

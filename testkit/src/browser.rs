//! Debian's Chromium, headless, driven through chromedriver (WebDriver) with `fantoccini`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::{Server, free_port, require, wait_for};

/// A headless Chromium session; chromedriver stops when this is dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Server,
}

impl Browser {
    /// Starts chromedriver and a Chromium with a fresh profile under `dir`, without any of
    /// Chromium's background network traffic.
    pub async fn start(dir: &Path) -> Browser {
        let driver = require("chromedriver", "chromium-driver");
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("chromedriver log");
        let proc = Server(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = dir.join("chromium-profile");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1366,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_for(Duration::from_secs(30), || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await
        .expect("chromedriver accepts a session");
        Browser {
            client,
            _driver: proc,
        }
    }

    /// Runs `script` (a function body) in the page; `null` on error.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(serde_json::Value::Null)
    }
}

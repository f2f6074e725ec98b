//! The feed-app instances: each is a `feed-app` process with its own `nunchi-agent` (as in
//! the compose file, one agent per replica), added to the load balancer once it answers
//! and removed from it before it is stopped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::balancer::Balancer;
use crate::{StackError, free_port, terminate};

/// What every instance is started with.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Directory of the binaries.
    pub bin_dir: PathBuf,
    /// Where instances keep their logs and agent buffers.
    pub data_dir: PathBuf,
    /// The feed database every instance shares.
    pub database_url: String,
    /// Redis, instead of each instance's in-process cache.
    pub redis_url: Option<String>,
    /// The collector's remote_write URL.
    pub push_url: String,
    /// Fewest instances (scale-in stops here).
    pub min: usize,
    /// Most instances (scale-out stops here).
    pub max: usize,
}

struct Instance {
    name: String,
    url: String,
    app: Child,
    agent: Child,
}

/// The running instances.
pub struct Fleet {
    opts: FleetOptions,
    balancer: Balancer,
    instances: Mutex<Vec<Instance>>,
    started: Mutex<usize>,
}

impl Fleet {
    /// An empty fleet behind `balancer`.
    pub fn new(opts: FleetOptions, balancer: Balancer) -> Fleet {
        Fleet {
            opts,
            balancer,
            instances: Mutex::new(Vec::new()),
            started: Mutex::new(0),
        }
    }

    /// Instances serving now.
    pub async fn size(&self) -> usize {
        self.instances.lock().await.len()
    }

    /// Names and URLs of the serving instances.
    pub async fn members(&self) -> Vec<(String, String)> {
        self.instances
            .lock()
            .await
            .iter()
            .map(|i| (i.name.clone(), i.url.clone()))
            .collect()
    }

    /// Adds up to `n` instances (not past the maximum); returns how many were added.
    pub async fn scale_out(&self, n: usize) -> Result<usize, StackError> {
        let mut added = 0;
        for _ in 0..n {
            if self.size().await >= self.opts.max {
                break;
            }
            let inst = self.start_instance().await?;
            self.balancer.add(&inst.url);
            tracing::info!(instance = %inst.name, url = %inst.url, "instance joined the balancer");
            self.instances.lock().await.push(inst);
            added += 1;
        }
        Ok(added)
    }

    /// Removes up to `n` instances (not below the minimum), newest first; returns how many.
    pub async fn scale_in(&self, n: usize) -> usize {
        let mut removed = 0;
        for _ in 0..n {
            let inst = {
                let mut list = self.instances.lock().await;
                if list.len() <= self.opts.min {
                    break;
                }
                list.pop()
            };
            let Some(inst) = inst else { break };
            self.balancer.remove(&inst.url);
            // Requests already forwarded finish before the process stops.
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop_instance(inst).await;
            removed += 1;
        }
        removed
    }

    /// Stops every instance.
    pub async fn stop_all(&self) {
        let all: Vec<Instance> = self.instances.lock().await.drain(..).collect();
        for inst in all {
            self.balancer.remove(&inst.url);
            stop_instance(inst).await;
        }
    }

    async fn start_instance(&self) -> Result<Instance, StackError> {
        let n = {
            let mut s = self.started.lock().await;
            *s += 1;
            *s
        };
        let name = format!("feed-{n}");
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let log = |what: &str| -> Result<Stdio, StackError> {
            let path = self.opts.data_dir.join(format!("{name}-{what}.log"));
            std::fs::File::create(&path)
                .map(Stdio::from)
                .map_err(|source| StackError::Io { path, source })
        };
        let mut app = Command::new(self.opts.bin_dir.join("feed-app"));
        app.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(&self.opts.database_url);
        if let Some(r) = &self.opts.redis_url {
            app.arg("--redis-url").arg(r);
        }
        let app = crate::spawn(app.stdout(Stdio::null()).stderr(log("app")?), "feed-app")?;
        crate::wait_ready(&format!("{url}/healthz"), Duration::from_secs(60))
            .await
            .map_err(|_| StackError::NotReady(format!("{name} ({url})")))?;
        let mut agent = Command::new(self.opts.bin_dir.join("nunchi-agent"));
        agent
            .args(["--interval", "1s", "--hostname", &name])
            .arg("--push-url")
            .arg(&self.opts.push_url)
            .arg("--scrape")
            .arg(format!("feed={url}/metrics"))
            .arg("--buffer-dir")
            .arg(self.opts.data_dir.join(format!("{name}-agent-buffer")))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()?));
        let agent = crate::spawn(
            agent.stdout(Stdio::null()).stderr(log("agent")?),
            "nunchi-agent",
        )?;
        Ok(Instance {
            name,
            url,
            app,
            agent,
        })
    }
}

async fn stop_instance(mut inst: Instance) {
    terminate(&mut inst.app).await;
    terminate(&mut inst.agent).await;
    tracing::info!(instance = %inst.name, "instance stopped");
}

//! The whole nunchi stack on one machine, as a new user first meets it: the collector (with
//! the default rules, the scaling rules and the dashboard), feed-app instances each with
//! its own agent behind a round-robin load balancer, a local Slack API that logs what it
//! would have posted, a local autoscaler that consumes the scale webhooks and really adds
//! and removes instances, and the load generator.
//!
//! [`Stack::start`] brings it up (processes from the workspace's binaries, servers in this
//! process); [`Stack::stop`] takes it down, instances first. [`scenario`] runs the
//! flash-sale story against a running stack.

pub mod autoscaler;
pub mod balancer;
pub mod fleet;
pub mod scenario;
pub mod sinks;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::sinks::SlackServer;
use tokio::process::{Child, Command};

use crate::autoscaler::Autoscaler;
use crate::balancer::Balancer;
use crate::fleet::{Fleet, FleetOptions};

/// The collector's default rules, as shipped.
pub const DEFAULT_RULES: &str = include_str!("../../collector/rules/default.yml");

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A binary is missing.
    #[error("{0} is missing: build the workspace first (`cargo build --release --workspace`)")]
    MissingBinary(PathBuf),
    /// A process did not start.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A part did not become ready in time.
    #[error("{0} did not become ready")]
    NotReady(String),
    /// PostgreSQL refused.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// A file or socket problem.
    #[error("{path}: {source}")]
    Io {
        /// The file or address.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How the stack is started. Defaults are the demo's.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Directory of the workspace's binaries (`target/release`).
    pub bin_dir: PathBuf,
    /// Where every part keeps its data and logs.
    pub data_dir: PathBuf,
    /// Collector (API and dashboard) address.
    pub collector_port: u16,
    /// Load balancer port.
    pub balancer_port: u16,
    /// PostgreSQL for the collector and the feed service, instead of SQLite files.
    pub postgres_url: Option<String>,
    /// Redis for the feed service, instead of its in-process cache.
    pub redis_url: Option<String>,
    /// Instances at start (also the fewest scale-in leaves).
    pub instances: usize,
    /// Most instances scale-out adds up to.
    pub max_instances: usize,
    /// Per-instance requests/s above which the fleet is scaled out.
    pub scale_out_above: f64,
    /// Per-instance requests/s below which the fleet is scaled in.
    pub scale_in_below: f64,
    /// The window the per-instance rate is taken over.
    pub rate_window: Duration,
    /// How long the overload must last before paging and scaling out.
    pub scale_out_for: Duration,
    /// How long the fleet must be idle before scaling in.
    pub scale_in_for: Duration,
    /// No second scale action within this.
    pub cooldown: Duration,
    /// The steady load generator's rate (requests/s); 0 for none.
    pub load_rate: f64,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            bin_dir: PathBuf::from("target/release"),
            data_dir: PathBuf::from("data/stack"),
            collector_port: 9300,
            balancer_port: 8080,
            postgres_url: None,
            redis_url: None,
            instances: 2,
            max_instances: 4,
            scale_out_above: 12.0,
            scale_in_below: 6.0,
            rate_window: Duration::from_secs(10),
            scale_out_for: Duration::from_secs(3),
            scale_in_for: Duration::from_secs(15),
            cooldown: Duration::from_secs(30),
            load_rate: 8.0,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The scaling rules: page and scale out when an instance is overloaded, scale in when
/// every instance is idle.
pub fn scaling_rules(o: &StackOptions) -> String {
    // User traffic: feed reads and posts (not the load generator's set-up of users and
    // follows).
    let rate = format!(
        "sum by (instance) (rate(http_requests_total{{job=\"feed\",route=~\"/api/feed|/api/posts\"}}[{}]))",
        secs(o.rate_window)
    );
    format!(
        r#"# The stack's scaling rules (nunchi extension labels scale, scale_group, scale_step).
groups:
  - name: feed-scaling
    interval: 1s
    rules:
      - alert: FeedInstanceOverloaded
        expr: {rate} > {out}
        for: {out_for}
        labels:
          severity: critical
          scale: out
          scale_group: feed-app
          scale_step: "1"
        annotations:
          summary: "{{{{ $labels.instance }}}} serves {{{{ $value | humanize }}}} requests/s (limit {out})"
          runbook: "The autoscaler adds an instance; if it cannot, add one by hand and look for what drives the load."
      - alert: FeedFleetIdle
        expr: max({rate}) < {inn}
        for: {in_for}
        labels:
          severity: info
          scale: in
          scale_group: feed-app
          scale_step: "1"
        annotations:
          summary: "The busiest instance serves {{{{ $value | humanize }}}} requests/s: capacity can go"
"#,
        out = o.scale_out_above,
        inn = o.scale_in_below,
        out_for = secs(o.scale_out_for),
        in_for = secs(o.scale_in_for),
    )
}

/// The alert delivery configuration: Slack for warnings and pages, nothing for `info`, and
/// the autoscaler as the scale hook.
pub fn alerting_config(
    o: &StackOptions,
    slack: &SlackServer,
    autoscaler_url: &str,
    secret: &str,
) -> String {
    format!(
        r#"route:
  receiver: slack
  group_by: [alertname, instance, host]
  routes:
    - matchers: [severity="info"]
      receiver: quiet
receivers:
  - name: slack
    slack_configs:
      - api_url: {api}/chat.postMessage
        channel: '#ops'
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
  - name: quiet
scale_hooks:
  - name: autoscaler
    url: {autoscaler_url}/scale
    hmac_secret: {secret}
    cooldown: {cooldown}
    groups: [feed-app]
"#,
        api = slack.api_url,
        token = slack.token,
        cooldown = secs(o.cooldown),
    )
}

/// An HTTP client (rustls with the ring provider, installed on first use).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The URL of database `name` on the server `server_url` points at, created if missing
/// (the collector and the feed service each keep their own schema migrations).
pub async fn postgres_database(server_url: &str, name: &str) -> Result<String, StackError> {
    use sqlx::Connection;
    let err = |e: String| StackError::Postgres(format!("{server_url}: {e}"));
    let mut conn = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|e| err(e.to_string()))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| err(e.to_string()))?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    let mut url = url::Url::parse(server_url).map_err(|e| err(e.to_string()))?;
    url.set_path(name);
    Ok(url.to_string())
}

/// A free loopback port.
pub fn free_port() -> Result<u16, StackError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| StackError::Io {
            path: "127.0.0.1:0".into(),
            source,
        })
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, StackError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    if !program.is_file() {
        return Err(StackError::MissingBinary(program));
    }
    cmd.kill_on_drop(true)
        .spawn()
        .map_err(|source| StackError::Spawn {
            what: what.to_owned(),
            source,
        })
}

/// Waits until `url` answers 2xx.
async fn wait_ready(url: &str, timeout: Duration) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let client = http_client();
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(())
}

/// SIGTERM, then SIGKILL if the process has not exited within 10 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio, StackError> {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .map(Stdio::from)
        .map_err(|source| StackError::Io { path, source })
}

async fn serve(router: axum::Router, port: u16) -> Result<String, StackError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| StackError::Io {
            path: format!("127.0.0.1:{port}").into(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StackError::Io {
        path: format!("127.0.0.1:{port}").into(),
        source,
    })?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}"))
}

/// A running stack.
pub struct Stack {
    /// The dashboard (and Prometheus API) URL.
    pub collector_url: String,
    /// The load balancer's URL (the feed service's public address).
    pub balancer_url: String,
    /// The local Slack.
    pub slack: SlackServer,
    /// The feed-app instances.
    pub fleet: Arc<Fleet>,
    /// The balancer.
    pub balancer: Balancer,
    /// The autoscaler.
    pub autoscaler: Autoscaler,
    /// Options it runs with.
    pub options: StackOptions,
    collector: Child,
    load: Option<Child>,
}

impl Stack {
    /// Starts every part and waits until each is ready; `progress` hears each step.
    pub async fn start(o: StackOptions, progress: impl Fn(&str)) -> Result<Stack, StackError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StackError::Io { path, source }
        };
        std::fs::create_dir_all(&o.data_dir).map_err(io(&o.data_dir))?;
        let data = std::fs::canonicalize(&o.data_dir).map_err(io(&o.data_dir))?;
        let secret = format!("nunchi-stack-{}", std::process::id());

        progress("local Slack API");
        let slack = SlackServer::start().await;

        progress("load balancer");
        let balancer = Balancer::new();
        let balancer_url = serve(balancer.router(), o.balancer_port).await?;

        let collector_url = format!("http://127.0.0.1:{}", o.collector_port);
        let (collector_db, feed_db) = match &o.postgres_url {
            Some(u) => {
                progress("PostgreSQL databases nunchi_collector and nunchi_feed");
                (
                    Some(postgres_database(u, "nunchi_collector").await?),
                    postgres_database(u, "nunchi_feed").await?,
                )
            }
            None => (
                None,
                format!("sqlite://{}", data.join("feed-app.db").display()),
            ),
        };
        let fleet = Arc::new(Fleet::new(
            FleetOptions {
                bin_dir: o.bin_dir.clone(),
                data_dir: data.clone(),
                database_url: feed_db,
                redis_url: o.redis_url.clone(),
                push_url: format!("{collector_url}/api/v1/write"),
                min: o.instances,
                max: o.max_instances.max(o.instances),
            },
            balancer.clone(),
        ));
        progress("autoscaler");
        let autoscaler = Autoscaler::new(fleet.clone(), &secret);
        let autoscaler_url = serve(autoscaler.router(), 0).await?;

        progress("collector (rules, alerting, dashboard)");
        let rules = [
            ("default-rules.yml", DEFAULT_RULES.to_owned()),
            ("scaling-rules.yml", scaling_rules(&o)),
            (
                "alertmanager.yml",
                alerting_config(&o, &slack, &autoscaler_url, &secret),
            ),
        ];
        for (name, text) in &rules {
            let p = data.join(name);
            std::fs::write(&p, text).map_err(io(&p))?;
        }
        let mut c = Command::new(o.bin_dir.join("nunchi-collector"));
        c.arg("--listen")
            .arg(format!("127.0.0.1:{}", o.collector_port))
            .arg("--data-dir")
            .arg(data.join("collector"))
            .arg("--rules")
            .arg(format!(
                "{},{}",
                data.join("default-rules.yml").display(),
                data.join("scaling-rules.yml").display()
            ))
            .arg("--alerting-config")
            .arg(data.join("alertmanager.yml"))
            .env(
                "NUNCHI_LOG",
                std::env::var("NUNCHI_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(db) = &collector_db {
            c.arg("--database-url").arg(db);
        }
        let collector = spawn(
            c.stdout(Stdio::null())
                .stderr(log_file(&data, "collector.log")?),
            "nunchi-collector",
        )?;
        wait_ready(&format!("{collector_url}/-/ready"), Duration::from_secs(60))
            .await
            .map_err(|_| StackError::NotReady("the collector (see collector.log)".into()))?;

        progress(&format!(
            "{} feed-app instances with their agents",
            o.instances
        ));
        fleet.scale_out(o.instances).await?;

        let mut stack = Stack {
            collector_url,
            balancer_url,
            slack,
            fleet,
            balancer,
            autoscaler,
            options: o.clone(),
            collector,
            load: None,
        };
        if o.load_rate > 0.0 {
            progress(&format!(
                "load generator, steady {} requests/s",
                o.load_rate
            ));
            stack.load = Some(stack.start_load(o.load_rate, 200, 20, "steady")?);
        }
        Ok(stack)
    }

    /// Starts a `feed-loadgen` against the balancer at `rate` requests/s for an hour, after
    /// setting up `users` users with `follows` follows each.
    pub fn start_load(
        &self,
        rate: f64,
        users: u32,
        follows: u32,
        name: &str,
    ) -> Result<Child, StackError> {
        let dir = &self.options.data_dir;
        let mut l = Command::new(self.options.bin_dir.join("feed-loadgen"));
        l.arg("--target")
            .arg(&self.balancer_url)
            .arg("--rate")
            .arg(rate.to_string())
            .args(["--duration", "3600s"])
            .arg("--users")
            .arg(users.to_string())
            .arg("--follows")
            .arg(follows.to_string());
        spawn(
            l.stdout(Stdio::null())
                .stderr(log_file(dir, &format!("loadgen-{name}.log"))?),
            "feed-loadgen",
        )
    }

    /// Stops the load, the instances, then the collector.
    pub async fn stop(mut self) {
        if let Some(mut l) = self.load.take() {
            terminate(&mut l).await;
        }
        self.fleet.stop_all().await;
        terminate(&mut self.collector).await;
    }
}

/// Returns `p` or, when relative, `p` under the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

//! Alert latency: from the moment a breaching sample is acknowledged (remote_write 2xx) to
//! the Slack message and to the webhook, and again for the resolve; then from the moment a
//! host metric changes, through the agent. nunchi-collector next to Debian's Prometheus +
//! Alertmanager fed the same samples, both at the fastest settings (evaluation 1 s,
//! group_wait 0 s, group_interval 1 s), then nunchi at its own defaults (no timings in the
//! config). Slack and the webhook receiver are local servers (nunchi_stack::sinks).
//!
//! `cargo build --release -p nunchi-agent && cargo bench -p nunchi-collector --bench
//! alert_latency -- [TRIALS]` (default 20; the agent binary is taken from the same target
//! directory, or from `NUNCHI_AGENT_BIN`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nunchi_codec::remote_write::{self, WriteRequest};
use nunchi_model::{Labels, Sample, Series};
use nunchi_stack::sinks::{SlackServer, WebhookReceiver};
use nunchi_testkit::{Server, client, free_port, http_get, now_ms, require, wait_for};

const SECRET: &str = "bench-secret";
/// How long a notification may take before it counts as not delivered.
const TIMEOUT_S: u64 = 10;
const RULES: &str = "groups:\n  - name: bench\n    rules:\n      - alert: BenchBreach\n        expr: bench_value > 0.5\n        labels:\n          severity: critical\n        annotations:\n          summary: bench {{ $labels.trial }}\n";

struct System {
    write_url: String,
    slack: SlackServer,
    hook: WebhookReceiver,
    _servers: Vec<Server>,
}

fn spawn(mut cmd: Command) -> Server {
    Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

async fn ready(url: String) {
    wait_for(Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            http_get(&url)
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        }
    })
    .await
    .unwrap_or_else(|| panic!("{url} never became ready"));
}

async fn nunchi(dir: &Path, name: &str, tuned: bool) -> System {
    let slack = SlackServer::start().await;
    slack.set_rate_limited(false);
    let hook = WebhookReceiver::start(SECRET).await;
    let timings = if tuned {
        "  group_wait: 0s\n  group_interval: 1s\n"
    } else {
        ""
    };
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname, trial]\n{timings}receivers:\n  - name: oncall\n    slack_configs:\n      - api_url: {}/services/T/B/nunchi\n        send_resolved: true\n    webhook_configs:\n      - url: {}/nunchi\n        hmac_secret: {SECRET}\n",
        slack.base_url, hook.url
    );
    std::fs::write(dir.join("rules.yml"), RULES).expect("rules");
    std::fs::write(dir.join("am.yml"), am).expect("am");
    let port = free_port();
    let mut c = Command::new(env!("CARGO_BIN_EXE_nunchi-collector"));
    c.args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .arg("--rules")
        .arg(dir.join("rules.yml"))
        .arg("--alerting-config")
        .arg(dir.join("am.yml"))
        .env("NUNCHI_LOG", "warn");
    if tuned {
        c.args(["--evaluation-interval", "1s"]);
    }
    let server = spawn(c);
    ready(format!("http://127.0.0.1:{port}/-/ready")).await;
    let _ = name;
    System {
        write_url: format!("http://127.0.0.1:{port}/api/v1/write"),
        slack,
        hook,
        _servers: vec![server],
    }
}

async fn prometheus_alertmanager(dir: &Path) -> System {
    let slack = SlackServer::start().await;
    slack.set_rate_limited(false);
    let hook = WebhookReceiver::start(SECRET).await;
    hook.accept_unsigned();
    let am_port = free_port();
    let am = format!(
        "route:\n  receiver: oncall\n  group_by: [alertname, trial]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: oncall\n    slack_configs:\n      - api_url: {}/services/T/B/am\n        send_resolved: true\n    webhook_configs:\n      - url: {}/am\n",
        slack.base_url, hook.url
    );
    std::fs::write(dir.join("alertmanager.yml"), am).expect("am config");
    let mut a = Command::new(require(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
    ));
    a.arg(format!(
        "--config.file={}",
        dir.join("alertmanager.yml").display()
    ))
    .arg(format!("--storage.path={}", dir.join("am-data").display()))
    .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
    .arg("--cluster.listen-address=");
    let am_server = spawn(a);
    ready(format!("http://127.0.0.1:{am_port}/-/ready")).await;
    std::fs::write(dir.join("rules.yml"), RULES).expect("rules");
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1h\n  evaluation_interval: 1s\nrule_files: [{}]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n",
            dir.join("rules.yml").display()
        ),
    )
    .expect("prometheus config");
    let mut p = Command::new(require("prometheus", "prometheus"));
    p.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("prom-data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
    .arg("--web.enable-remote-write-receiver");
    let prom_server = spawn(p);
    ready(format!("http://127.0.0.1:{prom_port}/-/ready")).await;
    System {
        write_url: format!("http://127.0.0.1:{prom_port}/api/v1/write"),
        slack,
        hook,
        _servers: vec![prom_server, am_server],
    }
}

async fn push(url: &str, instance: &str, v: f64) {
    let s = Series {
        labels: Labels::from_pairs([("__name__", "bench_value"), ("trial", instance)]),
        samples: vec![Sample {
            timestamp_ms: now_ms(),
            value: v,
        }],
    };
    let body = remote_write::encode(&WriteRequest::from_series(&[s]));
    let r = client()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("push");
    assert!(r.status().is_success(), "push to {url}: {}", r.status());
}

/// Waits for the Slack message and the webhook about `instance` in `state`; returns
/// their times since `t0` (None: not within `TIMEOUT_S`).
async fn arrival(
    sys: &System,
    instance: &str,
    resolved: bool,
    t0: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let slack_hit = |m: &nunchi_stack::sinks::SlackMessage| {
        let b = m.body.to_string();
        let mentions = b.contains(&format!("bench {instance}\\n"))
            || b.contains(&format!("bench {instance}\""))
            || b.contains(&format!(" {instance} "))
            || b.contains(&format!(" {instance}\""));
        let is_resolved = b.contains("RESOLVED");
        m.at >= t0 && mentions && is_resolved == resolved
    };
    let hook_hit = |r: &nunchi_stack::sinks::WebhookRequest| {
        r.at >= t0
            && r.body["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["trial"] == instance && (x["status"] == "resolved") == resolved
                })
            })
    };
    let deadline = t0 + Duration::from_secs(TIMEOUT_S);
    let (mut s, mut h) = (None, None);
    while Instant::now() < deadline && (s.is_none() || h.is_none()) {
        if s.is_none() {
            s = sys
                .slack
                .messages()
                .iter()
                .find(|m| slack_hit(m))
                .map(|m| m.at - t0);
        }
        if h.is_none() {
            h = sys
                .hook
                .received()
                .iter()
                .find(|r| hook_hit(r))
                .map(|r| r.at - t0);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (s, h)
}

#[derive(Default)]
struct Stats(Vec<f64>);

impl Stats {
    fn add(&mut self, d: Option<Duration>) {
        self.0
            .push(d.map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0));
    }
    fn pct(&self, p: f64) -> String {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return "-".into();
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        let x = v[i];
        let lost = v.iter().filter(|x| !x.is_finite()).count();
        if x.is_finite() {
            format!("{x:.0}")
        } else {
            format!("none in {TIMEOUT_S} s ({lost}/{})", v.len())
        }
    }
}

/// One unmeasured alert through each system, so start-up (Prometheus discovering its
/// Alertmanager, connections) is not measured.
async fn warm_up(systems: &[&System], label: &str) {
    for sys in systems {
        let instance = format!("{label}-warmup");
        push(&sys.write_url, &instance, 1.0).await;
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(120);
        while Instant::now() < deadline
            && !sys
                .hook
                .received()
                .iter()
                .any(|r| r.body["alerts"][0]["labels"]["trial"] == instance.as_str())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        push(&sys.write_url, &instance, 0.0).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn trials(systems: &[&System], n: usize, label: &str) -> Vec<[Stats; 4]> {
    warm_up(systems, label).await;
    let mut out: Vec<[Stats; 4]> = systems.iter().map(|_| Default::default()).collect();
    for i in 0..n {
        let instance = format!("{label}-{i}");
        for (k, sys) in systems.iter().enumerate() {
            push(&sys.write_url, &instance, 1.0).await;
            let t0 = Instant::now();
            let (s, h) = arrival(sys, &instance, false, t0).await;
            out[k][0].add(s);
            out[k][1].add(h);
            push(&sys.write_url, &instance, 0.0).await;
            let t1 = Instant::now();
            let (s, h) = arrival(sys, &instance, true, t1).await;
            out[k][2].add(s);
            out[k][3].add(h);
        }
        eprintln!("alert_latency: {label} trial {}/{n}", i + 1);
    }
    out
}

/// An exposition endpoint with one gauge per instance, for the agent path.
async fn exposition(values: Arc<Mutex<Vec<(String, f64)>>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let v = values.clone();
            async move {
                let mut out = String::from("# TYPE bench_value gauge\n");
                for (i, x) in v.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    out.push_str(&format!("bench_value{{trial=\"{i}\"}} {x}\n"));
                }
                out
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/metrics")
}

async fn agent_trials(systems: &[&System], n: usize, dir: &Path) -> Vec<[Stats; 2]> {
    let values = Arc::new(Mutex::new(Vec::new()));
    let url = exposition(values.clone()).await;
    let agent_bin = std::env::var("NUNCHI_AGENT_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("exe");
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("nunchi-agent").display().to_string())
            .unwrap_or_default()
    });
    let mut cmd = Command::new(agent_bin);
    cmd.args([
        "--interval",
        "1s",
        "--scrape",
        &format!("bench={url}"),
        "--buffer-dir",
    ])
    .arg(dir.join("agent-buffer"))
    .env("NUNCHI_LOG", "warn");
    for s in systems {
        cmd.args(["--push-url", &s.write_url]);
    }
    let _agent = spawn(cmd);
    let mut out: Vec<[Stats; 2]> = systems.iter().map(|_| Default::default()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..n {
        let instance = format!("agent-{i}");
        values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((instance.clone(), 1.0));
        let t0 = Instant::now();
        let arrivals = futures_util::future::join_all(
            systems.iter().map(|s| arrival(s, &instance, false, t0)),
        )
        .await;
        for (k, (s, _)) in arrivals.into_iter().enumerate() {
            out[k][0].add(s);
        }
        if let Some(v) = values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .find(|(n, _)| *n == instance)
        {
            v.1 = 0.0;
        }
        let t1 = Instant::now();
        let arrivals =
            futures_util::future::join_all(systems.iter().map(|s| arrival(s, &instance, true, t1)))
                .await;
        for (k, (s, _)) in arrivals.into_iter().enumerate() {
            out[k][1].add(s);
        }
        eprintln!("alert_latency: agent trial {}/{n}", i + 1);
    }
    out
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let (d1, d2, d3) = (dir.path().join("n"), dir.path().join("p"), dir.path().join("d"));
        for d in [&d1, &d2, &d3] {
            std::fs::create_dir_all(d).expect("dir");
        }
        let ours = nunchi(&d1, "nunchi", true).await;
        let theirs = prometheus_alertmanager(&d2).await;
        let same = trials(&[&ours, &theirs], n, "push").await;
        let agent = agent_trials(&[&ours, &theirs], n, dir.path()).await;
        drop(ours);
        drop(theirs);
        let defaults = nunchi(&d3, "nunchi (defaults)", false).await;
        let def = trials(&[&defaults], n, "defaults").await;
        println!("\nAlert latency, {n} trials each, milliseconds p50 / p99 (max of {n} ~ p99)\n");
        println!("| path | system | firing → Slack | firing → webhook | resolved → Slack | resolved → webhook |");
        println!("|---|---|---|---|---|---|");
        for (name, s) in [("remote_write ack, same settings", &same[0]), ("remote_write ack, same settings ", &same[1]), ("remote_write ack, nunchi defaults", &def[0])] {
            let sys = if name.ends_with(' ') { "Prometheus + Alertmanager" } else { "nunchi" };
            println!("| {} | {sys} | {} / {} | {} / {} | {} / {} | {} / {} |", name.trim(), s[0].pct(50.0), s[0].pct(99.0), s[1].pct(50.0), s[1].pct(99.0), s[2].pct(50.0), s[2].pct(99.0), s[3].pct(50.0), s[3].pct(99.0));
        }
        for (k, sys) in ["nunchi", "Prometheus + Alertmanager"].iter().enumerate() {
            let s = &agent[k];
            println!("| host metric change via agent (1 s interval) | {sys} | {} / {} | | {} / {} | |", s[0].pct(50.0), s[0].pct(99.0), s[1].pct(50.0), s[1].pct(99.0));
        }
    });
}

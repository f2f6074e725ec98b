//! The flash-sale story, end to end against a running [`Stack`]: load jumps, per-instance
//! load climbs past the scaling rule, Slack is paged and the autoscaler asked for an
//! instance, the new instance joins and takes traffic, the alert resolves and its Slack
//! message says so, the load falls back, and after the cooldown the fleet is scaled in.

use std::time::{Duration, Instant};

use nunchi_model::ScaleAction;

use crate::Stack;

/// One step of the story and when it happened, counted from the load jump.
#[derive(Debug, Clone)]
pub struct Step {
    /// What happened.
    pub what: String,
    /// Since the load jumped.
    pub after: Duration,
}

/// What the story measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// From the load jump to the Slack page.
    pub page_after: Option<Duration>,
}

/// Why the story did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A step did not happen in time.
    #[error("timed out after {secs} s waiting for: {what}")]
    Timeout {
        /// The step.
        what: String,
        /// How long it waited.
        secs: u64,
    },
    /// The spike's load generator did not start.
    #[error(transparent)]
    Stack(#[from] crate::StackError),
}

async fn until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> Result<T, ScenarioError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(ScenarioError::Timeout {
                what: what.to_owned(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn query_number(base: &str, q: &str) -> Option<f64> {
    let v: serde_json::Value = crate::http_client()
        .get(format!(
            "{base}/api/v1/query?query={}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Runs the story; `spike_rate` requests/s are added on top of the steady load.
pub async fn flash_sale(
    stack: &Stack,
    spike_rate: f64,
    progress: impl Fn(&Step),
) -> Result<Report, ScenarioError> {
    let o = &stack.options;
    let base = stack.collector_url.clone();
    let start_size = stack.fleet.size().await;
    until(
        "every instance reporting",
        Duration::from_secs(90),
        async || {
            let n = query_number(&base, "count(up{job=\"feed\"} == 1)").await?;
            (n >= start_size as f64).then_some(())
        },
    )
    .await?;
    let mut report = Report::default();
    let jump = Instant::now();
    let step = |what: String, report: &mut Report| {
        let s = Step {
            what,
            after: jump.elapsed(),
        };
        progress(&s);
        report.steps.push(s);
    };
    step(
        format!("load jumps by {spike_rate} requests/s"),
        &mut report,
    );
    let mut spike = stack.start_load(spike_rate, 50, 5, "spike")?;
    let slack = stack.slack.clone();
    let is_page = |m: &crate::sinks::SlackMessage| {
        let t = m.all_text();
        m.method == "chat.postMessage"
            && t.contains("FeedInstanceOverloaded")
            && t.contains("FIRING")
    };
    let page = until("the Slack page", Duration::from_secs(120), async || {
        slack.messages().into_iter().find(is_page)
    })
    .await?;
    report.page_after = Some(page.at.saturating_duration_since(jump));
    step(
        format!(
            "Slack page: {}",
            page.all_text().lines().next().unwrap_or_default()
        ),
        &mut report,
    );
    let out = until("a scale-out webhook", Duration::from_secs(60), async || {
        stack
            .autoscaler
            .events()
            .into_iter()
            .find(|e| e.request.action == ScaleAction::ScaleOut)
    })
    .await?;
    step(
        format!(
            "scale-out webhook: value {:.1} over {:.1}, {} instances",
            out.request.value.unwrap_or(f64::NAN),
            out.request.threshold.unwrap_or(f64::NAN),
            out.size_after
        ),
        &mut report,
    );
    let newest = until(
        "the new instance serving",
        Duration::from_secs(60),
        async || {
            let members = stack.fleet.members().await;
            let (_, url) = members.get(start_size)?.clone();
            stack
                .balancer
                .backends()
                .into_iter()
                .find(|(u, served)| *u == url && *served > 0)
                .map(|_| members[start_size].0.clone())
        },
    )
    .await?;
    step(format!("{newest} joined and serves requests"), &mut report);
    let page_ts = page.ts.clone();
    until(
        "the Slack message to say resolved",
        Duration::from_secs(120),
        async || {
            slack.messages().into_iter().find(|m| {
                m.method == "chat.update" && m.ts == page_ts && m.all_text().contains("RESOLVED")
            })
        },
    )
    .await?;
    step(
        "the alert resolved and its Slack message says so".into(),
        &mut report,
    );
    crate::terminate(&mut spike).await;
    step("load back to normal".into(), &mut report);
    let wait_in = o.cooldown + o.scale_in_for + o.rate_window + Duration::from_secs(60);
    let scaled_in = until("a scale-in webhook", wait_in, async || {
        stack
            .autoscaler
            .events()
            .into_iter()
            .find(|e| e.request.action == ScaleAction::ScaleIn)
    })
    .await?;
    until(
        "the fleet back to its size",
        Duration::from_secs(30),
        async || (stack.fleet.size().await == start_size).then_some(()),
    )
    .await?;
    step(
        format!(
            "scale-in after the cooldown: {} instances",
            scaled_in.size_after
        ),
        &mut report,
    );
    Ok(report)
}

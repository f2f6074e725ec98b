//! Slack through `slack-morphism`: Block Kit messages that say what fired, where, how bad
//! (value against threshold), since when, with runbook and dashboard links. With a bot
//! token a message is posted with `chat.postMessage` and, on resolve, updated in place with
//! `chat.update`; through an incoming webhook the resolve is a new message. A digest folds
//! several queued notifications for one channel into one message.
//!
//! Text that comes from data (label values, annotations, the alert name) is escaped as
//! Slack documents for `mrkdwn` (`&`, `<`, `>`), so a label value cannot mention
//! `<!channel>` or show a link under a false name; the links and emphasis this module
//! writes itself, and a receiver's own `title`, are markup and are not escaped.
//!
//! Any 2xx from Slack is a delivery: a body that is not the answer `chat.postMessage`
//! documents (a proxy's plain `ok`) only means the message's `ts` is not known for
//! threading, never that it is sent again.

use std::collections::HashMap;
use std::sync::Mutex;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::{AttemptError, Notification};
use crate::config::SlackTarget;
use crate::store::SlackRef;

type Client = SlackClient<
    SlackClientHyperConnector<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
>;

/// Slack clients, one per API base URL.
#[derive(Default)]
pub struct Slack {
    clients: Mutex<HashMap<String, std::sync::Arc<Client>>>,
}

fn connector(
    base: &str,
) -> Result<
    SlackClientHyperConnector<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    AttemptError,
> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| AttemptError {
            status: None,
            message: format!("TLS roots: {e}"),
            retry_after: None,
            retryable: false,
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(SlackClientHyperConnector::with_connector(https).with_slack_api_url(base))
}

/// `Ok(None)` for an error that still means Slack took the message: a 2xx whose body is
/// not the documented answer.
fn delivered_anyway(e: SlackClientError) -> Result<Option<SlackRef>, AttemptError> {
    match e {
        // A JSON body that says `"ok": false` (a 429 whose body did not parse, an error
        // without its `error` field) is a refusal all the same.
        SlackClientError::ProtocolError(p)
            if p.json_body.as_deref().is_some_and(|b| {
                serde_json::from_str::<serde_json::Value>(b)
                    .is_ok_and(|v| v.get("ok") == Some(&serde_json::Value::Bool(false)))
            }) =>
        {
            Err(AttemptError {
                status: None,
                message: format!(
                    "Slack refused the message: {}",
                    p.json_body.unwrap_or_default()
                ),
                retry_after: None,
                retryable: true,
            })
        }
        SlackClientError::ProtocolError(p) => {
            tracing::warn!(error = %p, "Slack answered 2xx with a body it does not document; counted as delivered (no thread)");
            Ok(None)
        }
        SlackClientError::HttpError(h) if h.status_code.is_success() => Ok(None),
        other => Err(failed(other)),
    }
}

/// `s` with `&`, `<` and `>` escaped, as Slack's `mrkdwn` needs for text shown as is.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `url` made safe inside `<url|text>`: escaped, and a `|` (which would end the URL)
/// percent-encoded.
fn link_url(url: &str) -> String {
    escape(url).replace('|', "%7C")
}

/// A label value as one path segment of a URL.
fn path_segment(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn failed(e: SlackClientError) -> AttemptError {
    match e {
        SlackClientError::RateLimitError(r) => AttemptError {
            status: Some(429),
            message: "rate limited (429)".to_owned(),
            retry_after: Some(r.retry_after.unwrap_or(std::time::Duration::from_secs(1))),
            retryable: true,
        },
        SlackClientError::HttpError(h) => {
            let code = h.status_code.as_u16();
            AttemptError {
                status: Some(code),
                message: format!("HTTP {code}: {}", h.http_response_body.unwrap_or_default()),
                retry_after: None,
                retryable: code >= 500 || code == 408,
            }
        }
        SlackClientError::ApiError(a) => AttemptError {
            status: Some(200),
            retryable: matches!(
                a.code.as_str(),
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
            ),
            message: format!("Slack API error: {}", a.code),
            retry_after: None,
        },
        other => AttemptError {
            status: None,
            message: other.to_string(),
            retry_after: None,
            retryable: true,
        },
    }
}

impl Slack {
    fn client(&self, base: &str) -> Result<std::sync::Arc<Client>, AttemptError> {
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = c.get(base) {
            return Ok(c.clone());
        }
        let client = std::sync::Arc::new(SlackClient::new(connector(base)?));
        c.insert(base.to_owned(), client.clone());
        Ok(client)
    }

    /// Posts `content` (or, with `update`, replaces that message; with `thread`, replies in
    /// its thread). Returns the posted message when Slack says which (bot token).
    pub async fn send(
        &self,
        target: &SlackTarget,
        content: SlackMessageContent,
        update: Option<&SlackRef>,
        thread: Option<&SlackRef>,
    ) -> Result<Option<SlackRef>, AttemptError> {
        let Some(token) = &target.token else {
            let url: url::Url = target.url.parse().map_err(|e| AttemptError {
                status: None,
                message: format!("bad webhook URL: {e}"),
                retry_after: None,
                retryable: false,
            })?;
            let client = self.client(slack_morphism::SlackClientHttpApiUri::SLACK_API_URI_STR)?;
            let mut req = SlackApiPostWebhookMessageRequest::new(content);
            if let Some(channel) = &target.channel {
                // Incoming webhooks post to their own channel; the key is kept for parity.
                let _ = channel;
            }
            req.thread_ts = None;
            return match client.post_webhook_message(&url, &req).await {
                Ok(_) => Ok(None),
                Err(e) => delivered_anyway(e),
            };
        };
        let client = self.client(&target.url)?;
        let token = match &target.token_file {
            // Read at every send, as Alertmanager does: a file that appears later works.
            Some(f) => std::fs::read_to_string(f)
                .map(|t| t.trim().to_owned())
                .map_err(|e| AttemptError {
                    status: None,
                    message: format!("cannot read the bot token from {}: {e}", f.display()),
                    retry_after: None,
                    retryable: true,
                })?,
            None => token.clone(),
        };
        let token = SlackApiToken::new(SlackApiTokenValue::new(token));
        let session = client.open_session(&token);
        if let Some(r) = update {
            let req = SlackApiChatUpdateRequest::new(
                SlackChannelId::new(r.channel.clone()),
                content,
                SlackTs::new(r.ts.clone()),
            );
            return match session.chat_update(&req).await {
                Ok(_) => Ok(Some(r.clone())),
                Err(e) => delivered_anyway(e).map(|_| Some(r.clone())),
            };
        }
        let channel = thread
            .map(|r| r.channel.clone())
            .or_else(|| target.channel.clone())
            .unwrap_or_default();
        let mut req = SlackApiChatPostMessageRequest::new(SlackChannelId::new(channel), content);
        req.thread_ts = thread.map(|r| SlackTs::new(r.ts.clone()));
        let resp = match session.chat_post_message(&req).await {
            Ok(r) => r,
            Err(e) => return delivered_anyway(e),
        };
        Ok(Some(SlackRef {
            channel: resp.channel.to_string(),
            ts: resp.ts.to_string(),
            digest: false,
        }))
    }
}

fn since(ms: i64, now: i64) -> String {
    let t = super::rfc3339(ms);
    let mins = (now - ms).max(0) / 60_000;
    let ago = if mins >= 120 {
        format!("{}h", mins / 60)
    } else {
        format!("{mins}m")
    };
    format!("{} UTC ({ago} ago)", &t[..19].replace('T', " "))
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn where_(labels: &std::collections::BTreeMap<String, String>) -> String {
    let keys = [
        "instance",
        "host",
        "job",
        "service",
        "group",
        "device",
        "mountpoint",
    ];
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|k| labels.get(*k).map(|v| format!("{k}=`{}`", escape(v))))
        .collect();
    if parts.is_empty() {
        "(all)".to_owned()
    } else {
        parts.join(" ")
    }
}

fn md(text: String) -> SlackBlockText {
    SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))
}

/// The Block Kit message for `n`. `resolved` renders the resolved form (also used to
/// update the firing message in place).
pub fn message(n: &Notification, title: Option<&str>) -> SlackMessageContent {
    let firing: Vec<_> = n.firing().collect();
    let resolved: Vec<_> = n.resolved().collect();
    let name = n
        .group_labels
        .get("alertname")
        .cloned()
        .or_else(|| n.alerts.first().map(|a| a.name().to_owned()))
        .unwrap_or_default();
    let severity = n
        .common_labels()
        .get("severity")
        .cloned()
        .unwrap_or_default();
    let head = match (firing.len(), resolved.len()) {
        (0, _) => format!("✅ RESOLVED: {name}"),
        (f, 0) => format!(
            "🔴 FIRING{}: {name}{}",
            if severity.is_empty() {
                String::new()
            } else {
                format!(" [{severity}]")
            },
            if f > 1 {
                format!(" ({f})")
            } else {
                String::new()
            }
        ),
        (f, r) => format!("🔴 FIRING: {name} ({f} firing, {r} resolved)"),
    };
    let head = if firing.iter().any(|a| a.flapping) {
        format!("⚠️ FLAPPING (held firing until stable): {name}")
    } else {
        head
    };
    // The header block is plain text, shown as is; the fallback `text` (what notifications
    // show) is mrkdwn, so the data in it is escaped. A receiver's own title is markup.
    let fallback = title.map_or_else(|| escape(&head), str::to_owned);
    let head = title.map_or(head, str::to_owned);
    let mut blocks: Vec<SlackBlock> = vec![
        SlackHeaderBlock::new(SlackBlockPlainText::new(head.chars().take(150).collect()).into())
            .into(),
    ];
    for a in n.alerts.iter().take(10) {
        let state = if a.resolved_at(n.at) {
            "resolved"
        } else if a.flapping {
            "flapping (held)"
        } else {
            "firing"
        };
        let how_bad = match a.threshold {
            Some(t) => format!(
                "value *{}* vs threshold *{}*",
                fmt_value(a.value),
                fmt_value(t)
            ),
            None => format!("value *{}*", fmt_value(a.value)),
        };
        let mut text = format!(
            "*{}* {} — {}\n{}",
            escape(a.name()),
            where_(&a.labels),
            state,
            how_bad
        );
        text.push_str(&format!("\nsince {}", since(a.starts_at, n.at)));
        if a.resolved_at(n.at) {
            text.push_str(&format!(", resolved {}", since(a.ends_at, n.at)));
        }
        if let Some(s) = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
        {
            text.push_str(&format!("\n{}", escape(s)));
        }
        let mut links = Vec::new();
        if let Some(r) = a
            .annotations
            .get("runbook_url")
            .or_else(|| a.annotations.get("runbook"))
        {
            if r.starts_with("http://") || r.starts_with("https://") {
                links.push(format!("<{}|runbook>", link_url(r)));
            } else {
                text.push_str(&format!("\n_Runbook:_ {}", escape(r)));
            }
        }
        if let Some(d) = &n.dashboard_url {
            let host = a.labels.get("instance").or_else(|| a.labels.get("host"));
            match host {
                Some(h) => links.push(format!(
                    "<{}/hosts/{}|dashboard>",
                    link_url(d),
                    path_segment(h)
                )),
                None => links.push(format!("<{}/alerts|dashboard>", link_url(d))),
            }
        }
        if !a.generator_url.is_empty() {
            links.push(format!("<{}|query>", link_url(&a.generator_url)));
        }
        if !links.is_empty() {
            text.push_str(&format!("\n{}", links.join(" · ")));
        }
        blocks.push(SlackSectionBlock::new().with_text(md(text)).into());
    }
    if n.alerts.len() > 10 {
        blocks.push(
            SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
                SlackBlockMarkDownText::new(format!("and {} more", n.alerts.len() - 10)),
            )])
            .into(),
        );
    }
    SlackMessageContent::new()
        .with_text(fallback)
        .with_blocks(blocks)
}

/// One message for several queued notifications to the same channel.
pub fn digest(ns: &[Notification]) -> SlackMessageContent {
    let firing: usize = ns.iter().map(|n| n.firing().count()).sum();
    let resolved: usize = ns.iter().map(|n| n.resolved().count()).sum();
    let head = format!(
        "🔥 {} alert groups: {firing} firing, {resolved} resolved",
        ns.len()
    );
    let mut lines = Vec::new();
    for n in ns.iter().take(20) {
        let name = n
            .group_labels
            .get("alertname")
            .cloned()
            .or_else(|| n.alerts.first().map(|a| a.name().to_owned()))
            .unwrap_or_default();
        let f = n.firing().count();
        let r = n.resolved().count();
        let wh = n
            .alerts
            .first()
            .map(|a| where_(&a.labels))
            .unwrap_or_default();
        lines.push(format!(
            "• *{}* {wh}: {f} firing, {r} resolved",
            escape(&name)
        ));
    }
    if ns.len() > 20 {
        lines.push(format!("• and {} more groups", ns.len() - 20));
    }
    let blocks: Vec<SlackBlock> = vec![
        SlackHeaderBlock::new(SlackBlockPlainText::new(head.clone()).into()).into(),
        SlackSectionBlock::new()
            .with_text(md(lines.join("\n")))
            .into(),
    ];
    SlackMessageContent::new()
        .with_text(head)
        .with_blocks(blocks)
}

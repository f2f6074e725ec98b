//! The file as written: serde structs of Alertmanager's keys and nunchi's additions, with
//! their defaults. [`RawConfig::resolve`](super::RawConfig) checks them into a [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

pub(super) fn default_group_wait() -> Duration {
    Duration::ZERO
}
pub(super) fn default_group_interval() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
pub(super) fn default_resolve_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The whole file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Settings shared by receivers.
    #[serde(default)]
    pub global: Global,
    /// The root of the routing tree.
    pub route: Option<RawRoute>,
    /// Where notifications go.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    /// Rules that mute alerts while others fire.
    #[serde(default)]
    pub inhibit_rules: Vec<RawInhibitRule>,
    /// Go template files (not used: nunchi's Slack and webhook bodies are fixed).
    #[serde(default)]
    pub templates: Vec<String>,
    /// Time intervals (accepted, not applied).
    #[serde(default)]
    pub time_intervals: Option<IgnoredAny>,
    /// Mute time intervals (accepted, not applied).
    #[serde(default)]
    pub mute_time_intervals: Option<IgnoredAny>,
    /// nunchi: webhooks that receive scale requests from scaling rules.
    #[serde(default)]
    pub scale_hooks: Vec<ScaleHookConfig>,
    /// nunchi: the dashboard's base URL, for links in messages.
    #[serde(default)]
    pub dashboard_url: Option<String>,
}

/// `global`.
#[derive(Debug, Clone, Deserialize)]
pub struct Global {
    /// How long an alert without updates counts as firing. [default: 5m]
    #[serde(default = "default_resolve_timeout", with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// Default Slack URL for `slack_configs` that set none.
    #[serde(default)]
    pub slack_api_url: Option<String>,
    /// File holding the default Slack URL.
    #[serde(default)]
    pub slack_api_url_file: Option<PathBuf>,
    /// Default HTTP settings.
    #[serde(default)]
    pub http_config: Option<HttpConfig>,
    /// Every other Alertmanager global (SMTP, PagerDuty, ...): accepted, unused.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            resolve_timeout: default_resolve_timeout(),
            slack_api_url: None,
            slack_api_url_file: None,
            http_config: None,
            other: BTreeMap::new(),
        }
    }
}

/// `http_config`: only authorization is used; TLS and proxy settings are accepted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpConfig {
    /// `authorization: {type, credentials, credentials_file}`.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// The legacy bearer token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// `authorization`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme. [default: Bearer]
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The credentials.
    #[serde(default)]
    pub credentials: Option<String>,
    /// A file holding them.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

impl HttpConfig {
    /// `authorization.credentials_file` when it is what supplies the token.
    pub(super) fn token_file(&self) -> Option<&PathBuf> {
        let a = self.authorization.as_ref()?;
        if a.credentials.is_some() {
            return None;
        }
        a.credentials_file.as_ref()
    }

    pub(super) fn token(&self) -> Option<String> {
        let a = self.authorization.as_ref();
        a.and_then(|a| a.credentials.clone())
            .or_else(|| {
                a.and_then(|a| a.credentials_file.as_ref())
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .map(|s| s.trim().to_owned())
            })
            .or_else(|| self.bearer_token.clone())
    }
}

/// A routing node as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Receiver name (inherited when absent).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels to group by; `...` groups by all labels.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Keep matching siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Legacy equality matchers.
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Legacy regex matchers.
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    /// Matchers (`severity="critical"`).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Wait before the first notification of a new group.
    #[serde(default, with = "humantime_serde")]
    pub group_wait: Option<Duration>,
    /// Wait between notifications about a changed group.
    #[serde(default, with = "humantime_serde")]
    pub group_interval: Option<Duration>,
    /// Wait before repeating an unchanged notification.
    #[serde(default, with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
    /// Accepted, not applied.
    #[serde(default)]
    pub mute_time_intervals: Option<IgnoredAny>,
    /// Accepted, not applied.
    #[serde(default)]
    pub active_time_intervals: Option<IgnoredAny>,
    /// Child routes.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// A receiver.
#[derive(Debug, Clone, Deserialize)]
pub struct Receiver {
    /// Its unique name.
    pub name: String,
    /// Slack destinations.
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    /// Webhook destinations.
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    /// nunchi: what happens to a notification that failed every retry. [default: hold]
    #[serde(default)]
    pub dead_letter: DeadLetterPolicy,
    /// Other Alertmanager integrations: accepted, not delivered to.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// nunchi: a receiver's dead-letter policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterPolicy {
    /// `hold` (keep for an operator to retry or discard), `retry` (retry every
    /// `retry_every`), `ignore` (log and drop) or `notify` (tell `notify_receiver`).
    #[serde(default)]
    pub policy: DeadLetterAction,
    /// For `retry`: how often. [default: 5m]
    #[serde(default, with = "humantime_serde")]
    pub retry_every: Option<Duration>,
    /// For `notify`: the receiver told about the failure.
    #[serde(default)]
    pub notify_receiver: Option<String>,
}

/// What to do with a dead letter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterAction {
    /// Keep it for an operator.
    #[default]
    Hold,
    /// Retry it periodically.
    Retry,
    /// Drop it (logged).
    Ignore,
    /// Tell another receiver.
    Notify,
}

/// `slack_configs[]`: an incoming-webhook URL, or the Web API (`chat.postMessage`) with a
/// bot token from `http_config.authorization` or `bot_token`.
#[derive(Debug, Clone, Deserialize)]
pub struct SlackConfig {
    /// Also notify when alerts resolve. [default: false, as in Alertmanager]
    #[serde(default)]
    pub send_resolved: bool,
    /// Incoming-webhook URL, or `https://slack.com/api/chat.postMessage` for a bot token.
    #[serde(default)]
    pub api_url: Option<String>,
    /// File holding `api_url`.
    #[serde(default)]
    pub api_url_file: Option<PathBuf>,
    /// Channel (`#alerts` or an ID); required with a bot token.
    #[serde(default)]
    pub channel: Option<String>,
    /// Title override (plain text; Go templates are not expanded).
    #[serde(default)]
    pub title: Option<String>,
    /// HTTP settings; `authorization.credentials` is the bot token.
    #[serde(default)]
    pub http_config: Option<HttpConfig>,
    /// nunchi: the bot token (`xoxb-...`), instead of `http_config`.
    #[serde(default)]
    pub bot_token: Option<String>,
    /// Every other Alertmanager Slack key (username, color, text, ...): accepted.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// `webhook_configs[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Also notify when alerts resolve. [default: true, as in Alertmanager]
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Where to POST.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Most alerts per message; the rest are counted in `truncatedAlerts`. [0: all]
    #[serde(default)]
    pub max_alerts: usize,
    /// Per-attempt timeout. [default: 10s]
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// HTTP settings (authorization used).
    #[serde(default)]
    pub http_config: Option<HttpConfig>,
    /// nunchi: secret for the `X-Nunchi-Signature` HMAC-SHA256 header.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// nunchi: delays between attempts. [default: 1s, 5s, 30s, 2m]
    #[serde(default)]
    pub retry_delays: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// nunchi: a scale hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleHookConfig {
    /// Its name (in the delivery log).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Secret for the HMAC signature header.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// After a scale action for a group, no other action for it before this. [default: 5m]
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// Only these target groups (all when empty).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Per-attempt timeout. [default: 10s]
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// An inhibition rule as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibitRule {
    /// Legacy source equality matchers.
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    /// Legacy source regex matchers.
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    /// Matchers an inhibiting alert satisfies.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Legacy target equality matchers.
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    /// Legacy target regex matchers.
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
    /// Matchers a muted alert satisfies.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels that must be equal in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

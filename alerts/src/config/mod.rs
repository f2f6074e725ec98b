//! Delivery configuration in Alertmanager's own YAML: `global`, `route`, `receivers`
//! (`slack_configs`, `webhook_configs`), `inhibit_rules`, `templates`. A file that
//! `amtool check-config` accepts is read unchanged; receiver kinds nunchi does not deliver
//! to (email, PagerDuty, ...) are accepted and reported as unused.
//!
//! nunchi's additions are extra keys, each documented on its field:
//! `webhook_configs[].hmac_secret`, `webhook_configs[].retry_delays`, `receivers[].dead_letter`,
//! `slack_configs[].bot_token`, and the top-level `scale_hooks` and `dashboard_url`.
//!
//! Defaults are tuned for speed where Alertmanager's are tuned for batching: a route that
//! sets no timings waits 0 s before its first notification (alerts from one rule evaluation
//! still arrive together), 10 s between updates of a group, and 4 h before repeating.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::matcher::{MatchOp, Matcher, MatcherError};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse or has unknown keys.
    #[error("{}:{line}: {reason}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The line (0 when unknown).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A value is invalid.
    #[error("{}: {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, as a path (`route.routes[1].matchers[0]`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

mod raw;
pub use raw::*;

/// A checked configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// The routing tree.
    pub route: Route,
    /// Receivers by name.
    pub receivers: BTreeMap<String, ResolvedReceiver>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Scale hooks.
    pub scale_hooks: Vec<ScaleHook>,
    /// `global.resolve_timeout`.
    pub resolve_timeout: Duration,
    /// Dashboard base URL for links.
    pub dashboard_url: Option<String>,
    /// What is wrong but does not stop the configuration from loading (a credentials
    /// file that cannot be read yet), each naming its key.
    pub warnings: Vec<String>,
}

/// A routing node with inherited settings filled in.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its position (`0`, `0.1`, `0.1.0`), part of group keys.
    pub id: String,
    /// The receiver.
    pub receiver: String,
    /// Grouping labels (`None`: group by all labels).
    pub group_by: Option<Vec<String>>,
    /// Matchers.
    pub matchers: Vec<Matcher>,
    /// Keep matching siblings.
    pub continue_: bool,
    /// Timings.
    pub group_wait: Duration,
    /// Timings.
    pub group_interval: Duration,
    /// Timings.
    pub repeat_interval: Duration,
    /// Children.
    pub routes: Vec<Route>,
}

/// A receiver with URLs and secrets resolved.
#[derive(Debug, Clone)]
pub struct ResolvedReceiver {
    /// Its name.
    pub name: String,
    /// Slack destinations.
    pub slack: Vec<SlackTarget>,
    /// Webhook destinations.
    pub webhooks: Vec<WebhookTarget>,
    /// Dead-letter policy.
    pub dead_letter: DeadLetterPolicy,
}

/// Where and how a Slack message goes.
#[derive(Debug, Clone)]
pub struct SlackTarget {
    /// Incoming-webhook URL, or the Web API base (`https://slack.com/api`) with a token.
    pub url: String,
    /// Bot token (Web API), if used.
    pub token: Option<String>,
    /// A file the bot token is read from at every send (`credentials_file`), if used.
    pub token_file: Option<PathBuf>,
    /// Channel.
    pub channel: Option<String>,
    /// Send resolved notices.
    pub send_resolved: bool,
    /// Title override.
    pub title: Option<String>,
}

/// Where and how a webhook goes.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// URL.
    pub url: String,
    /// Send resolved notices.
    pub send_resolved: bool,
    /// Most alerts per message (0: all).
    pub max_alerts: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Bearer token.
    pub token: Option<String>,
    /// HMAC secret.
    pub hmac_secret: Option<String>,
    /// Delays between attempts.
    pub retry_delays: Vec<Duration>,
}

/// A checked scale hook.
#[derive(Debug, Clone)]
pub struct ScaleHook {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// HMAC secret.
    pub hmac_secret: Option<String>,
    /// Cooldown.
    pub cooldown: Duration,
    /// Groups served (empty: all).
    pub groups: Vec<String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// A checked inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// Source matchers.
    pub source: Vec<Matcher>,
    /// Target matchers.
    pub target: Vec<Matcher>,
    /// Labels that must be equal.
    pub equal: Vec<String>,
}

/// The default webhook retry delays.
pub const DEFAULT_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// A configuration that sends nothing anywhere (no `--alerting-config`).
    pub fn empty() -> Config {
        Config::parse(
            Path::new("(none)"),
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .expect("the empty configuration is valid")
    }

    /// Checks `text` (read from `path`).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_owned(),
            line: e.location().map_or(0, |l| l.line()),
            reason: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .to_owned(),
        })?;
        raw.check(path)
    }
}

impl RawConfig {
    /// Validates and resolves (reads `*_file` keys).
    pub fn check(self, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let root = self
            .route
            .ok_or_else(|| invalid("route", "no root route".to_owned()))?;
        if root.receiver.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "route.receiver",
                "root route must specify a default receiver".into(),
            ));
        }
        if !root.matchers.is_empty() || !root.match_.is_empty() || !root.match_re.is_empty() {
            return Err(invalid(
                "route",
                "root route must not have any matchers".into(),
            ));
        }
        let root_defaults = Route {
            id: String::new(),
            receiver: String::new(),
            group_by: Some(Vec::new()),
            matchers: Vec::new(),
            continue_: false,
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            routes: Vec::new(),
        };
        let route = resolve_route(&root, &root_defaults, "0", "route", &invalid)?;
        let global_slack = match (&self.global.slack_api_url, &self.global.slack_api_url_file) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(f)) => Some(read_secret(f, "global.slack_api_url_file", &invalid)?),
            _ => None,
        };
        let mut receivers = BTreeMap::new();
        let mut warnings = Vec::new();
        for (i, r) in self.receivers.into_iter().enumerate() {
            let at = format!("receivers[{i}]");
            let mut slack = Vec::new();
            for (j, s) in r.slack_configs.iter().enumerate() {
                let at = format!("{at}.slack_configs[{j}]");
                let url = match (&s.api_url, &s.api_url_file) {
                    (Some(u), _) => u.clone(),
                    (None, Some(f)) => read_secret(f, &format!("{at}.api_url_file"), &invalid)?,
                    _ => global_slack.clone().ok_or_else(|| {
                        invalid(
                            &format!("{at}.api_url"),
                            "no Slack API URL set nor a global slack_api_url".into(),
                        )
                    })?,
                };
                url::Url::parse(&url)
                    .map_err(|e| invalid(&format!("{at}.api_url"), e.to_string()))?;
                let (http, http_at) = match &s.http_config {
                    Some(h) => (Some(h), format!("{at}.http_config")),
                    None => (
                        self.global.http_config.as_ref(),
                        "global.http_config".to_owned(),
                    ),
                };
                let token_file = match &s.bot_token {
                    Some(_) => None,
                    None => http.and_then(HttpConfig::token_file).cloned(),
                };
                let token = match &token_file {
                    Some(f) => {
                        if let Err(e) = std::fs::read_to_string(f) {
                            warnings.push(format!(
                                "{http_at}.authorization.credentials_file: cannot read {}: {e}; messages to this Slack receiver fail until it can be read",
                                f.display()
                            ));
                        }
                        Some(String::new())
                    }
                    None => s
                        .bot_token
                        .clone()
                        .or_else(|| http.and_then(HttpConfig::token)),
                };
                let url = match &token {
                    Some(_) => {
                        if s.channel.is_none() {
                            return Err(invalid(
                                &format!("{at}.channel"),
                                "a bot token needs a channel".into(),
                            ));
                        }
                        url.trim_end_matches('/')
                            .trim_end_matches("/chat.postMessage")
                            .to_owned()
                    }
                    None => url,
                };
                slack.push(SlackTarget {
                    url,
                    token,
                    token_file,
                    channel: s.channel.clone(),
                    send_resolved: s.send_resolved,
                    title: s.title.clone(),
                });
            }
            let mut webhooks = Vec::new();
            for (j, w) in r.webhook_configs.iter().enumerate() {
                let at = format!("{at}.webhook_configs[{j}]");
                let url = match (&w.url, &w.url_file) {
                    (Some(u), _) => u.clone(),
                    (None, Some(f)) => read_secret(f, &format!("{at}.url_file"), &invalid)?,
                    _ => {
                        return Err(invalid(
                            &format!("{at}.url"),
                            "one of url or url_file must be configured".into(),
                        ));
                    }
                };
                url::Url::parse(&url).map_err(|e| invalid(&format!("{at}.url"), e.to_string()))?;
                let retry_delays = match &w.retry_delays {
                    None => DEFAULT_RETRY_DELAYS.to_vec(),
                    Some(v) => v
                        .iter()
                        .map(|d| {
                            humantime::parse_duration(d).map_err(|e| {
                                invalid(&format!("{at}.retry_delays"), format!("{d:?}: {e}"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                };
                webhooks.push(WebhookTarget {
                    url,
                    send_resolved: w.send_resolved,
                    max_alerts: w.max_alerts,
                    timeout: w.timeout.unwrap_or(Duration::from_secs(10)),
                    token: w
                        .http_config
                        .as_ref()
                        .or(self.global.http_config.as_ref())
                        .and_then(HttpConfig::token),
                    hmac_secret: w.hmac_secret.clone(),
                    retry_delays,
                });
            }
            if receivers.contains_key(&r.name) {
                return Err(invalid(
                    &at,
                    format!("notification config name {:?} is not unique", r.name),
                ));
            }
            if r.dead_letter.policy == DeadLetterAction::Notify
                && r.dead_letter.notify_receiver.is_none()
            {
                return Err(invalid(
                    &format!("{at}.dead_letter.notify_receiver"),
                    "policy notify needs a receiver".into(),
                ));
            }
            for k in r.other.keys() {
                tracing::warn!(receiver = %r.name, integration = %k, "receiver integration not supported by nunchi; ignored");
            }
            receivers.insert(
                r.name.clone(),
                ResolvedReceiver {
                    name: r.name,
                    slack,
                    webhooks,
                    dead_letter: r.dead_letter,
                },
            );
        }
        check_receivers(&route, &receivers, &invalid)?;
        for r in receivers.values() {
            if let Some(n) = &r.dead_letter.notify_receiver
                && !receivers.contains_key(n)
            {
                return Err(invalid(
                    "dead_letter.notify_receiver",
                    format!("undefined receiver {n:?}"),
                ));
            }
        }
        let mut inhibit_rules = Vec::new();
        for (i, r) in self.inhibit_rules.iter().enumerate() {
            let at = format!("inhibit_rules[{i}]");
            inhibit_rules.push(InhibitRule {
                source: matchers(
                    &r.source_match,
                    &r.source_match_re,
                    &r.source_matchers,
                    &at,
                    &invalid,
                )?,
                target: matchers(
                    &r.target_match,
                    &r.target_match_re,
                    &r.target_matchers,
                    &at,
                    &invalid,
                )?,
                equal: r.equal.clone(),
            });
        }
        let mut scale_hooks = Vec::new();
        for (i, h) in self.scale_hooks.into_iter().enumerate() {
            url::Url::parse(&h.url)
                .map_err(|e| invalid(&format!("scale_hooks[{i}].url"), e.to_string()))?;
            scale_hooks.push(ScaleHook {
                name: h.name,
                url: h.url,
                hmac_secret: h.hmac_secret,
                cooldown: h.cooldown.unwrap_or(Duration::from_secs(300)),
                groups: h.groups,
                timeout: h.timeout.unwrap_or(Duration::from_secs(10)),
            });
        }
        if !self.templates.is_empty() {
            tracing::warn!(templates = ?self.templates, "Go templates are not used; nunchi's messages have a fixed layout");
        }
        Ok(Config {
            route,
            receivers,
            inhibit_rules,
            scale_hooks,
            resolve_timeout: self.global.resolve_timeout,
            dashboard_url: self.dashboard_url,
            warnings,
        })
    }
}

fn read_secret(
    f: &Path,
    field: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    std::fs::read_to_string(f)
        .map(|s| s.trim().to_owned())
        .map_err(|e| invalid(field, format!("{}: {e}", f.display())))
}

fn matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    list: &[String],
    at: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<Matcher>, ConfigError> {
    let bad = |e: MatcherError| invalid(at, e.to_string());
    let mut out = Vec::new();
    for (k, v) in eq {
        out.push(Matcher::new(k, MatchOp::Equal, v).map_err(bad)?);
    }
    for (k, v) in re {
        out.push(Matcher::new(k, MatchOp::Regex, v).map_err(bad)?);
    }
    for m in list {
        out.push(Matcher::parse(m).map_err(bad)?);
    }
    Ok(out)
}

fn resolve_route(
    raw: &RawRoute,
    parent: &Route,
    id: &str,
    at: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Route, ConfigError> {
    let group_by = match &raw.group_by {
        None => parent.group_by.clone(),
        Some(g) if g.iter().any(|l| l == "...") => {
            if g.len() > 1 {
                return Err(invalid(
                    &format!("{at}.group_by"),
                    "cannot have wildcard group_by (`...`) and other labels at the same time"
                        .into(),
                ));
            }
            None
        }
        Some(g) => {
            let mut seen = std::collections::HashSet::new();
            for l in g {
                if !seen.insert(l) {
                    return Err(invalid(
                        &format!("{at}.group_by"),
                        format!("duplicated label {l:?}"),
                    ));
                }
            }
            Some(g.clone())
        }
    };
    let mut route = Route {
        id: id.to_owned(),
        receiver: raw
            .receiver
            .clone()
            .unwrap_or_else(|| parent.receiver.clone()),
        group_by,
        matchers: matchers(
            &raw.match_,
            &raw.match_re,
            &raw.matchers,
            &format!("{at}.matchers"),
            invalid,
        )?,
        continue_: raw.continue_,
        group_wait: raw.group_wait.unwrap_or(parent.group_wait),
        group_interval: raw.group_interval.unwrap_or(parent.group_interval),
        repeat_interval: raw.repeat_interval.unwrap_or(parent.repeat_interval),
        routes: Vec::new(),
    };
    if route.group_interval.is_zero() {
        return Err(invalid(
            &format!("{at}.group_interval"),
            "group_interval cannot be zero".into(),
        ));
    }
    if route.repeat_interval.is_zero() {
        return Err(invalid(
            &format!("{at}.repeat_interval"),
            "repeat_interval cannot be zero".into(),
        ));
    }
    for (i, child) in raw.routes.iter().enumerate() {
        let c = resolve_route(
            child,
            &route,
            &format!("{id}.{i}"),
            &format!("{at}.routes[{i}]"),
            invalid,
        )?;
        route.routes.push(c);
    }
    Ok(route)
}

fn check_receivers(
    route: &Route,
    receivers: &BTreeMap<String, ResolvedReceiver>,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !receivers.contains_key(&route.receiver) {
        return Err(invalid(
            "route",
            format!("undefined receiver {:?} used in route", route.receiver),
        ));
    }
    route
        .routes
        .iter()
        .try_for_each(|r| check_receivers(r, receivers, invalid))
}

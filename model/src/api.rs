//! The JSON bodies of the collector's rule, alert, silence and delivery endpoints, shared by
//! the server that writes them and the dashboard that reads them.
//!
//! `/api/v1/rules` and `/api/v1/alerts` follow Prometheus' shapes (`RuleDiscovery`,
//! `AlertDiscovery`), `/api/v2/silences` Alertmanager's `GettableSilence`, and
//! `/api/v1/deliveries` is nunchi's own. Times are RFC 3339 text where Prometheus writes
//! them so, Unix milliseconds in the delivery log. Fields the server always writes are
//! still defaulted when read, so a reader takes an older server's answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A label set or annotations, by name.
pub type LabelMap = BTreeMap<String, String>;

/// `/api/v1/rules`' `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDiscovery {
    /// The rule groups, in file order.
    pub groups: Vec<RuleGroup>,
    /// What the delivery configuration warns of (nunchi's own key; Prometheus clients
    /// ignore it).
    #[serde(default)]
    pub alerting_warnings: Vec<String>,
}

/// One rule group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroup {
    /// Group name.
    pub name: String,
    /// The file it came from.
    #[serde(default)]
    pub file: String,
    /// Its rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Evaluation interval, in seconds.
    #[serde(default)]
    pub interval: f64,
    /// Series limit per rule (0: none).
    #[serde(default)]
    pub limit: u64,
    /// Seconds the last evaluation of the whole group took.
    #[serde(default)]
    pub evaluation_time: f64,
    /// RFC 3339 time of the last evaluation.
    #[serde(default)]
    pub last_evaluation: String,
}

/// One rule. The alerting-only fields are absent (`None`) for recording rules, as in
/// Prometheus' answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `inactive`, `pending` or `firing` (alerting rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Alert name or recorded metric name.
    pub name: String,
    /// The PromQL expression.
    pub query: String,
    /// `for`, in seconds (alerting rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// `keep_firing_for`, in seconds (alerting rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<f64>,
    /// The rule's own labels.
    #[serde(default)]
    pub labels: LabelMap,
    /// The rule's annotation templates (alerting rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LabelMap>,
    /// Its active alerts (alerting rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<Alert>>,
    /// `ok`, `err` or `unknown`.
    #[serde(default)]
    pub health: String,
    /// The last evaluation's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds the last evaluation took.
    #[serde(default)]
    pub evaluation_time: f64,
    /// RFC 3339 time of the last evaluation.
    #[serde(default)]
    pub last_evaluation: String,
    /// `alerting` or `recording`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The scale group the rule triggers (nunchi's own key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_group: Option<String>,
}

/// `/api/v1/alerts`' `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertDiscovery {
    /// Every pending and firing alert.
    pub alerts: Vec<Alert>,
}

/// An alert as `/api/v1/alerts` and `/api/v1/rules` report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: LabelMap,
    /// Annotations after templating.
    #[serde(default)]
    pub annotations: LabelMap,
    /// `pending` or `firing`.
    pub state: String,
    /// RFC 3339 time it became active.
    #[serde(default)]
    pub active_at: String,
    /// RFC 3339 time since which `keep_firing_for` keeps it firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_since: Option<String>,
    /// The value that made it active, as Prometheus writes it (`%e`).
    #[serde(default)]
    pub value: String,
    /// Marked flapping and held (nunchi's own key, written only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
}

/// A silence matcher in Alertmanager's v2 shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    /// Label name.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
    /// A regular expression match.
    #[serde(default)]
    pub is_regex: bool,
    /// `=`/`=~` (true) or `!=`/`!~` (false); true when absent, as in Alertmanager.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

impl Default for SilenceMatcher {
    fn default() -> Self {
        SilenceMatcher {
            name: String::new(),
            value: String::new(),
            is_regex: false,
            is_equal: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Why matcher text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MatcherTextError(pub String);

fn bad(reason: &str) -> MatcherTextError {
    MatcherTextError(reason.to_owned())
}

impl SilenceMatcher {
    /// Parses one matcher as Alertmanager writes it: `name="value"`, `name!="value"`,
    /// `name=~"regex"` or `name!~"regex"`. A quoted value takes `\"`, `\\` and `\n`
    /// escapes; an unquoted one is the rest of the text, trimmed.
    pub fn parse(text: &str) -> Result<SilenceMatcher, MatcherTextError> {
        let (m, rest) = next_matcher(text.trim(), false)?;
        if !rest.trim().is_empty() {
            return Err(bad("text after the quoted value"));
        }
        Ok(m)
    }
}

/// Parses a matcher list as Alertmanager's `ParseMatchers` takes it: `{a="b", c=~"d.*"}`,
/// braces optional, matchers separated by commas; an unquoted value ends at the next
/// comma. An empty list is refused.
pub fn parse_matchers(text: &str) -> Result<Vec<SilenceMatcher>, MatcherTextError> {
    let mut rest = text.trim();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r
            .trim_end()
            .strip_suffix('}')
            .ok_or_else(|| bad("unclosed {"))?;
    }
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (m, r) = next_matcher(rest, true)?;
        out.push(m);
        rest = r.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => break,
            None => return Err(bad("expected a comma between matchers")),
        }
    }
    if out.is_empty() {
        return Err(bad("at least one matcher is needed"));
    }
    Ok(out)
}

/// The matcher at the start of `t`, and what follows it. In a list an unquoted value ends
/// at a comma; alone it runs to the end.
fn next_matcher(t: &str, list: bool) -> Result<(SilenceMatcher, &str), MatcherTextError> {
    let at = t
        .find(['=', '!'])
        .ok_or_else(|| bad("no operator (=, !=, =~, !~)"))?;
    let name = t[..at].trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(bad("invalid label name"));
    }
    let rest = &t[at..];
    let (is_regex, is_equal, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (true, true, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (true, false, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (false, false, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (false, true, r)
    } else {
        return Err(bad("no operator (=, !=, =~, !~)"));
    };
    let rest = rest.trim_start();
    let (value, rest) = match rest.strip_prefix('"') {
        Some(q) => {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, o)) => value.push(o),
                        None => value.push('\\'),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| bad("unterminated quoted value"))?;
            (value, &q[end + 1..])
        }
        None if list => {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_owned(), &rest[end..])
        }
        None => (rest.trim().to_owned(), ""),
    };
    Ok((
        SilenceMatcher {
            name: name.to_owned(),
            value,
            is_regex,
            is_equal,
        },
        rest,
    ))
}

/// A silence as `/api/v2/silences` answers it (Alertmanager's `GettableSilence`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    /// Id.
    pub id: String,
    /// Its state now.
    pub status: SilenceStatus,
    /// RFC 3339 time of its last change.
    #[serde(default)]
    pub updated_at: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Author.
    pub created_by: String,
    /// RFC 3339 start.
    pub starts_at: String,
    /// RFC 3339 end.
    pub ends_at: String,
    /// What it matches.
    pub matchers: Vec<SilenceMatcher>,
}

/// A silence's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

/// Where a notification stands in the delivery log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    /// Waiting for (another) attempt.
    #[default]
    Pending,
    /// Delivered.
    Delivered,
    /// Every retry failed; waiting for an operator (or the receiver's policy).
    Dead,
    /// Dropped by an operator or the `ignore` policy.
    Discarded,
}

impl OutboxState {
    /// The state's name, as stored and as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
            OutboxState::Discarded => "discarded",
        }
    }

    /// The state named `s`; an unknown name is `Pending`, so it is tried again.
    pub fn parse(s: &str) -> OutboxState {
        match s {
            "delivered" => OutboxState::Delivered,
            "dead" => OutboxState::Dead,
            "discarded" => OutboxState::Discarded,
            _ => OutboxState::Pending,
        }
    }
}

/// One notification to one destination, as the delivery log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Id, for retry and discard.
    pub id: i64,
    /// When it was queued (Unix ms).
    pub created_at: i64,
    /// Receiver name (or scale hook name).
    pub receiver: String,
    /// `slack`, `webhook` or `scale`.
    pub integration: String,
    /// Index of the destination within the receiver's configs.
    #[serde(default)]
    pub target: usize,
    /// Group key.
    #[serde(default)]
    pub group_key: String,
    /// The notification (JSON).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// State.
    #[serde(default)]
    pub state: OutboxState,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Outbox entry.
    pub outbox_id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Receiver name.
    pub receiver: String,
    /// `slack`, `webhook` or `scale`.
    pub integration: String,
    /// Delivered.
    pub ok: bool,
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    /// Milliseconds to the response.
    pub latency_ms: i64,
    /// The response body or the error (truncated).
    pub response: String,
}

/// A scale group's cooldown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cooldown {
    /// RFC 3339 end of the cooldown.
    pub until: String,
    /// The last action sent.
    #[serde(default)]
    pub last: serde_json::Value,
}

/// `/api/v1/deliveries`' `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deliveries {
    /// Newest attempts first.
    pub attempts: Vec<Attempt>,
    /// Dead letters waiting for an operator.
    pub dead_letters: Vec<OutboxEntry>,
    /// Waiting for an attempt.
    pub pending: Vec<OutboxEntry>,
    /// Scale cooldowns by group.
    #[serde(default)]
    pub cooldowns: BTreeMap<String, Cooldown>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_rule_has_no_alerting_keys_and_an_alerting_rule_all_of_them() {
        let recording = Rule {
            name: "job:up:sum".into(),
            query: "sum(up)".into(),
            health: "ok".into(),
            kind: "recording".into(),
            ..Rule::default()
        };
        let v = serde_json::to_value(&recording).expect("json");
        for key in [
            "state",
            "duration",
            "keepFiringFor",
            "annotations",
            "alerts",
        ] {
            assert!(v.get(key).is_none(), "{key} in {v}");
        }
        let alerting = Rule {
            state: Some("inactive".into()),
            duration: Some(0.0),
            keep_firing_for: Some(0.0),
            annotations: Some(LabelMap::new()),
            alerts: Some(Vec::new()),
            kind: "alerting".into(),
            ..recording
        };
        let v = serde_json::to_value(&alerting).expect("json");
        assert_eq!(v["alerts"], serde_json::json!([]));
        assert_eq!(v["duration"], serde_json::json!(0.0));
        assert_eq!(v["type"], "alerting");
        let back: Rule = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, alerting);
    }

    #[test]
    fn flapping_and_keep_firing_since_are_written_only_when_set() {
        let a = Alert {
            state: "firing".into(),
            ..Alert::default()
        };
        let v = serde_json::to_value(&a).expect("json");
        assert!(
            v.get("flapping").is_none() && v.get("keepFiringSince").is_none(),
            "{v}"
        );
        let v = serde_json::to_value(Alert {
            flapping: true,
            ..a
        })
        .expect("json");
        assert_eq!(v["flapping"], true);
    }

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> SilenceMatcher {
        SilenceMatcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    #[test]
    fn matcher_text_parses_in_every_alertmanager_form() {
        assert_eq!(
            SilenceMatcher::parse(r#"severity="critical""#),
            Ok(m("severity", "critical", false, true))
        );
        assert_eq!(
            SilenceMatcher::parse("severity = critical"),
            Ok(m("severity", "critical", false, true))
        );
        assert_eq!(
            SilenceMatcher::parse(r#"team!~".+""#),
            Ok(m("team", ".+", true, false))
        );
        assert_eq!(
            SilenceMatcher::parse(r#"a="x\"y\nz""#),
            Ok(m("a", "x\"y\nz", false, true))
        );
        assert_eq!(
            SilenceMatcher::parse("ns:x!=1"),
            Ok(m("ns:x", "1", false, false))
        );
        for bad in ["severity", "=x", "a b=c", r#"a="x"#, r#"a="x" y"#] {
            assert!(SilenceMatcher::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_matchers(r#"{alertname="HighCPU", host=~"web-.*",env!="dev", team=ops}"#),
            Ok(vec![
                m("alertname", "HighCPU", false, true),
                m("host", "web-.*", true, true),
                m("env", "dev", false, false),
                m("team", "ops", false, true),
            ])
        );
        assert_eq!(
            parse_matchers(r#"a="b,c""#),
            Ok(vec![m("a", "b,c", false, true)])
        );
        for bad in ["", "{}", "{a=\"b\"", r#"a="b" c="d""#, r#"a="b"#] {
            assert!(parse_matchers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_matcher_without_is_equal_is_an_equality() {
        let m: SilenceMatcher =
            serde_json::from_str(r#"{"name":"a","value":"b","isRegex":false}"#).expect("json");
        assert!(m.is_equal);
        assert_eq!(
            OutboxState::parse(OutboxState::Dead.as_str()),
            OutboxState::Dead
        );
    }
}

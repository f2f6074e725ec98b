//! Alertmanager's label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"` (the value may be unquoted), and the legacy `match`/`match_re` maps.
//! Regexes are anchored, as in Alertmanager.

use std::collections::BTreeMap;

use nunchi_model::api::SilenceMatcher;
use regex::Regex;

/// A matcher that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad matcher {text:?}: {reason}")]
pub struct MatcherError {
    /// The matcher as written.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or pattern as written.
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    /// A matcher from its parts (compiles the regex for the regex forms).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError {
                    text: format!("{name}{}{value:?}", op.as_str()),
                    reason: e.to_string(),
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Parses one matcher (the text form is [`SilenceMatcher::parse`]'s) and compiles
    /// its regex.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let err = |reason: String| MatcherError {
            text: text.to_owned(),
            reason,
        };
        let m = SilenceMatcher::parse(text).map_err(|e| err(e.0))?;
        Matcher::from_silence(&m).map_err(|e| err(e.reason))
    }

    /// The matcher an API or silence matcher stands for, its regex compiled.
    pub fn from_silence(m: &SilenceMatcher) -> Result<Matcher, MatcherError> {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&m.name, op, &m.value)
    }

    /// Whether `labels` satisfy the matcher (a missing label counts as empty).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Whether every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Matcher {
        Matcher::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_alertmanager_forms() {
        let l: BTreeMap<String, String> = [("severity".into(), "critical".into())].into();
        assert!(m("severity=\"critical\"").matches(&l));
        assert!(m("severity = critical").matches(&l));
        assert!(m("severity=~\"crit.*\"").matches(&l));
        assert!(!m("severity=~\"crit\"").matches(&l));
        assert!(m("team!=\"x\"").matches(&l));
        assert!(m("team!~\".+\"").matches(&l));
        assert!(Matcher::parse("severity").is_err());
        assert!(Matcher::parse("a=~\"(\"").is_err());
    }
}

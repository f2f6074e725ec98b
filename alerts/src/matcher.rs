//! Alertmanager's label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"` (the value may be unquoted), and the legacy `match`/`match_re` maps.
//! Regexes are anchored, as in Alertmanager.

use std::collections::BTreeMap;

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

    /// Parses one matcher.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let err = |reason: &str| MatcherError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let t = text.trim();
        let at = t
            .find(['=', '!'])
            .ok_or_else(|| err("no operator (=, !=, =~, !~)"))?;
        let name = t[..at].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("invalid label name"));
        }
        let rest = &t[at..];
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Equal, r)
        } else {
            return Err(err("no operator (=, !=, =~, !~)"));
        };
        let rest = rest.trim();
        let value = if let Some(q) = rest.strip_prefix('"') {
            let q = q
                .strip_suffix('"')
                .ok_or_else(|| err("unterminated quoted value"))?;
            unescape(q)
        } else {
            rest.to_owned()
        };
        Matcher::new(name, op, &value).map_err(|e| err(&e.reason))
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

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
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

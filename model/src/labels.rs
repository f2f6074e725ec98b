//! Label sets. Invariant: sorted by name, names unique, no empty values (Prometheus treats
//! an empty value as an absent label, so it is dropped on insertion).

use std::fmt;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub name: String,
    /// Label value, any UTF-8.
    pub value: String,
}

/// A label name or value that Prometheus would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    /// The metric name does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    /// Names starting with `__` are reserved for Prometheus' own use.
    #[error("label name {0:?} is reserved (names starting with \"__\" belong to Prometheus)")]
    Reserved(String),
    /// `k=v` text without `=`.
    #[error("expected NAME=VALUE, got {0:?}")]
    NotAPair(String),
}

/// Whether `name` is a valid Prometheus label name.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a valid Prometheus metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A sorted, duplicate-free set of labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// An empty label set.
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds a set from pairs in any order; a later duplicate name replaces an earlier one.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels = Labels::new();
        for (n, v) in pairs {
            labels.insert(n, v);
        }
        labels
    }

    /// Builds a set from labels that the caller guarantees are already sorted and unique
    /// (for example, decoded from a source that enforces it). Falls back to sorting if not.
    pub fn from_sorted(mut labels: Vec<Label>) -> Self {
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            labels.dedup_by(|later, earlier| later.name == earlier.name);
        }
        labels.retain(|l| !l.value.is_empty());
        Labels(labels)
    }

    /// Sets `name` to `value`, replacing any previous value. An empty value removes it.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.binary_search_by(|l| l.name.as_str().cmp(&name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label { name, value }),
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => Some(self.0.remove(i).value),
            Err(_) => None,
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The metric name (`__name__`), if set.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Consumes the set, yielding its sorted labels.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Labels {
    /// Formats as PromQL would print the series: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// Parses a user-supplied `NAME=VALUE` pair (a `--label` flag), checking the name.
pub fn parse_label_pair(s: &str) -> Result<(String, String), LabelError> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| LabelError::NotAPair(s.to_owned()))?;
    let name = name.trim();
    if !is_valid_label_name(name) {
        return Err(LabelError::InvalidName(name.to_owned()));
    }
    if name.starts_with("__") {
        return Err(LabelError::Reserved(name.to_owned()));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_keeps_sorted_and_unique() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("__name__", "m")]);
        l.insert("a", "3");
        let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "b"]);
        assert_eq!(l.get("a"), Some("3"));
        l.insert("b", "");
        assert_eq!(l.get("b"), None);
        assert_eq!(l.to_string(), "m{a=\"3\"}");
    }

    #[test]
    fn from_sorted_repairs_unsorted_input() {
        let l = Labels::from_sorted(vec![
            Label {
                name: "z".into(),
                value: "1".into(),
            },
            Label {
                name: "a".into(),
                value: "2".into(),
            },
            Label {
                name: "e".into(),
                value: String::new(),
            },
        ]);
        assert_eq!(
            l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["a", "z"]
        );
    }

    #[test]
    fn label_pairs_are_validated() {
        assert_eq!(
            parse_label_pair("dc=eu-1"),
            Ok(("dc".into(), "eu-1".into()))
        );
        assert_eq!(
            parse_label_pair("noequals"),
            Err(LabelError::NotAPair("noequals".into()))
        );
        assert_eq!(
            parse_label_pair("1x=a"),
            Err(LabelError::InvalidName("1x".into()))
        );
        assert_eq!(
            parse_label_pair("__x=a"),
            Err(LabelError::Reserved("__x".into()))
        );
        assert!(is_valid_metric_name("node:cpu_seconds:rate5m"));
        assert!(!is_valid_label_name("a:b"));
    }
}

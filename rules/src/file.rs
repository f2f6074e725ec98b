//! Prometheus rule files: YAML `groups` of alerting and recording rules, read and checked
//! the way `promtool check rules` (Prometheus 2.42) checks them. A file it accepts is
//! accepted here; one it rejects is rejected with the file, the line and the reason.
//!
//! nunchi's extension keys on alerting rules (a file without them is plain Prometheus):
//! - `clear_threshold: N`: hysteresis. The rule's `expr` must compare with a number
//!   (`x > 0.8`); a firing alert stays firing until the same comparison against `N`
//!   (`x > 0.7`) no longer holds for it.
//! - `flap_window: D` and `flap_max_changes: N`: an alert that changes between firing
//!   and resolved more than `N` times within `D` is marked flapping and held firing (one
//!   message, not a stream) until it has been stable for `D`.
//!
//! Scaling triggers are alerting rules with the label `scale: out` or `scale: in`, and
//! `scale_group` (the target group; required) and optionally `scale_step` (default 1).
//! Their `expr` must compare with a number, so that missing data can be told apart from a
//! condition that does not hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;
use serde_saphyr::Spanned;

use nunchi_promql::TextLimits;

/// A rule file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct RuleFileError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line the problem is on (0 when unknown, e.g. an unreadable file).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// A parsed, checked rule file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its groups, in file order.
    pub groups: Vec<RuleGroup>,
}

/// A group of rules evaluated together, in order.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    /// Its name, unique within the file.
    pub name: String,
    /// Its evaluation interval, when it sets one.
    pub interval: Option<Duration>,
    /// Most series one rule may produce (0: no limit).
    pub limit: usize,
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// What a rule produces.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// An alert.
    Alerting {
        /// The alert name.
        name: String,
        /// How long the condition must hold before firing.
        for_: Duration,
        /// How long the alert keeps firing after the condition stops.
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: BTreeMap<String, String>,
    },
    /// A recorded series.
    Recording {
        /// The new metric's name.
        name: String,
    },
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Alerting or recording.
    pub kind: RuleKind,
    /// The expression as written.
    pub expr_text: String,
    /// The parsed expression.
    pub expr: Expr,
    /// Labels added to what the rule produces (templates, for alerts).
    pub labels: BTreeMap<String, String>,
    /// The line the rule starts on.
    pub line: u64,
    /// The comparison with a number at the top of `expr`, when it is one.
    pub comparison: Option<Comparison>,
    /// Hysteresis: the threshold below which a firing alert clears.
    pub clear_threshold: Option<f64>,
    /// Flap detection: window and most state changes within it.
    pub flap: Option<(Duration, u32)>,
    /// Scaling trigger settings, from the `scale*` labels.
    pub scale: Option<ScaleSpec>,
}

/// `operand OP number` (or `number OP operand`) at the top of an expression.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The operand compared (what the value is).
    pub operand: Expr,
    /// The threshold.
    pub threshold: f64,
    /// The whole expression with the threshold replaced by `clear_threshold`, if set.
    pub clear_expr: Option<Expr>,
}

/// A scaling trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    /// Out or in.
    pub action: nunchi_model::ScaleAction,
    /// The target group.
    pub group: String,
    /// How many instances.
    pub step: u32,
}

/// Finds `operand OP number` at the top of `expr` (through parentheses), without `bool`.
pub fn comparison(expr: &Expr, clear: Option<f64>) -> Option<Comparison> {
    use promql_parser::parser::{BinaryExpr, NumberLiteral};
    let mut e = expr;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let Expr::Binary(b) = e else { return None };
    if !b.op.is_comparison_operator() || b.modifier.as_ref().is_some_and(|m| m.return_bool) {
        return None;
    }
    let literal = |x: &Expr| match x {
        Expr::NumberLiteral(NumberLiteral { val }) => Some(*val),
        _ => None,
    };
    let (operand, threshold, on_left) = match (literal(&b.lhs), literal(&b.rhs)) {
        (None, Some(t)) => ((*b.lhs).clone(), t, false),
        (Some(t), None) => ((*b.rhs).clone(), t, true),
        _ => return None,
    };
    let clear_expr = clear.map(|c| {
        let lit = Box::new(Expr::NumberLiteral(NumberLiteral::new(c)));
        let (lhs, rhs) = if on_left {
            (lit, b.rhs.clone())
        } else {
            (b.lhs.clone(), lit)
        };
        Expr::Binary(BinaryExpr {
            op: b.op,
            lhs,
            rhs,
            modifier: b.modifier.clone(),
        })
    });
    Some(Comparison {
        operand,
        threshold,
        clear_expr,
    })
}

impl Rule {
    /// The alert or recorded metric name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Alerting { name, .. } | RuleKind::Recording { name } => name,
        }
    }
}

/// A YAML scalar read as text (`severity: 1` is the string "1", as in Prometheus).
#[derive(Debug, Clone, PartialEq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: Option<Spanned<Text>>,
    #[serde(default)]
    interval: Option<Spanned<Text>>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<Spanned<Text>>,
    #[serde(default)]
    alert: Option<Spanned<Text>>,
    #[serde(default)]
    expr: Option<Spanned<Text>>,
    #[serde(default, rename = "for")]
    for_: Option<Spanned<Text>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<Text>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Text>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, Text>>,
    #[serde(default)]
    clear_threshold: Option<f64>,
    #[serde(default)]
    flap_window: Option<Spanned<Text>>,
    #[serde(default)]
    flap_max_changes: Option<u32>,
}

fn duration(
    s: &Spanned<Text>,
    err: &dyn Fn(u64, String) -> RuleFileError,
) -> Result<Duration, RuleFileError> {
    promql_parser::util::parse_duration(&s.value.0).map_err(|_| {
        err(
            s.referenced.line(),
            format!("not a valid duration string: {:?}", s.value.0),
        )
    })
}

fn strings(m: Option<BTreeMap<String, Text>>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Reads and checks the rule file at `path`, its expressions within the default
/// [`TextLimits`].
pub fn load(path: &Path) -> Result<RuleFile, RuleFileError> {
    load_with(path, &TextLimits::default())
}

/// Reads and checks the rule file at `path`, its expressions within `limits` (the
/// collector's `query.max_length` and `query.max_depth`).
pub fn load_with(path: &Path, limits: &TextLimits) -> Result<RuleFile, RuleFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuleFileError {
        file: path.to_owned(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    parse_with(path, &text, limits)
}

/// Checks rule-file `text` (read from `path`, named in errors) within the default
/// [`TextLimits`].
pub fn parse(path: &Path, text: &str) -> Result<RuleFile, RuleFileError> {
    parse_with(path, text, &TextLimits::default())
}

/// Checks rule-file `text` (read from `path`, named in errors), its expressions within
/// `limits`.
pub fn parse_with(path: &Path, text: &str, limits: &TextLimits) -> Result<RuleFile, RuleFileError> {
    let err = |line: u64, reason: String| RuleFileError {
        file: path.to_owned(),
        line,
        reason,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: Vec::new() }
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or("invalid YAML").to_owned();
            err(line, reason)
        })?
    };
    let mut names = std::collections::HashSet::new();
    let mut groups = Vec::new();
    for g in raw.groups {
        let line = g.referenced.line();
        let g = g.value;
        let name = match g.name {
            Some(n) if !n.value.0.is_empty() => n.value.0,
            _ => return Err(err(line, "Groupname must not be empty".to_owned())),
        };
        if !names.insert(name.clone()) {
            return Err(err(
                line,
                format!("groupname: {name:?} is repeated in the same file"),
            ));
        }
        let interval = g.interval.as_ref().map(|i| duration(i, &err)).transpose()?;
        let mut rules = Vec::new();
        for r in g.rules {
            rules.push(rule(r, &name, &err, limits)?);
        }
        groups.push(RuleGroup {
            name,
            interval,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    Ok(RuleFile {
        path: path.to_owned(),
        groups,
    })
}

fn rule(
    r: Spanned<RawRule>,
    group: &str,
    err: &dyn Fn(u64, String) -> RuleFileError,
    limits: &TextLimits,
) -> Result<Rule, RuleFileError> {
    let line = r.referenced.line();
    let r = r.value;
    let in_group = |reason: String| err(line, format!("group {group:?}: {reason}"));
    let record = r.record.map(|x| x.value.0).filter(|x| !x.is_empty());
    let alert = r.alert.map(|x| x.value.0).filter(|x| !x.is_empty());
    let expr_text = match r.expr {
        Some(e) if !e.value.0.is_empty() => e.value.0,
        _ => return Err(in_group("field 'expr' must be set in rule".to_owned())),
    };
    let expr = nunchi_promql::parse::parse_limited(&expr_text, limits)
        .map_err(|e| in_group(format!("could not parse expression: {e}")))?;
    let labels = strings(r.labels);
    for name in labels.keys() {
        if name == nunchi_model::METRIC_NAME || !nunchi_model::is_valid_label_name(name) {
            return Err(in_group(format!("invalid label name: {name}")));
        }
    }
    let kind = match (record, alert) {
        (Some(_), Some(_)) => {
            return Err(in_group(
                "only one of 'record' and 'alert' must be set".to_owned(),
            ));
        }
        (None, None) => {
            return Err(in_group(
                "one of 'record' or 'alert' must be set".to_owned(),
            ));
        }
        (Some(name), None) => {
            if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(in_group(
                    "invalid field 'annotations' in recording rule".to_owned(),
                ));
            }
            if r.for_.is_some() {
                return Err(in_group("invalid field 'for' in recording rule".to_owned()));
            }
            if r.keep_firing_for.is_some() {
                return Err(in_group(
                    "invalid field 'keep_firing_for' in recording rule".to_owned(),
                ));
            }
            if !nunchi_model::is_valid_metric_name(&name) {
                return Err(in_group(format!("invalid recording rule name: {name}")));
            }
            RuleKind::Recording { name }
        }
        (None, Some(name)) => {
            let annotations = strings(r.annotations);
            for a in annotations.keys() {
                if !nunchi_model::is_valid_label_name(a) {
                    return Err(in_group(format!("invalid annotation name: {a}")));
                }
            }
            let for_ = r.for_.as_ref().map(|d| duration(d, err)).transpose()?;
            let keep = r
                .keep_firing_for
                .as_ref()
                .map(|d| duration(d, err))
                .transpose()?;
            for (k, t) in labels.iter().chain(&annotations) {
                super::template::check(t)
                    .map_err(|e| in_group(format!("{k}: template does not expand: {e}")))?;
            }
            RuleKind::Alerting {
                name,
                for_: for_.unwrap_or_default(),
                keep_firing_for: keep.unwrap_or_default(),
                annotations,
            }
        }
    };
    let alerting = matches!(kind, RuleKind::Alerting { .. });
    let extension =
        r.clear_threshold.is_some() || r.flap_window.is_some() || r.flap_max_changes.is_some();
    if extension && !alerting {
        return Err(in_group(
            "clear_threshold and flap_* apply to alerting rules only".to_owned(),
        ));
    }
    let comparison = comparison(&expr, r.clear_threshold);
    if r.clear_threshold.is_some() && comparison.is_none() {
        return Err(in_group(
            "clear_threshold needs an expr that compares with a number (x > 0.8)".to_owned(),
        ));
    }
    let flap = match (&r.flap_window, r.flap_max_changes) {
        (None, None) => None,
        (Some(w), Some(n)) if n > 0 => Some((duration(w, err)?, n)),
        _ => {
            return Err(in_group(
                "flap_window and flap_max_changes (above 0) go together".to_owned(),
            ));
        }
    };
    let scale = match labels.get("scale").map(String::as_str) {
        None => None,
        Some(dir) if alerting => {
            let action = match dir {
                "out" => nunchi_model::ScaleAction::ScaleOut,
                "in" => nunchi_model::ScaleAction::ScaleIn,
                other => {
                    return Err(in_group(format!(
                        "label scale must be \"out\" or \"in\", not {other:?}"
                    )));
                }
            };
            let group = labels
                .get("scale_group")
                .cloned()
                .ok_or_else(|| in_group("a scaling rule needs the label scale_group".to_owned()))?;
            let step = match labels.get("scale_step") {
                None => 1,
                Some(s) => s.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    in_group(format!("scale_step {s:?} is not a positive integer"))
                })?,
            };
            if comparison.is_none() {
                return Err(in_group("a scaling rule's expr must compare with a number (x > 0.7), so missing data can be told from a calm one".to_owned()));
            }
            Some(ScaleSpec {
                action,
                group,
                step,
            })
        }
        Some(_) => None,
    };
    Ok(Rule {
        kind,
        expr_text,
        expr,
        labels,
        line,
        comparison,
        clear_threshold: r.clear_threshold,
        flap,
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_file_line_and_reason() {
        let p = Path::new("r.yml");
        let e = parse(
            p,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expresion: up\n",
        )
        .expect_err("unknown field");
        assert_eq!(e.line, 5);
        assert!(e.reason.contains("expresion"), "{e}");
        let e = parse(
            p,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(up\n",
        )
        .expect_err("bad expression");
        assert!(
            e.to_string()
                .starts_with("r.yml:4: group \"g\": could not parse expression"),
            "{e}"
        );
        let f = parse(p, "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 2m\n        labels:\n          severity: 1\n")
            .expect("valid");
        let r = &f.groups[0].rules[0];
        assert_eq!(r.name(), "A");
        assert_eq!(r.labels.get("severity").map(String::as_str), Some("1"));
        assert!(
            matches!(r.kind, RuleKind::Alerting { for_, .. } if for_ == Duration::from_secs(120))
        );
    }
}

//! The Prometheus text exposition format 0.0.4, parsed into model series.
//!
//! Line syntax (metric names, label blocks, Go float spellings such as `+Inf` and `NaN`,
//! optional timestamps, HELP/TYPE grouping) is parsed by the `prom_text_format_parser`
//! crate. This module turns its metric families into [`Series`]: histogram and summary
//! children get their `_bucket`, `_sum` and `_count` names back, escaped label values are
//! unescaped, samples without a timestamp get the scrape's timestamp, and a label set that
//! Prometheus would refuse (bad name, duplicate name) fails the whole scrape, as it does
//! in Prometheus.

use nunchi_model::{Labels, METRIC_NAME, Series, is_valid_label_name, is_valid_metric_name};
use prom_text_format_parser::{ScrapeParseError, Type, ValueType};

/// The `Content-Type` of the text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The declared type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// `# TYPE x counter`.
    Counter,
    /// `# TYPE x gauge`.
    Gauge,
    /// `# TYPE x histogram`.
    Histogram,
    /// `# TYPE x summary`.
    Summary,
    /// No TYPE line, or `untyped`.
    Untyped,
}

/// HELP and TYPE of one metric family, as the target declared them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The family name (a histogram's name without `_bucket`).
    pub name: String,
    /// Its declared type.
    pub kind: FamilyType,
    /// Its HELP text, unescaped; empty when none was given.
    pub help: String,
}

/// A parsed exposition: every sample as a series, plus family metadata.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// One series per sample line, in the order they appeared.
    pub series: Vec<Series>,
    /// One entry per family.
    pub families: Vec<Family>,
}

/// Why an exposition could not be parsed. Like Prometheus, one bad line fails the scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not follow the format.
    #[error("invalid exposition text: {0}")]
    Syntax(String),
    /// A metric or label name is not valid.
    #[error("metric {metric:?}: {reason}")]
    InvalidSeries {
        /// The metric the offending line belongs to.
        metric: String,
        /// What is wrong.
        reason: String,
    },
}

/// Parses `text`, stamping samples that carry no timestamp with `default_timestamp_ms`.
pub fn parse(text: &str, default_timestamp_ms: i64) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let (metrics, error) = prom_text_format_parser::parse_scrape(text);
    if let Some(e) = error {
        return Err(ParseError::Syntax(describe(e)));
    }
    for metric in metrics {
        if !is_valid_metric_name(&metric.name) {
            return Err(invalid(&metric.name, "invalid metric name".into()));
        }
        let kind = match metric.kind {
            Type::Counter => FamilyType::Counter,
            Type::Gauge => FamilyType::Gauge,
            Type::Histogram => FamilyType::Histogram,
            Type::Summary => FamilyType::Summary,
            Type::Untyped => FamilyType::Untyped,
        };
        for sample in &metric.samples {
            let suffix = match (kind, sample.value.value_type) {
                (FamilyType::Histogram, ValueType::Sample) => "_bucket",
                (FamilyType::Histogram | FamilyType::Summary, ValueType::Sum) => "_sum",
                (FamilyType::Histogram | FamilyType::Summary, ValueType::Count) => "_count",
                _ => "",
            };
            let name = format!("{}{suffix}", metric.name);
            let mut labels = Labels::new();
            labels.insert(METRIC_NAME, name.clone());
            for l in sample.labels.iter() {
                if !is_valid_label_name(&l.key) || l.key == METRIC_NAME {
                    return Err(invalid(&name, format!("invalid label name {:?}", l.key)));
                }
                if labels.get(&l.key).is_some() {
                    return Err(invalid(&name, format!("duplicate label name {:?}", l.key)));
                }
                labels.insert(l.key.clone(), unescape_label_value(&l.value));
            }
            let value: f64 =
                sample.value.value.parse().map_err(|_| {
                    invalid(&name, format!("invalid value {:?}", *sample.value.value))
                })?;
            let ts = sample.value.timestamp.unwrap_or(default_timestamp_ms);
            out.series.push(Series::single(labels, ts, value));
        }
        out.families.push(Family {
            name: metric.name,
            kind,
            help: metric
                .help_desc
                .as_deref()
                .map(unescape_help)
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn invalid(metric: &str, reason: String) -> ParseError {
    ParseError::InvalidSeries {
        metric: metric.to_owned(),
        reason,
    }
}

fn describe(e: ScrapeParseError) -> String {
    match e {
        ScrapeParseError::Parse(s) => s.lines().next().unwrap_or_default().to_owned(),
        ScrapeParseError::Collect(errors) => errors
            .iter()
            .map(|e| format!("line {}: {}", e.line_no.start + 1, e.error))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Undoes the label-value escapes of the text format: `\\`, `\"` and `\n`.
fn unescape_label_value(s: &str) -> String {
    unescape(s, true)
}

/// Undoes the HELP escapes of the text format: `\\` and `\n`.
fn unescape_help(s: &str) -> String {
    unescape(s, false)
}

fn unescape(s: &str, quotes: bool) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM_EXAMPLE: &str = include_str!("../testdata/upstream_example.txt");

    fn find<'a>(e: &'a Exposition, name: &str, label: (&str, &str)) -> &'a Series {
        e.series
            .iter()
            .find(|s| {
                s.labels.metric_name() == Some(name) && s.labels.get(label.0) == Some(label.1)
            })
            .unwrap_or_else(|| panic!("no series {name} with {label:?}"))
    }

    #[test]
    fn parses_the_format_documentation_example() {
        let e = parse(UPSTREAM_EXAMPLE, 42).expect("parses");
        let s = find(&e, "http_requests_total", ("code", "400"));
        assert_eq!(
            (s.samples[0].timestamp_ms, s.samples[0].value),
            (1395066363000, 3.0)
        );
        let s = find(
            &e,
            "msdos_file_access_time_seconds",
            ("path", "C:\\DIR\\FILE.TXT"),
        );
        assert_eq!(
            s.labels.get("error"),
            Some("Cannot find file:\n\"FILE.TXT\"")
        );
        assert_eq!(s.samples[0].timestamp_ms, 42);
        let s = find(&e, "something_weird", ("problem", "division by zero"));
        assert_eq!(s.samples[0].value, f64::INFINITY);
        assert_eq!(s.samples[0].timestamp_ms, -3982045);
        let s = find(&e, "http_request_duration_seconds_bucket", ("le", "+Inf"));
        assert_eq!(s.samples[0].value, 144320.0);
        let names: Vec<_> = e
            .series
            .iter()
            .filter_map(|s| s.labels.metric_name())
            .collect();
        for n in [
            "http_request_duration_seconds_sum",
            "rpc_duration_seconds_count",
            "rpc_duration_seconds",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let hist = e
            .families
            .iter()
            .find(|f| f.name == "http_request_duration_seconds");
        assert_eq!(hist.map(|f| f.kind), Some(FamilyType::Histogram));
    }

    #[test]
    fn label_values_with_separators_survive() {
        let e = parse("# TYPE c counter\nc{a=\"x,y=z\",b=\"\"} 5\n", 0).expect("parses");
        assert_eq!(e.series[0].labels.get("a"), Some("x,y=z"));
        assert_eq!(e.series[0].labels.get("b"), None);
    }

    #[test]
    fn a_bad_line_fails_the_scrape_with_its_line_number() {
        let err = parse("a 1\nthis is not a sample\n", 0).expect_err("must fail");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn nan_and_empty_input() {
        let e = parse("x NaN\n", 7).expect("parses");
        assert!(e.series[0].samples[0].value.is_nan());
        assert!(parse("\n", 0).expect("parses").series.is_empty());
    }
}

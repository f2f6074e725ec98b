//! PromQL cases as data: every `testdata/*.test` file, in the Prometheus `promqltest`
//! format, run by the engine in process over an in-memory store.
//!
//! Supported: `load <interval>` (values, `_`, `stale`, `a+bxN`, `a-bxN`, `axN`, `_xN`),
//! `clear`, `eval instant at <time> <query>`, `eval range from <t> to <t> step <d> <query>`,
//! the `expect fail|ordered|warn|info|no_warn|no_info` lines (with `msg:` or `regex:`), and
//! the older `eval_fail`, `eval_ordered`, `expected_fail_message` and
//! `expected_fail_regexp`. The engine reports no annotations, so a case that expects
//! `warn` or `info` fails. Values match within a relative 1e-6, as Prometheus' runner
//! does; NaN matches NaN.

use std::collections::BTreeMap;
use std::path::Path;

use nunchi_model::{Labels, Sample, stale_nan};
use nunchi_promql::{Engine, Querier, QueryLimits, QueryResult};
use nunchi_tsdb::{SelectedRollup, SelectedSeries, StorageError};
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;

/// The loaded series, in memory.
#[derive(Default)]
struct Store {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl Querier for Store {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        Ok(self
            .series
            .iter()
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|m| m.is_match(l.get(&m.name).unwrap_or_default()))
            })
            .map(|(labels, samples)| SelectedSeries {
                labels: labels.clone(),
                samples: samples
                    .iter()
                    .filter(|s| (mint..=maxt).contains(&s.timestamp_ms))
                    .copied()
                    .collect::<Vec<_>>()
                    .into(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }

    async fn select_rollup(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<SelectedRollup>, StorageError> {
        Ok(Vec::new())
    }

    fn rollup_resolution_ms(&self) -> i64 {
        i64::MAX
    }
}

/// What a case expects of its answer.
#[derive(Default)]
struct Expect {
    fail: Option<Option<MessageMatch>>,
    ordered: bool,
    annotations: Vec<String>,
    /// Expected series (`None`: a scalar) and their values, one per step.
    series: Vec<(Option<Labels>, Vec<Option<f64>>)>,
}

enum MessageMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl MessageMatch {
    fn matches(&self, message: &str) -> bool {
        match self {
            MessageMatch::Exact(m) => message == m,
            MessageMatch::Regex(r) => r.is_match(message),
        }
    }
}

fn duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("bad duration {s:?}: {e}"))
}

fn number(s: &str) -> Result<f64, String> {
    match s.trim_start_matches('+').to_ascii_lowercase().as_str() {
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad number {s:?}")),
    }
}

/// The labels of a series description such as `metric{a="b"}` or `{a="b"}`.
fn labels(desc: &str) -> Result<Labels, String> {
    if desc == "{}" {
        return Ok(Labels::new());
    }
    let expr = promql_parser::parser::parse(desc).map_err(|e| format!("{desc}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{desc}: not a series"));
    };
    let mut pairs: Vec<(String, String)> = vs
        .matchers
        .matchers
        .iter()
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    if let Some(name) = vs
        .name
        .filter(|_| !pairs.iter().any(|(n, _)| n == "__name__"))
    {
        pairs.push(("__name__".to_owned(), name));
    }
    Ok(Labels::from_pairs(pairs))
}

/// Splits `metric{labels} values…` into the series and its values.
fn split_series(line: &str) -> (&str, &str) {
    let end = match (line.find('{'), line.find(char::is_whitespace)) {
        (Some(brace), ws) if ws.is_none_or(|w| brace < w) => {
            line.rfind('}').map_or(line.len(), |c| c + 1)
        }
        (_, Some(w)) => w,
        (_, None) => line.len(),
    };
    (&line[..end], line[end..].trim())
}

/// Expands a values text (`1 2+3x2 _ stale _x3`) into one optional value per interval.
fn values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        match token {
            "_" => out.push(None),
            "stale" => out.push(Some(stale_nan())),
            _ => match token.split_once('x') {
                Some((base, n)) if !base.is_empty() && n.parse::<usize>().is_ok() => {
                    let n: usize = n.parse().map_err(|_| format!("bad count in {token}"))?;
                    if base == "_" {
                        out.extend(std::iter::repeat_n(None, n));
                        continue;
                    }
                    // `a+b`, `a-b` or `a`; the sign that splits is not the first character.
                    let split = base[1..].find(['+', '-']).map(|i| i + 1);
                    let (a, b) = match split {
                        Some(i) => (number(&base[..i])?, number(&base[i..])?),
                        None => (number(base)?, 0.0),
                    };
                    out.extend((0..=n).map(|k| Some(a + b * k as f64)));
                }
                _ => out.push(Some(number(token)?)),
            },
        }
    }
    Ok(out)
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let scale = a.abs().max(b.abs());
    diff <= 1e-6 * scale || diff < 1e-12
}

/// An answer as labels (`None` for a scalar) → value per step.
type Answer = Vec<(Option<Labels>, Vec<Option<f64>>)>;

fn answer(r: QueryResult, start: i64, step: i64, steps: usize) -> Result<Answer, String> {
    Ok(match r {
        QueryResult::Scalar(_, v) => vec![(None, vec![Some(v)])],
        QueryResult::String(_, s) => return Err(format!("string answer {s:?}")),
        QueryResult::Vector(_, els) => els
            .into_iter()
            .map(|e| (Some((*e.labels).clone()), vec![Some(e.value)]))
            .collect(),
        QueryResult::Matrix(m) => m
            .into_iter()
            .map(|(labels, points)| {
                let mut vals = vec![None; steps];
                for (t, v) in points {
                    let i = ((t - start) / step.max(1)) as usize;
                    if i < steps {
                        vals[i] = Some(v);
                    }
                }
                (Some(labels), vals)
            })
            .collect(),
    })
}

fn show(vals: &[Option<f64>]) -> String {
    vals.iter()
        .map(|v| v.map_or("_".to_owned(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(expect: &Expect, got: Answer) -> Result<(), String> {
    let key = |l: &Option<Labels>| l.as_ref().map_or(String::new(), |l| l.to_string());
    let mismatch = || {
        let want: Vec<String> = expect
            .series
            .iter()
            .map(|(l, v)| format!("{} {}", key(l), show(v)))
            .collect();
        let have: Vec<String> = got
            .iter()
            .map(|(l, v)| format!("{} {}", key(l), show(v)))
            .collect();
        format!(
            "expected:\n    {}\ngot:\n    {}",
            want.join("\n    "),
            have.join("\n    ")
        )
    };
    if expect.series.len() != got.len() {
        return Err(mismatch());
    }
    let same_values = |a: &[Option<f64>], b: &[Option<f64>]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => almost_equal(*x, *y),
                (None, None) => true,
                _ => false,
            })
    };
    for (i, (labels, want)) in expect.series.iter().enumerate() {
        let found = if expect.ordered {
            (got[i].0 == *labels).then_some(&got[i])
        } else {
            got.iter().find(|(l, _)| l == labels)
        };
        match found {
            Some((_, have)) if same_values(want, have) => {}
            _ => return Err(mismatch()),
        }
    }
    Ok(())
}

/// Runs one eval: `instant` is `Some(t)` or the range is `(start, end, step)`.
async fn eval(
    store: &Store,
    query: &str,
    (start, end, step): (i64, i64, i64),
    expect: &Expect,
) -> Result<(), String> {
    let engine = Engine::new(store, QueryLimits::default());
    let result = match nunchi_promql::parse(query) {
        Err(e) => Err(e),
        Ok(expr) if step == 0 => engine.instant(&expr, start).await,
        Ok(expr) => engine.range(&expr, start, end, step).await,
    };
    match (result, &expect.fail) {
        (Err(e), Some(m)) => match m {
            Some(m) if !m.matches(&e.to_string()) => Err(format!("failed with {e:?}")),
            _ => Ok(()),
        },
        (Err(e), None) => Err(format!("failed: {e}")),
        (Ok(_), Some(_)) => Err("succeeded; expected to fail".to_owned()),
        (Ok(r), None) => {
            if let Some(a) = expect.annotations.first() {
                return Err(format!("expected annotation `{a}`; the engine gives none"));
            }
            let steps = if step == 0 {
                1
            } else {
                ((end - start) / step + 1) as usize
            };
            check(expect, answer(r, start, step.max(1), steps)?)
        }
    }
}

fn message(rest: &str) -> Result<Option<MessageMatch>, String> {
    let rest = rest.trim();
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    if rest.is_empty() {
        Ok(None)
    } else if let Some(m) = rest.strip_prefix("msg:") {
        Ok(Some(MessageMatch::Exact(unquote(m))))
    } else if let Some(r) = rest.strip_prefix("regex:") {
        regex::Regex::new(&unquote(r))
            .map(|r| Some(MessageMatch::Regex(r)))
            .map_err(|e| e.to_string())
    } else {
        Err(format!("bad expectation {rest:?}"))
    }
}

/// The query and its times from an `eval` line (after `eval`): `(start, end, step)`,
/// step 0 for an instant.
fn eval_line(rest: &str) -> Result<((i64, i64, i64), String), String> {
    let words: Vec<&str> = rest.splitn(7, ' ').collect();
    match words.as_slice() {
        ["instant", "at", t, query @ ..] => {
            let t = duration_ms(t)?;
            Ok(((t, t, 0), query.join(" ")))
        }
        ["range", "from", a, "to", b, "step", rest] => {
            let (step, query) = rest.split_once(' ').ok_or("range eval without a query")?;
            Ok((
                (duration_ms(a)?, duration_ms(b)?, duration_ms(step)?),
                query.to_owned(),
            ))
        }
        _ => Err(format!("bad eval line: eval {rest}")),
    }
}

/// Runs a whole script; returns each failed case as `file:line: why`.
async fn run_script(name: &str, text: &str) -> (usize, Vec<String>) {
    let mut store = Store::default();
    let mut failures = Vec::new();
    let mut cases = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let at = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The indented (or simply following, non-command) lines of this command.
        let mut body = Vec::new();
        while i < lines.len() {
            let l = lines[i].trim();
            if l.is_empty() || ["load ", "eval", "clear"].iter().any(|c| l.starts_with(c)) {
                break;
            }
            if !l.starts_with('#') {
                body.push(l);
            }
            i += 1;
        }
        let outcome: Result<(), String> = async {
            if line == "clear" {
                store = Store::default();
                return Ok(());
            }
            if let Some(interval) = line.strip_prefix("load ") {
                let interval = duration_ms(interval.trim())?;
                for l in &body {
                    let (desc, vals) = split_series(l);
                    let samples = store.series.entry(labels(desc)?).or_default();
                    for (k, v) in values(vals)?.into_iter().enumerate() {
                        if let Some(value) = v {
                            samples.push(Sample {
                                timestamp_ms: k as i64 * interval,
                                value,
                            });
                        }
                    }
                    samples.sort_by_key(|s| s.timestamp_ms);
                }
                return Ok(());
            }
            let (command, rest) = line.split_once(' ').ok_or("bad command")?;
            let mut expect = Expect {
                ordered: command == "eval_ordered",
                fail: (command == "eval_fail").then_some(None),
                ..Expect::default()
            };
            if !matches!(command, "eval" | "eval_fail" | "eval_ordered") {
                return Err(format!("unknown command {command:?}"));
            }
            let (times, query) = eval_line(rest)?;
            for l in &body {
                if let Some(e) = l.strip_prefix("expect ") {
                    let (kind, m) = e.split_once(' ').unwrap_or((e, ""));
                    match kind {
                        "fail" => expect.fail = Some(message(m)?),
                        "ordered" => expect.ordered = true,
                        "warn" | "info" => expect.annotations.push(e.to_owned()),
                        "no_warn" | "no_info" => {}
                        _ => return Err(format!("unknown expectation {e:?}")),
                    }
                } else if let Some(m) = l.strip_prefix("expected_fail_message ") {
                    expect.fail = Some(Some(MessageMatch::Exact(m.trim().to_owned())));
                } else if let Some(r) = l.strip_prefix("expected_fail_regexp ") {
                    let r = regex::Regex::new(r.trim()).map_err(|e| e.to_string())?;
                    expect.fail = Some(Some(MessageMatch::Regex(r)));
                } else if l.starts_with(|c: char| c.is_ascii_digit() || "-+.".contains(c))
                    || ["Inf", "NaN"].iter().any(|w| l.starts_with(w))
                {
                    expect.series.push((None, values(l)?));
                } else {
                    let (desc, vals) = split_series(l);
                    expect.series.push((Some(labels(desc)?), values(vals)?));
                }
            }
            cases += 1;
            eval(&store, &query, times, &expect)
                .await
                .map_err(|e| format!("{query}: {e}"))
        }
        .await;
        if let Err(e) = outcome {
            failures.push(format!("{name}:{at}: {e}"));
        }
    }
    (cases, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promqltest_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let (mut cases, mut failures) = (0, Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read .test file");
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (n, fails) = run_script(&name, &text).await;
        assert!(n > 0, "{name} holds no eval");
        cases += n;
        failures.extend(fails);
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The runner itself: a wrong expectation is reported, not passed.
#[tokio::test]
async fn a_wrong_expectation_fails() {
    let script = "load 1m\n  m{a=\"x\"} 1+1x5\n\neval instant at 2m m\n  {__name__=\"m\", a=\"x\"} 4\n\neval instant at 2m m\n  expect fail\n";
    let (cases, failures) = run_script("wrong", script).await;
    assert_eq!(cases, 2);
    assert_eq!(failures.len(), 2, "{failures:?}");
}

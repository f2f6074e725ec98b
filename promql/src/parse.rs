//! Parsing with limits: a query's text is checked before `promql-parser` builds a tree of
//! it, so that no input makes the parser, the evaluator or the tree's own drop recurse
//! past the stack, and no number the parser would turn into a `Duration` makes it panic.
//!
//! The check runs over the parser's own tokens, in one pass with an explicit stack (it
//! never recurses):
//! - the text is at most `max_length` bytes;
//! - an upper bound of the tree's depth is at most `max_depth`. Every node of the tree
//!   stands for at least one token (an operator, unary or binary; `(` of a call, an
//!   aggregation or a parenthesis; `[` of a range or subquery), so the tokens of one
//!   parenthesis level bound the depth of that level's part of the tree, and the levels add
//!   up. Label matchers inside `{}` make no nodes and are not counted;
//! - a number or duration where a range, a subquery step or an offset is expected lies in
//!   `[0, 292y]` (what fits a signed 64-bit count of nanoseconds, as in Prometheus), and an
//!   `@` timestamp lies within [`MAX_TIME_MS`].
//!
//! Errors name the place as Prometheus does: `LINE:COL: parse error: REASON`.

use lrpar::{Lexeme, Lexer, NonStreamingLexer};
use promql_parser::parser::token::{
    T_ADD, T_AT, T_COLON, T_DURATION, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_NUMBER,
    T_OFFSET, T_RIGHT_BRACE, T_RIGHT_PAREN, T_SUB, TokenId, TokenType,
};
use promql_parser::parser::{self, Expr};

/// The largest duration a query may name, in seconds: a signed 64-bit count of
/// nanoseconds, about 292 years (Prometheus' limit).
pub const MAX_DURATION_SECS: f64 = i64::MAX as f64 / 1e9;

/// The furthest from the epoch, in ms, that a query time or `@` timestamp may lie (about
/// 73 million years): far enough for any real use, near enough that the times a query
/// derives from it (minus a range, plus a step) never overflow.
pub const MAX_TIME_MS: i64 = i64::MAX / 4;

/// Limits on a query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Longest query text, in bytes.
    pub max_length: usize,
    /// Deepest expression tree (nested calls, parentheses, operators, ranges).
    pub max_depth: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_length: 64 * 1024,
            max_depth: 1000,
        }
    }
}

/// One parenthesis level being scanned.
#[derive(Default)]
struct Level {
    /// Operator and `[` tokens at this level.
    ops: usize,
    /// The deepest bound of a level closed inside this one.
    deepest_inner: usize,
}

/// Parses `q` after checking it against `limits`. The error is the reason alone, in
/// Prometheus' words; callers add what was being parsed.
pub fn parse_limited(q: &str, limits: &TextLimits) -> Result<Expr, String> {
    check(q, limits)?;
    parser::parse(q)
}

/// Checks `q` against `limits` without building a tree.
pub fn check(q: &str, limits: &TextLimits) -> Result<(), String> {
    if q.len() > limits.max_length {
        return Err(format!(
            "the query is {} bytes long, over the limit of {} bytes (query.max_length)",
            q.len(),
            limits.max_length
        ));
    }
    // A text the lexer refuses is left to the parser, which words the error.
    let Ok(lexer) = parser::lex::lexer(q) else {
        return Ok(());
    };
    let at = |span: lrpar::Span| {
        let (line, col) = line_col(q, span.start());
        format!("{line}:{col}: parse error")
    };
    let too_deep = |span| {
        format!(
            "{}: the expression is nested too deeply (more than {} levels; query.max_depth)",
            at(span),
            limits.max_depth
        )
    };
    let mut levels = vec![Level::default()];
    // Operators of the open levels, so their running bound is known without a walk.
    let mut open_ops = 0usize;
    let mut in_braces = false;
    let mut before: [Option<TokenId>; 2] = [None, None];
    for lexeme in lexer.iter() {
        let Ok(lexeme) = lexeme else { continue };
        let tok = lexeme.tok_id();
        let span = lexeme.span();
        if in_braces {
            in_braces = tok != T_RIGHT_BRACE;
            continue;
        }
        match tok {
            T_LEFT_BRACE => in_braces = true,
            T_LEFT_PAREN => levels.push(Level::default()),
            T_RIGHT_PAREN if levels.len() > 1 => {
                let closed = levels.pop().unwrap_or_default();
                open_ops -= closed.ops;
                let bound = closed.ops + 1 + closed.deepest_inner;
                if let Some(outer) = levels.last_mut() {
                    outer.deepest_inner = outer.deepest_inner.max(bound);
                }
                if open_ops + levels.len() + bound > limits.max_depth {
                    return Err(too_deep(span));
                }
            }
            T_LEFT_BRACKET => {
                open_ops += 1;
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
            }
            t if t != T_AT && TokenType::new(t).is_operator() => {
                open_ops += 1;
                if let Some(l) = levels.last_mut() {
                    l.ops += 1;
                }
            }
            _ => {}
        }
        if open_ops + levels.len() > limits.max_depth {
            return Err(too_deep(span));
        }
        let text = lexer.span_str(span);
        let duration_here = matches!(before, [_, Some(T_LEFT_BRACKET | T_COLON | T_OFFSET)])
            || matches!(before, [Some(T_OFFSET), Some(T_SUB | T_ADD)]);
        if tok == T_DURATION || (tok == T_NUMBER && duration_here) {
            check_duration(text).map_err(|e| format!("{}: {e}", at(span)))?;
        }
        let at_here = matches!(before, [_, Some(T_AT)])
            || matches!(before, [Some(T_AT), Some(T_SUB | T_ADD)]);
        if tok == T_NUMBER && at_here {
            check_at(text).map_err(|e| format!("{}: {e}", at(span)))?;
        }
        before = [before[1], Some(tok)];
    }
    let root = levels.first().map_or(0, |l| l.ops + 1 + l.deepest_inner);
    if root > limits.max_depth {
        return Err(format!(
            "1:1: parse error: the expression is nested too deeply (more than {} levels; query.max_depth)",
            limits.max_depth
        ));
    }
    Ok(())
}

/// The line and column (both from 1, the column in bytes, as Prometheus counts) of byte
/// `pos` in `q`.
fn line_col(q: &str, pos: usize) -> (usize, usize) {
    let before = q.get(..pos).unwrap_or(q);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
    (line, col)
}

/// A duration token, or a number used as one, must fit Prometheus' range. Numbers in
/// seconds are what the parser would hand to `Duration::from_secs_f64`, which panics on
/// a negative, infinite, NaN or too large value.
fn check_duration(text: &str) -> Result<(), String> {
    let secs = match number(text) {
        Some(n) => n,
        None => match promql_parser::util::parse_duration(text) {
            Ok(d) => d.as_secs_f64(),
            // The parser words its own error.
            Err(_) => return Ok(()),
        },
    };
    if secs.is_nan() || !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!("duration out of range: {text}"));
    }
    Ok(())
}

/// An `@` timestamp must lie within [`MAX_TIME_MS`].
fn check_at(text: &str) -> Result<(), String> {
    if let Some(secs) = number(text)
        && (secs.is_nan() || (secs * 1000.0).abs() > MAX_TIME_MS as f64)
    {
        return Err(format!("timestamp out of bounds for @ modifier: {text}"));
    }
    Ok(())
}

/// A number as the parser reads one (decimal, hex, octal, `Inf`, `NaN`), if `text` is one.
fn number(text: &str) -> Option<f64> {
    promql_parser::util::parse_str_radix(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Expr, String> {
        parse_limited(q, &TextLimits::default())
    }

    #[test]
    fn deep_shapes_are_refused_with_a_place_and_shallow_ones_parse() {
        let deep = [
            format!("{}up", "-".repeat(10_000)),
            format!("{}up{}", "(".repeat(20_000), ")".repeat(20_000)),
            format!("{}up{}", "abs(".repeat(5_000), ")".repeat(5_000)),
            vec!["a"; 5_000].join(" + "),
            format!("{}up{}", "(".repeat(1_001), ")".repeat(1_001)),
            format!("{}x{}", "sum(rate(".repeat(400), "[5m]))".repeat(400)),
        ];
        for q in &deep {
            let e = parse(q).expect_err("too deep");
            assert!(
                e.contains("parse error") && e.contains("query.max_depth"),
                "{e}"
            );
        }
        let long = format!("{}up", "-".repeat(100_000));
        let e = parse(&long).expect_err("too long");
        assert!(e.contains("query.max_length"), "{e}");
        // Unclosed: the lexer's own error, before any tree is built.
        let e = parse(&format!("{}up", "(".repeat(50_000))).expect_err("unclosed");
        assert!(e.contains("unclosed left parenthesis"), "{e}");
        let fine = [
            vec!["a"; 900].join(" + "),
            format!("{}up{}", "(".repeat(400), ")".repeat(400)),
            format!("{}up", "-".repeat(900)),
            "sum by (job, instance) (rate(http_requests_total{job=~\"a|b\", code!=\"500\", x=\"1\", y=\"2\"}[5m]))".to_owned(),
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m]))) > bool 0.5 or vector(1)".to_owned(),
        ];
        for q in &fine {
            parse(q).unwrap_or_else(|e| panic!("{q:.60}: {e}"));
        }
    }

    #[test]
    fn durations_and_timestamps_out_of_range_are_refused_not_panicked_on() {
        for q in [
            "x offset 1e30",
            "x[1e30]",
            "x offset -1e30",
            "x offset +1e30",
            "x offset +Inf",
            "max_over_time(x[5m:1m] @ +1e300)",
            "rate(x[5m:1e30])",
            "x[300y]",
            "x @ 1e300",
            "x @ -1e300",
            "x @ NaN",
        ] {
            let e = parse(q).expect_err(q);
            assert!(
                e.contains("parse error")
                    && (e.contains("out of range") || e.contains("out of bounds")),
                "{q}: {e}"
            );
        }
        // Words inside brackets are the lexer's error.
        for q in ["x[Inf]", "x[NaN]"] {
            parse(q).expect_err(q);
        }
        for q in [
            "x offset 5m",
            "x[1.5]",
            "x[5m:10]",
            "x @ 1700000000",
            "x offset -1h",
            "x[292y]",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        let e = parse("x\n  offset 1e30").expect_err("placed");
        assert!(e.starts_with("2:10: parse error"), "{e}");
    }
}

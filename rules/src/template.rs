//! Annotation and label templates, in the subset of Go's text/template that Prometheus
//! rule files use: `{{ $labels.name }}`, `{{ $value }}`, `{{ .Labels.name }}`,
//! `{{ .Value }}`, `{{ $externalLabels.name }}`, pipes (`{{ $value | humanize }}`) and
//! calls (`{{ printf "%.1f" $value }}`) with `humanize`, `humanize1024`,
//! `humanizePercentage`, `humanizeDuration`, `humanizeTimestamp`, `printf`, `toUpper`,
//! `toLower`, `title`. A template that does not expand yields Prometheus' text
//! `<error expanding template: ...>`; [`check`] reports it at load time.

use std::collections::BTreeMap;

use nunchi_model::number::format_value;

/// What a template can refer to.
pub struct Data<'a> {
    /// `$labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `$value`.
    pub value: f64,
    /// `$externalLabels`.
    pub external_labels: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Num(f64),
    Str(String),
}

impl V {
    fn text(&self) -> String {
        match self {
            V::Num(n) => format_value(*n),
            V::Str(s) => s.clone(),
        }
    }
    fn num(&self) -> Result<f64, String> {
        match self {
            V::Num(n) => Ok(*n),
            V::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("cannot convert {s:?} to a number")),
        }
    }
}

/// Expands `template`.
pub fn expand(template: &str, data: &Data<'_>) -> String {
    expand_checked(template, data).unwrap_or_else(|e| format!("<error expanding template: {e}>"))
}

/// Whether `template` expands (with placeholder data).
pub fn check(template: &str) -> Result<(), String> {
    let labels = BTreeMap::new();
    expand_checked(
        template,
        &Data {
            labels: &labels,
            value: 0.0,
            external_labels: &labels,
        },
    )
    .map(|_| ())
}

fn expand_checked(template: &str, data: &Data<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or("unclosed action")?;
        let mut action = &after[..close];
        if let Some(a) = action.strip_prefix('-') {
            action = a;
            out.truncate(out.trim_end().len());
        }
        let mut trim_after = false;
        if let Some(a) = action.strip_suffix('-') {
            action = a;
            trim_after = true;
        }
        out.push_str(&pipeline(action.trim(), data)?);
        rest = &after[close + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut t = String::new();
            let mut closed = false;
            while let Some(c2) = chars.next() {
                if c2 == c {
                    closed = true;
                    break;
                }
                if c2 == '\\' && c == '"' {
                    match chars.next() {
                        Some('n') => t.push('\n'),
                        Some('t') => t.push('\t'),
                        Some(o) => t.push(o),
                        None => {}
                    }
                } else {
                    t.push(c2);
                }
            }
            if !closed {
                return Err("unterminated quoted string".into());
            }
            out.push(format!("\"{t}"));
        } else {
            let mut t = String::new();
            while let Some(&c2) = chars.peek() {
                if c2.is_whitespace() {
                    break;
                }
                t.push(c2);
                chars.next();
            }
            out.push(t);
        }
    }
    Ok(out)
}

fn operand(tok: &str, data: &Data<'_>) -> Result<V, String> {
    if let Some(s) = tok.strip_prefix('"') {
        return Ok(V::Str(s.to_owned()));
    }
    let field = |map: &BTreeMap<String, String>, key: &str| {
        V::Str(map.get(key).cloned().unwrap_or_default())
    };
    match tok {
        "$value" | ".Value" => return Ok(V::Num(data.value)),
        _ => {}
    }
    for (prefix, map) in [
        ("$labels.", data.labels),
        (".Labels.", data.labels),
        ("$externalLabels.", data.external_labels),
        (".ExternalLabels.", data.external_labels),
    ] {
        if let Some(k) = tok.strip_prefix(prefix) {
            return Ok(field(map, k));
        }
    }
    if let Ok(n) = tok.parse::<f64>() {
        return Ok(V::Num(n));
    }
    Err(format!("undefined variable or function {tok:?}"))
}

fn pipeline(action: &str, data: &Data<'_>) -> Result<String, String> {
    if action.starts_with("/*") {
        return Ok(String::new());
    }
    let mut acc: Option<V> = None;
    for stage in split_pipes(action) {
        let toks = tokens(stage.trim())?;
        let Some(head) = toks.first() else {
            return Err("empty command".into());
        };
        let mut args = toks[1..]
            .iter()
            .map(|t| operand(t, data))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(prev) = acc.take() {
            args.push(prev);
        }
        acc = Some(if is_function(head) {
            call(head, &args)?
        } else if args.is_empty() {
            operand(head, data)?
        } else {
            return Err(format!("{head:?} is not a function"));
        });
    }
    Ok(acc.map(|v| v.text()).unwrap_or_default())
}

fn split_pipes(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '`') => quote = Some(c),
            (None, '|') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_function(name: &str) -> bool {
    matches!(
        name,
        "humanize"
            | "humanize1024"
            | "humanizePercentage"
            | "humanizeDuration"
            | "humanizeTimestamp"
            | "printf"
            | "toUpper"
            | "toLower"
            | "title"
    )
}

fn one<'a>(name: &str, args: &'a [V]) -> Result<&'a V, String> {
    match args {
        [a] => Ok(a),
        _ => Err(format!(
            "wrong number of args for {name}: want 1 got {}",
            args.len()
        )),
    }
}

fn call(name: &str, args: &[V]) -> Result<V, String> {
    Ok(V::Str(match name {
        "humanize" => humanize(one(name, args)?.num()?),
        "humanize1024" => humanize1024(one(name, args)?.num()?),
        "humanizePercentage" => format!("{}%", fmt_g(one(name, args)?.num()? * 100.0, 4)),
        "humanizeDuration" => humanize_duration(one(name, args)?.num()?),
        "humanizeTimestamp" => {
            let v = one(name, args)?.num()?;
            if v.is_nan() || v.is_infinite() {
                fmt_g(v, 4)
            } else {
                chrono::DateTime::from_timestamp_millis((v * 1000.0) as i64)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f %z UTC").to_string())
                    .unwrap_or_default()
            }
        }
        "toUpper" => one(name, args)?.text().to_uppercase(),
        "toLower" => one(name, args)?.text().to_lowercase(),
        "title" => {
            let t = one(name, args)?.text();
            t.split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next().map_or_else(String::new, |f| {
                        f.to_uppercase().collect::<String>() + c.as_str()
                    })
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        "printf" => {
            let Some((fmt, rest)) = args.split_first() else {
                return Err("wrong number of args for printf".into());
            };
            printf(&fmt.text(), rest)?
        }
        _ => return Err(format!("function {name:?} not defined")),
    }))
}

/// Go's `%.<p>g`.
pub fn fmt_g(v: f64, p: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let p = p.max(1);
    let exp = v.abs().log10().floor() as i32;
    let sci = format!("{:.*e}", p - 1, v);
    let (mant, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if e < -4 || e >= p as i32 {
        let mant = trim_zeros(mant);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (p as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let mut v = v;
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", fmt_g(v, 4));
    }
    let (v, prefix) = scale_below_one(v);
    format!("{}{prefix}", fmt_g(v, 4))
}

/// `v` under 1 scaled up by thousands, with its SI prefix (`m`, `u`, `n`, ...), as
/// Prometheus' `humanize` and `humanizeDuration` write small values.
fn scale_below_one(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", fmt_g(v, 4))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let secs = v as i64;
        let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let ms = ((v - v.floor()) * 1000.0) as i64;
        if d != 0 {
            return format!("{sign}{d}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", fmt_g(s as f64 + ms as f64 / 1000.0, 4));
    }
    let (v, prefix) = scale_below_one(v);
    format!("{}{prefix}s", fmt_g(v, 4))
}

fn printf(fmt: &str, args: &[V]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().ok_or("format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or_else(|| format!("%!{verb}(MISSING)"))?;
        let prec = spec
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok());
        let width = spec
            .split('.')
            .next()
            .and_then(|w| w.trim_start_matches(['-', '+']).parse::<usize>().ok());
        let s = match verb {
            'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), arg.num()?),
            'e' => {
                let s = format!("{:.*e}", prec.unwrap_or(6), arg.num()?);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
            }
            'g' => match prec {
                Some(p) => fmt_g(arg.num()?, p),
                None => format_value(arg.num()?),
            },
            'd' => format!("{}", arg.num()? as i64),
            's' | 'v' => arg.text(),
            'q' => format!("{:?}", arg.text()),
            other => return Err(format!("unsupported verb %{other}")),
        };
        match width {
            Some(w) if spec.starts_with('-') => out.push_str(&format!("{s:<w$}")),
            Some(w) => out.push_str(&format!("{s:>w$}")),
            None => out.push_str(&s),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> =
            [("instance".to_string(), "host-1".to_string())].into();
        let ext = BTreeMap::new();
        expand(
            t,
            &Data {
                labels: &labels,
                value,
                external_labels: &ext,
            },
        )
    }

    #[test]
    fn expands_like_prometheus() {
        assert_eq!(
            run("{{ $labels.instance }} at {{ $value }}", 0.5),
            "host-1 at 0.5"
        );
        assert_eq!(run("{{ .Labels.instance }}", 0.0), "host-1");
        assert_eq!(run("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(run("{{ humanize $value }}", 0.001234), "1.234m");
        assert_eq!(run("{{ $value | humanize1024 }}", 1048576.0), "1Mi");
        assert_eq!(run("{{ $value | humanizePercentage }}", 0.8234), "82.34%");
        assert_eq!(
            run("{{ $value | humanizeDuration }}", 93784.0),
            "1d 2h 3m 4s"
        );
        assert_eq!(run("{{ $value | humanizeDuration }}", 0.25), "250ms");
        assert_eq!(run("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(run("{{ printf \"%.1f%%\" $value }}", 72.44), "72.4%");
        assert_eq!(run("{{ $labels.instance | toUpper }}", 0.0), "HOST-1");
        assert!(run("{{ $nope }}", 0.0).starts_with("<error expanding template"));
        assert!(check("{{ $value ").is_err());
    }
}

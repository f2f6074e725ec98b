//! Units and times as operators read them: `42.1%`, `1.5 GiB`, `12 MiB/s`, `230 ms`, UTC
//! times. Pure functions, the same on the server and in the browser, so hydration sees
//! the text the server wrote.

/// `{a="b", c="d"}` without `__name__`.
pub fn labels_text(m: &std::collections::BTreeMap<String, String>, skip: &[&str]) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__" && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// What a number measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A ratio 0..1 shown as a percentage.
    Percent,
    /// Bytes (IEC).
    Bytes,
    /// Bytes per second.
    BytesPerSec,
    /// Events per second.
    PerSec,
    /// Seconds, shown as µs/ms/s.
    Seconds,
    /// A plain number.
    Number,
}

/// `v` in `unit`, about three significant digits.
pub fn value(v: f64, unit: Unit) -> String {
    if v.is_nan() {
        return "–".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    match unit {
        Unit::Percent => format!("{}%", sig(v * 100.0)),
        Unit::Bytes => bytes(v, ""),
        Unit::BytesPerSec => bytes(v, "/s"),
        Unit::PerSec => format!("{}/s", si(v)),
        Unit::Seconds => seconds(v),
        Unit::Number => si(v),
    }
}

fn sig(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

fn si(v: f64) -> String {
    let a = v.abs();
    for (f, s) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= f {
            return format!("{}{s}", sig(v / f));
        }
    }
    sig(v)
}

fn bytes(v: f64, suffix: &str) -> String {
    let a = v.abs();
    for (i, s) in ["PiB", "TiB", "GiB", "MiB", "KiB"].iter().enumerate() {
        let f = 1024f64.powi(5 - i as i32);
        if a >= f {
            return format!("{} {s}{suffix}", sig(v / f));
        }
    }
    format!("{} B{suffix}", sig(v))
}

fn seconds(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 1e-3 {
        format!("{} µs", sig(v * 1e6))
    } else if a < 1.0 {
        format!("{} ms", sig(v * 1e3))
    } else if a < 120.0 {
        format!("{} s", sig(v))
    } else {
        duration(v)
    }
}

/// A duration in seconds as `3d 4h`, `5m 2s`, `800ms`.
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        return format!("{:.0}ms", secs * 1e3);
    }
    let s = secs as u64;
    let (d, h, m, r) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{r}s"),
        (0, 0, _) => format!("{m}m {r}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Unix seconds as `2026-11-23 10:11:20 UTC`.
pub fn time(secs: f64) -> String {
    chrono::DateTime::from_timestamp_millis((secs * 1e3) as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Unix seconds as `10:11:20` (chart axes).
pub fn clock(secs: f64, with_date: bool) -> String {
    chrono::DateTime::from_timestamp_millis((secs * 1e3) as i64)
        .map(|t| {
            t.format(if with_date { "%m-%d %H:%M" } else { "%H:%M:%S" })
                .to_string()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    nunchi_model::time::parse_rfc3339(s)
        .ok()
        .map(|ms| ms as f64 / 1e3)
}

/// A Prometheus duration (`5m`, `1h`, `7d`) in seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let (n, u) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = n.parse().ok()?;
    let f = match u {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 604800.0,
        _ => return None,
    };
    Some(n * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_as_operators_expect() {
        assert_eq!(value(0.4213, Unit::Percent), "42.1%");
        assert_eq!(
            value(1.5 * 1024.0 * 1024.0 * 1024.0, Unit::Bytes),
            "1.50 GiB"
        );
        assert_eq!(value(12.0 * 1048576.0, Unit::BytesPerSec), "12.0 MiB/s");
        assert_eq!(value(0.23, Unit::Seconds), "230 ms");
        assert_eq!(value(1500.0, Unit::PerSec), "1.50k/s");
        assert_eq!(value(f64::NAN, Unit::Number), "–");
        assert_eq!(duration(3725.0), "1h 2m");
        assert_eq!(time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(parse_duration("30d"), Some(2_592_000.0));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:01:00Z"), Some(60.0));
    }
}

//! Numbers as Prometheus and Go write and read them: the API's sample values
//! (`jsonutil.MarshalFloat`), Go's `%e` form that alert values use, and the value text
//! the HTTP API and remote stores send back.

/// A value as Prometheus writes it (`jsonutil.MarshalFloat`): Go's shortest digits,
/// plain below 1e21 and from 1e-6, with an exponent (`1e+21`, `6.5e-07`) outside;
/// `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    Formatted::new(v).as_str().to_owned()
}

/// Appends `v` to `out` as [`format_value`] writes it.
#[inline]
pub fn push_value(out: &mut Vec<u8>, v: f64) {
    // Most values: zmij writes `1e-5 <= |v| < 1e16` plain, as Go does, but for an
    // integer's `.0`.
    if (1e-5..1e16).contains(&v.abs()) {
        let mut b = zmij::Buffer::new();
        let s = b.format_finite(v).as_bytes();
        out.extend_from_slice(s.strip_suffix(b".0").unwrap_or(s));
    } else {
        out.extend_from_slice(Formatted::new(v).as_bytes());
    }
}

/// A formatted value, on the stack.
pub struct Formatted {
    buf: [u8; 48],
    len: usize,
}

impl Formatted {
    /// `v` formatted as [`format_value`] does it.
    pub fn new(v: f64) -> Formatted {
        let mut f = Formatted {
            buf: [0; 48],
            len: 0,
        };
        if v.is_nan() {
            f.push(b"NaN");
            return f;
        }
        if v.is_infinite() {
            f.push(if v > 0.0 { b"+Inf" } else { b"-Inf" });
            return f;
        }
        let abs = v.abs();
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            // Go's exponent form: `6.5e-07`, `1e+21`.
            let mut b = zmij::Buffer::new();
            let s = b.format_finite(v);
            let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => (b'-', d),
                None => (b'+', exp.strip_prefix('+').unwrap_or(exp)),
            };
            f.push(mantissa.as_bytes());
            f.push(b"e");
            f.push(&[sign]);
            if digits.len() < 2 {
                f.push(b"0");
            }
            f.push(digits.as_bytes());
            return f;
        }
        let mut b = zmij::Buffer::new();
        let s = b.format_finite(v);
        match s.bytes().position(|c| c == b'e') {
            None => f.push(s.strip_suffix(".0").unwrap_or(s).as_bytes()),
            Some(e) => f.plain(&s[..e], s[e + 1..].parse().unwrap_or(0)),
        }
        f
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    /// Writes `mantissa` × 10^`exp` (zmij's `d.ddd` and exponent) without an exponent.
    fn plain(&mut self, mantissa: &str, exp: i32) {
        let (neg, m) = match mantissa.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mantissa),
        };
        let mut digits = [0u8; 20];
        let mut n = 0;
        for &c in m.as_bytes().iter().filter(|c| c.is_ascii_digit()) {
            digits[n] = c;
            n += 1;
        }
        let digits = &digits[..n];
        if neg {
            self.push(b"-");
        }
        // Where the decimal point goes, counted from the first digit.
        let point = exp + 1;
        if point <= 0 {
            self.push(b"0.");
            for _ in 0..-point {
                self.push(b"0");
            }
            self.push(digits);
        } else if point as usize >= digits.len() {
            self.push(digits);
            for _ in 0..point as usize - digits.len() {
                self.push(b"0");
            }
        } else {
            self.push(&digits[..point as usize]);
            self.push(b".");
            self.push(&digits[point as usize..]);
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("NaN")
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits with a two-digit exponent
/// (`1e+00`, `6.5e-07`), as Prometheus writes alert values; `+Inf`, `-Inf`, `NaN`.
pub fn format_exp(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// A sample value as the Prometheus HTTP API sends it: a decimal or exponent number,
/// `+Inf` (or `Inf`), `-Inf`, `NaN`. `None` for anything else.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_the_shortest_digits_and_read_back_exactly() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            // Spread over the whole plain range, and the integers counters hold.
            let v = if i % 2 == 0 {
                v
            } else {
                (x >> 11) as f64 / 1000.0
            };
            if !v.is_finite() || (v != 0.0 && !(1e-6..1e21).contains(&v.abs())) {
                continue;
            }
            // Rust's own printing has the same length; it may round an exact tie the other
            // way (Go, like zmij, rounds it to even).
            let ours = Formatted::new(v);
            let ours = ours.as_str();
            let mut pushed = Vec::new();
            push_value(&mut pushed, v);
            assert_eq!(pushed, ours.as_bytes(), "{v:e}");
            assert_eq!(ours.parse::<f64>().ok(), Some(v), "{v:e}: {ours}");
            assert_eq!(ours.len(), format!("{v}").len(), "{v:e}: {ours}");
            assert!(!ours.contains('e'), "{v:e}: {ours}");
        }
    }

    #[test]
    fn values_are_written_as_prometheus_does() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(
            format_value(123456789012345680000.0),
            "123456789012345680000"
        );
        assert_eq!(format_value(6.540546422436074e-10), "6.540546422436074e-10");
        assert_eq!(format_value(-2.5e-7), "-2.5e-07");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(1.5e16), "15000000000000000");
        assert_eq!(format_value(1.25e-6), "0.00000125");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(1.7e308), "1.7e+308");
        assert_eq!(format_value(5e-324), "5e-324");
        // Where zmij's plain form ends, and Go's.
        for (v, text) in [
            (1e-5, "0.00001"),
            (9.999999999999999e-6, "0.000009999999999999999"),
            (1e-6, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (1e16, "10000000000000000"),
            (9999999999999998.0, "9999999999999998"),
            (-1.5e16, "-15000000000000000"),
            (999999999999999900000.0, "999999999999999900000"),
        ] {
            assert_eq!(format_value(v), text);
            let mut pushed = Vec::new();
            push_value(&mut pushed, v);
            assert_eq!(pushed, text.as_bytes());
        }
    }

    #[test]
    fn exponent_form() {
        assert_eq!(format_exp(1.0), "1e+00");
        assert_eq!(format_exp(0.00065), "6.5e-04");
        assert_eq!(format_exp(123456.0), "1.23456e+05");
        assert_eq!(format_exp(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn values_read_back() {
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("1e+21"), Some(1e21));
        assert_eq!(parse_value("0.25"), Some(0.25));
        assert_eq!(parse_value("one"), None);
    }
}

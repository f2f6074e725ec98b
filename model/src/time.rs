//! Time as text, in the forms the HTTP API and the notifications write: RFC 3339 in UTC.

/// `ms` (Unix milliseconds) as RFC 3339 in UTC, with the fractional digits it needs, in
/// groups of three (`2026-12-07T15:00:00Z`, `2026-12-07T15:00:00.250Z`): how the rule,
/// alert and silence APIs write times.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `ms` as RFC 3339 in UTC with milliseconds, as Alertmanager writes notification times.
pub fn rfc3339_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An RFC 3339 time, at any offset, as Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_in_every_form() {
        let ms = 1_765_119_600_250;
        assert_eq!(rfc3339(ms), "2025-12-07T15:00:00.250Z");
        assert_eq!(rfc3339(ms - 250), "2025-12-07T15:00:00Z");
        assert_eq!(rfc3339_millis(ms - 250), "2025-12-07T15:00:00.000Z");
        for text in [
            rfc3339(ms),
            rfc3339_millis(ms),
            "2025-12-07T16:00:00.25+01:00".into(),
        ] {
            assert_eq!(parse_rfc3339(&text), Ok(ms), "{text}");
        }
        assert!(parse_rfc3339("yesterday").is_err());
    }
}

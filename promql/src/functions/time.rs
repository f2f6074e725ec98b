//! Calendar functions of Unix times (`hour`, `day_of_week`, `days_in_month`, ...), in UTC.

use super::*;

/// A [`Family::Date`] function of each value, or of the evaluation time when called
/// without an argument.
pub(super) fn date(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let v = match c.args.args.first() {
        None => vec![Element {
            labels: Arc::default(),
            value: t as f64 / 1000.0,
        }],
        Some(e) => ev.eval_vector(e, t)?,
    };
    Ok(Value::Vector(
        v.into_iter()
            .map(|e| Element {
                labels: ev.drop_name(&e.labels),
                value: date_part(name, e.value),
            })
            .collect(),
    ))
}

/// A calendar field of a Unix time (seconds), in UTC.
pub(super) fn date_part(name: &str, secs: f64) -> f64 {
    let Some(d) = chrono::Utc.timestamp_opt(secs as i64, 0).single() else {
        return f64::NAN;
    };
    f64::from(match name {
        "day_of_month" => d.day(),
        "day_of_week" => d.weekday().num_days_from_sunday(),
        "day_of_year" => d.ordinal(),
        "hour" => d.hour(),
        "minute" => d.minute(),
        "month" => d.month(),
        "year" => return f64::from(d.year()),
        _ => {
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            match chrono::NaiveDate::from_ymd_opt(y, m, 1).and_then(|n| n.pred_opt()) {
                Some(last) => last.day(),
                None => return f64::NAN,
            }
        }
    })
}

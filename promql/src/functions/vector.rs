//! Functions that make, test or unwrap vectors: `absent`, `absent_over_time`, `vector`,
//! `scalar` and `timestamp`.

use super::*;

/// One series with `e`'s equality-matched labels when `empty`, else nothing.
fn absent_result(e: &Expr, empty: bool) -> Value {
    Value::Vector(if empty {
        vec![Element {
            labels: Arc::new(absent_labels(e)),
            value: 1.0,
        }]
    } else {
        Vec::new()
    })
}

/// `absent(v instant-vector)`.
pub(super) fn absent(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let e = arg(c, 0)?;
    Ok(absent_result(e, ev.eval_vector(e, t)?.is_empty()))
}

/// `absent_over_time(v range-vector)`.
pub(super) fn absent_over_time(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let e = arg(c, 0)?;
    Ok(absent_result(e, ev.range_arg(e, t)?.windows.is_empty()))
}

/// `vector(s scalar)`: the scalar as a series without labels.
pub(super) fn vector(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    Ok(Value::Vector(vec![Element {
        labels: Arc::default(),
        value: ev.eval_scalar(arg(c, 0)?, t)?,
    }]))
}

/// `scalar(v instant-vector)`: the one element's value, or NaN.
pub(super) fn scalar(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    Ok(Value::Scalar(if v.len() == 1 {
        v[0].value
    } else {
        f64::NAN
    }))
}

/// `timestamp(v instant-vector)`: a selected sample's own time; for any other expression,
/// the evaluation time.
pub(super) fn timestamp(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let out = match arg(c, 0)? {
        Expr::VectorSelector(vs) => ev
            .instant_samples(vs, t)
            .into_iter()
            .map(|(l, s)| Element {
                labels: ev.drop_name(&l),
                value: s.timestamp_ms as f64 / 1000.0,
            })
            .collect(),
        e => ev
            .eval_vector(e, t)?
            .into_iter()
            .map(|x| Element {
                labels: ev.drop_name(&x.labels),
                value: t as f64 / 1000.0,
            })
            .collect(),
    };
    Ok(Value::Vector(out))
}

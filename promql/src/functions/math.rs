//! Element-wise math on an instant vector (`abs`, `round`, `clamp`, the trigonometric
//! functions, ...) and sorting.

use super::*;

/// A [`Family::Math`] function; its scalar parameters (`round`'s `to_nearest`, `clamp`'s
/// bounds) are evaluated once.
pub(super) fn math(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let p: Vec<f64> = (1..c.args.args.len())
        .map(|i| ev.eval_scalar(arg(c, i)?, t))
        .collect::<Result<_, _>>()?;
    if name == "clamp" && p.get(1) < p.first() {
        return Ok(Value::Vector(Vec::new()));
    }
    let f = |x: f64| -> f64 {
        let p0 = p.first().copied().unwrap_or(f64::NAN);
        match name {
            "abs" => x.abs(),
            "ceil" => x.ceil(),
            "floor" => x.floor(),
            "exp" => x.exp(),
            "sqrt" => x.sqrt(),
            "ln" => x.ln(),
            "log2" => x.log2(),
            "log10" => x.log10(),
            "sgn" if x == 0.0 || x.is_nan() => x,
            "sgn" => x.signum(),
            "acos" => x.acos(),
            "acosh" => x.acosh(),
            "asin" => x.asin(),
            "asinh" => x.asinh(),
            "atan" => x.atan(),
            "atanh" => x.atanh(),
            "cos" => x.cos(),
            "cosh" => x.cosh(),
            "sin" => x.sin(),
            "sinh" => x.sinh(),
            "tan" => x.tan(),
            "tanh" => x.tanh(),
            "deg" => x * 180.0 / std::f64::consts::PI,
            "rad" => x * std::f64::consts::PI / 180.0,
            "round" => {
                let inv = 1.0 / p.first().copied().unwrap_or(1.0);
                (x * inv + 0.5).floor() / inv
            }
            "clamp_min" => x.max(p0),
            "clamp_max" => x.min(p0),
            _ => x.max(p0).min(p.get(1).copied().unwrap_or(f64::NAN)),
        }
    };
    Ok(Value::Vector(
        v.into_iter()
            .map(|e| Element {
                labels: ev.drop_name(&e.labels),
                value: f(e.value),
            })
            .collect(),
    ))
}

/// `sort` and `sort_desc`: by value, NaN last either way.
pub(super) fn sort(ev: &impl Operands, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let mut v = ev.eval_vector(arg(c, 0)?, t)?;
    let desc = name == "sort_desc";
    // NaN last either way.
    v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if desc => b.value.total_cmp(&a.value),
        _ => a.value.total_cmp(&b.value),
    });
    Ok(Value::Vector(v))
}

//! Label functions: `label_replace`, `label_join`, and the check that a result has no
//! two elements with the same labels.

use super::*;

pub(super) fn string_arg(
    ev: &impl Operands,
    c: &Call,
    i: usize,
    t: i64,
) -> Result<String, QueryError> {
    ev.eval_string(arg(c, i)?, t)
}

/// Refuses a result where two elements have the same labels.
pub(super) fn unique(v: Vec<Element>) -> Result<Vec<Element>, QueryError> {
    let mut seen = std::collections::HashSet::new();
    for e in &v {
        if !seen.insert(e.labels.clone()) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".to_owned(),
            ));
        }
    }
    Ok(v)
}

pub(super) fn label_replace(
    ev: &impl Operands,
    c: &Call,
    t: i64,
) -> Result<Vec<Element>, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let dst = string_arg(ev, c, 1, t)?;
    let repl = string_arg(ev, c, 2, t)?;
    let src = string_arg(ev, c, 3, t)?;
    let re_src = string_arg(ev, c, 4, t)?;
    let re = regex::Regex::new(&format!("^(?:{re_src})$")).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {re_src}"
        ))
    })?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| Element {
            labels: ev.derive(node(c), &e.labels, |l| {
                let value = l.get(&src).unwrap_or("");
                let Some(caps) = re.captures(value) else {
                    return l.clone();
                };
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                let mut l = l.clone();
                l.remove(&dst);
                if !res.is_empty() {
                    l.insert(dst.clone(), res);
                }
                l
            }),
            value: e.value,
        })
        .collect();
    unique(out)
}

pub(super) fn label_join(ev: &impl Operands, c: &Call, t: i64) -> Result<Vec<Element>, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let dst = string_arg(ev, c, 1, t)?;
    let sep = string_arg(ev, c, 2, t)?;
    let srcs: Vec<String> = (3..c.args.args.len())
        .map(|i| string_arg(ev, c, i, t))
        .collect::<Result<_, _>>()?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|e| Element {
            labels: ev.derive(node(c), &e.labels, |l| {
                let joined: Vec<&str> = srcs.iter().map(|s| l.get(s).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                let mut l = l.clone();
                l.remove(&dst);
                if !joined.is_empty() {
                    l.insert(dst.clone(), joined);
                }
                l
            }),
            value: e.value,
        })
        .collect();
    unique(out)
}

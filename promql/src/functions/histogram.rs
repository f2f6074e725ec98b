//! `histogram_quantile` over classic `le` buckets.

use super::*;

/// `histogram_quantile` over classic buckets (`le` labels), per label set without `le`.
pub(super) fn histogram_quantile(
    ev: &impl Operands,
    node: usize,
    q: f64,
    v: Vec<Element>,
) -> Vec<Element> {
    let mut order: Vec<Arc<Labels>> = Vec::new();
    let mut groups: std::collections::HashMap<Arc<Labels>, Vec<(f64, f64)>> =
        std::collections::HashMap::new();
    for e in v {
        let Some(le) = e.labels.get("le").and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        let key = ev.derive(node, &e.labels, |l| {
            let mut l = l.clone();
            l.remove(METRIC_NAME);
            l.remove("le");
            l
        });
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((le, e.value));
    }
    order
        .into_iter()
        .filter_map(|l| {
            let b = groups.remove(&l)?;
            Some(Element {
                labels: l,
                value: bucket_quantile(q, b),
            })
        })
        .collect()
}

/// The quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// within the bucket it falls in (Prometheus' `bucketQuantile`).
pub(super) fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|x| x.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one bucket.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, n) in b {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => merged.push((le, n)),
        }
    }
    // Counts must not fall as bounds rise.
    let mut max = f64::NEG_INFINITY;
    for x in &mut merged {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if i == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if i == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[i].0, merged[i].1);
    if i > 0 {
        start = merged[i - 1].0;
        count -= merged[i - 1].1;
        rank -= merged[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

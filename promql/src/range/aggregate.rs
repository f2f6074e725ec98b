//! Aggregations over tracks: each series' values combined into its group's accumulators
//! in one loop per operation, window functions fused with their aggregation, and the
//! general aggregation of tracks.

use super::*;

/// Combines one series' `values` into a group's accumulators (`sum`, `count`, `min`,
/// `max`, `group`), step by step.
#[inline]
pub(super) fn combine_all(op: TokenId, acc: &mut [f64], seen: &mut [bool], values: &[Option<f64>]) {
    // One loop per operation: the choice is made once, not at every step.
    match op {
        T_SUM => combine_with(acc, seen, values, |acc, v, _| acc + v),
        T_COUNT => combine_with(acc, seen, values, |acc, _, _| acc + 1.0),
        T_GROUP => combine_with(acc, seen, values, |_, _, _| 1.0),
        // NaN gives way to any number, as in Prometheus.
        T_MIN => combine_with(acc, seen, values, |acc, v, seen| {
            if seen && !(v < acc || acc.is_nan()) {
                acc
            } else {
                v
            }
        }),
        T_MAX => combine_with(acc, seen, values, |acc, v, seen| {
            if seen && !(v > acc || acc.is_nan()) {
                acc
            } else {
                v
            }
        }),
        _ => combine_with(acc, seen, values, |_, v, _| v),
    }
}

/// [`combine_all`] with `f(accumulated, value, seen before)`.
#[inline(always)]
pub(super) fn combine_with(
    acc: &mut [f64],
    seen: &mut [bool],
    values: &[Option<f64>],
    f: impl Fn(f64, f64, bool) -> f64,
) {
    for ((acc, seen), v) in acc.iter_mut().zip(seen.iter_mut()).zip(values) {
        let Some(v) = *v else { continue };
        *acc = f(*acc, v, *seen);
        *seen = true;
    }
}

/// A group's values from its accumulators.
pub(super) fn combined(acc: &[f64], seen: &[bool]) -> Vec<Option<f64>> {
    acc.iter()
        .zip(seen)
        .map(|(&a, &seen)| seen.then_some(a))
        .collect()
}

/// `op` (`sum`, `count`, `min`, `max` or `group`) of a window function over a range
/// selector, without a result series for each input series: the groups are split over
/// the cores, and each core walks the series of its groups in order, combining their
/// values as they come. So each group combines its values in series order, as
/// [`aggregate`] does. `None` when `inner` is not such a function, when two of its result
/// series would have the same labels (the general path reports that), or when a large
/// input has fewer groups than there are cores (the general path splits it by series).
pub(super) fn fused_aggregate(
    loaded: &Loaded,
    op: TokenId,
    modifier: &Option<promql_parser::parser::LabelModifier>,
    inner: &Expr,
    steps: &Steps,
) -> Option<Vec<Track>> {
    if !matches!(op, T_SUM | T_COUNT | T_MIN | T_MAX | T_GROUP) {
        return None;
    }
    let mut inner = inner;
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    let Expr::Call(c) = inner else { return None };
    let [arg] = c.args.args.as_slice() else {
        return None;
    };
    let Expr::MatrixSelector(ms) = arg.as_ref() else {
        return None;
    };
    if !is_window_function(c.func.name) || ms.vs.at.is_some() {
        return None;
    }
    let w = Window::new(c.func.name, ms, steps);
    let all = series(loaded, &ms.vs);
    let labels: Vec<Arc<Labels>> = all.iter().map(|s| w.labels(s)).collect();
    let mut distinct = std::collections::HashSet::with_capacity(labels.len());
    if !labels.iter().all(|l| distinct.insert(l.as_ref())) {
        return None;
    }
    let (keys, member_of) = groups_of(labels.iter().map(Arc::as_ref), modifier);
    let mut weight = vec![0usize; keys.len()];
    for (s, &g) in all.iter().zip(&member_of) {
        weight[g] += s.runs.len();
    }
    let samples: usize = weight.iter().sum();
    let parts = parts_for(samples);
    if parts > keys.len() {
        return None;
    }
    // Groups in consecutive parts of about equal samples.
    let mut part_of = Vec::with_capacity(keys.len());
    let mut sum = 0;
    for &wt in &weight {
        part_of.push((sum * parts / samples.max(1)).min(parts - 1));
        sum += wt;
    }
    let n = steps.n;
    let run = |part: usize| {
        let mine: Vec<usize> = (0..keys.len()).filter(|&g| part_of[g] == part).collect();
        let mut local = vec![usize::MAX; keys.len()];
        for (k, &g) in mine.iter().enumerate() {
            local[g] = k;
        }
        let mut acc = vec![0.0f64; mine.len() * n];
        let mut seen = vec![false; mine.len() * n];
        // The first series with a value, per group: groups come out in that order.
        let mut first = vec![usize::MAX; mine.len()];
        let (mut x, mut values) = (Scratch::default(), Vec::with_capacity(n));
        for (k, s) in all.iter().enumerate() {
            let l = local[member_of[k]];
            if l == usize::MAX {
                continue;
            }
            w.series_values(s, &mut x, &mut values);
            if !values.iter().any(Option::is_some) {
                continue;
            }
            first[l] = first[l].min(k);
            let span = l * n..(l + 1) * n;
            combine_all(op, &mut acc[span.clone()], &mut seen[span], &values);
        }
        mine.iter()
            .enumerate()
            .filter(|&(l, _)| first[l] != usize::MAX)
            .map(|(l, &g)| {
                let span = l * n..(l + 1) * n;
                (first[l], g, combined(&acc[span.clone()], &seen[span]))
            })
            .collect::<Vec<_>>()
    };
    let mut groups: Vec<(usize, usize, Vec<Option<f64>>)> = if parts <= 1 {
        run(0)
    } else {
        (0..parts).into_par_iter().flat_map_iter(run).collect()
    };
    groups.sort_unstable_by_key(|g| g.0);
    let mut keys: Vec<Option<Labels>> = keys.into_iter().map(Some).collect();
    Some(
        groups
            .into_iter()
            .map(|(_, g, values)| Track {
                labels: Arc::new(keys[g].take().unwrap_or_default()),
                values,
            })
            .collect(),
    )
}

pub(super) fn aggregate(
    op: TokenId,
    modifier: &Option<promql_parser::parser::LabelModifier>,
    inner: Vec<Track>,
    steps: &Steps,
) -> Vec<Track> {
    let (keys, member_of) = groups_of(inner.iter().map(|t| t.labels.as_ref()), modifier);
    let mut groups: Vec<Track> = keys
        .into_iter()
        .map(|key| Track {
            labels: Arc::new(key),
            values: vec![None; steps.n],
        })
        .collect();
    if matches!(op, T_SUM | T_COUNT | T_MIN | T_MAX | T_GROUP) {
        // Plain arrays, group by group; per step, values are combined in series order,
        // as the per-step evaluator does.
        let n = steps.n;
        let mut acc = vec![0.0f64; groups.len() * n];
        let mut seen = vec![false; groups.len() * n];
        for (t, &g) in inner.iter().zip(&member_of) {
            let (acc, seen) = (&mut acc[g * n..(g + 1) * n], &mut seen[g * n..(g + 1) * n]);
            combine_all(op, acc, seen, &t.values);
        }
        for (g, track) in groups.iter_mut().enumerate() {
            track.values = combined(&acc[g * n..(g + 1) * n], &seen[g * n..(g + 1) * n]);
        }
        groups.retain(|g| g.values.iter().any(Option::is_some));
        return groups;
    }
    let mut accs: Vec<Acc> = (0..groups.len()).map(|_| Acc::new()).collect();
    for i in 0..steps.n {
        for a in &mut accs {
            *a = Acc::new();
        }
        for (t, &g) in inner.iter().zip(&member_of) {
            if let Some(v) = t.values[i] {
                accs[g].add(v, false);
            }
        }
        for (g, a) in accs.iter_mut().enumerate() {
            if a.count() > 0.0 {
                groups[g].values[i] = Some(a.value(op, None));
            }
        }
    }
    groups.retain(|g| g.values.iter().any(Option::is_some));
    groups
}

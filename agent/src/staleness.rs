//! Staleness markers, as Prometheus writes them: when a series that a source reported
//! last cycle is missing this cycle (a target went down, a disk was unplugged, a label
//! value changed), one sample with the staleness NaN is sent for it, so queries stop
//! showing it at once instead of after the 5-minute lookback.

use std::collections::HashSet;

use nunchi_model::{Labels, Series, stale_nan};

/// Remembers which series one source reported last cycle.
#[derive(Debug, Default)]
pub struct StalenessTracker {
    previous: HashSet<Labels>,
}

impl StalenessTracker {
    /// Records this cycle's `series` of the source and appends a staleness marker at
    /// `timestamp_ms` to `out` for each series the source no longer reports.
    pub fn update(&mut self, series: &[Series], timestamp_ms: i64, out: &mut Vec<Series>) {
        let current: HashSet<Labels> = series.iter().map(|s| s.labels.clone()).collect();
        for gone in self.previous.difference(&current) {
            out.push(Series::single(gone.clone(), timestamp_ms, stale_nan()));
        }
        self.previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_series_get_one_marker() {
        let a = Series::single(Labels::from_pairs([("__name__", "a")]), 1, 1.0);
        let b = Series::single(Labels::from_pairs([("__name__", "b")]), 1, 1.0);
        let mut t = StalenessTracker::default();
        let mut out = Vec::new();
        t.update(&[a.clone(), b.clone()], 1, &mut out);
        assert!(out.is_empty());
        t.update(std::slice::from_ref(&a), 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels, b.labels);
        assert!(nunchi_model::is_stale_nan(out[0].samples[0].value));
        out.clear();
        t.update(&[a], 3, &mut out);
        assert!(out.is_empty(), "a marker is sent once");
    }
}

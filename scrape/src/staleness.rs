//! Staleness markers, as Prometheus writes them: when a series that a source reported
//! last cycle is missing this cycle (a target went down, a disk was unplugged, a label
//! value changed), one sample with the staleness NaN is sent for it, so queries stop
//! showing it at once instead of after the 5-minute lookback.
//!
//! Series are compared by a 64-bit hash of their labels; in the steady state (the same
//! series every cycle) an update allocates nothing.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault};

use nunchi_model::{Labels, Series, stale_nan};
use rustc_hash::FxBuildHasher;

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<Identity>>;

/// Remembers which series one source reported last cycle.
#[derive(Default)]
pub struct StalenessTracker {
    previous: HashKeyed<Labels>,
    current: HashSet<u64, BuildHasherDefault<Identity>>,
}

impl std::fmt::Debug for StalenessTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StalenessTracker")
            .field("series", &self.previous.len())
            .finish()
    }
}

impl StalenessTracker {
    /// Records this cycle's `series` of the source and appends a staleness marker at
    /// `timestamp_ms` to `out` for each series the source no longer reports.
    pub fn update(&mut self, series: &[Series], timestamp_ms: i64, out: &mut Vec<Series>) {
        self.current.clear();
        let mut changed = false;
        for s in series {
            let h = FxBuildHasher.hash_one(&s.labels);
            self.current.insert(h);
            if let std::collections::hash_map::Entry::Vacant(e) = self.previous.entry(h) {
                changed = true;
                e.insert(s.labels.clone());
            }
        }
        if !changed && self.current.len() == self.previous.len() {
            return;
        }
        let current = &self.current;
        self.previous.retain(|h, labels| {
            let keep = current.contains(h);
            if !keep {
                out.push(Series::single(labels.clone(), timestamp_ms, stale_nan()));
            }
            keep
        });
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
        t.update(std::slice::from_ref(&a), 3, &mut out);
        assert!(out.is_empty(), "a marker is sent once");
        t.update(&[a, b.clone()], 4, &mut out);
        assert!(out.is_empty(), "a series that comes back is tracked again");
    }
}

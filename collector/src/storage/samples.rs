//! A series' samples as a read returns them: sorted runs, each wholly after the one before.
//! Decoded blocks the cache holds are shared with the query that reads them, not copied.

use std::ops::Range;
use std::sync::Arc;

use nunchi_model::Sample;

use super::head::merge_in;

/// One run: part of a shared decoded block, or samples of its own.
#[derive(Debug, Clone)]
enum Run {
    Shared(Arc<[Sample]>, Range<usize>),
    Owned(Vec<Sample>),
}

impl Run {
    fn as_slice(&self) -> &[Sample] {
        match self {
            Run::Shared(d, r) => &d[r.clone()],
            Run::Owned(v) => v,
        }
    }
}

/// Sorted samples, one per timestamp, held as runs none of which is empty.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    runs: Vec<Run>,
    len: usize,
}

impl Samples {
    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The runs, in time order.
    pub fn parts(&self) -> impl ExactSizeIterator<Item = &[Sample]> + Clone {
        self.runs.iter().map(Run::as_slice)
    }

    /// Every sample, in time order.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> + Clone {
        self.parts().flatten()
    }

    /// The samples as one slice, when they are held in at most one run.
    pub fn as_slice(&self) -> Option<&[Sample]> {
        match self.runs.as_slice() {
            [] => Some(&[]),
            [one] => Some(one.as_slice()),
            _ => None,
        }
    }

    /// The samples in one vector.
    pub fn to_vec(&self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(self.len);
        for p in self.parts() {
            out.extend_from_slice(p);
        }
        out
    }

    /// The samples in one vector, without a copy when they are one run of their own.
    pub fn into_vec(mut self) -> Vec<Sample> {
        match self.runs.as_mut_slice() {
            [Run::Owned(v)] => std::mem::take(v),
            _ => self.to_vec(),
        }
    }

    /// Adds `range` of the shared block `block`.
    pub fn push_shared(&mut self, block: &Arc<[Sample]>, range: Range<usize>) {
        let part = &block[range.clone()];
        if part.is_empty() {
            return;
        }
        if self.follows(part) {
            self.len += part.len();
            self.runs.push(Run::Shared(block.clone(), range));
        } else {
            self.merge(part);
        }
    }

    /// Adds `samples` (sorted, one per timestamp). Where a timestamp is already held, the
    /// sample held stays.
    pub fn push(&mut self, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        if self.follows(&samples) {
            self.len += samples.len();
            self.runs.push(Run::Owned(samples));
        } else {
            self.merge(&samples);
        }
    }

    /// Whether `part` starts after every sample held.
    fn follows(&self, part: &[Sample]) -> bool {
        self.runs
            .last()
            .and_then(|r| r.as_slice().last())
            .is_none_or(|l| l.timestamp_ms < part[0].timestamp_ms)
    }

    /// Merges `part` in, as one run.
    fn merge(&mut self, part: &[Sample]) {
        let mut all = std::mem::take(self).into_vec();
        merge_in(&mut all, part);
        self.len = all.len();
        self.runs = vec![Run::Owned(all)];
    }
}

impl From<Vec<Sample>> for Samples {
    fn from(v: Vec<Sample>) -> Samples {
        let mut s = Samples::default();
        s.push(v);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample {
            timestamp_ms: t,
            value: v,
        }
    }

    #[test]
    fn runs_in_order_are_kept_apart_and_overlaps_are_merged() {
        let block: Arc<[Sample]> = (0..10).map(|t| s(t, t as f64)).collect();
        let mut x = Samples::default();
        x.push_shared(&block, 2..5);
        x.push_shared(&block, 5..5);
        x.push(vec![s(7, 70.0), s(8, 80.0)]);
        assert_eq!(x.parts().len(), 2);
        assert_eq!(x.len(), 5);
        assert!(x.as_slice().is_none());
        // Overlapping: one run, the samples held first win on equal timestamps.
        x.push_shared(&block, 6..9);
        assert_eq!(x.parts().len(), 1);
        let got: Vec<(i64, f64)> = x.iter().map(|p| (p.timestamp_ms, p.value)).collect();
        assert_eq!(
            got,
            [(2, 2.0), (3, 3.0), (4, 4.0), (6, 6.0), (7, 70.0), (8, 80.0)]
        );
        assert_eq!(x.len(), 6);
        assert_eq!(x.clone().into_vec(), x.to_vec());
    }
}

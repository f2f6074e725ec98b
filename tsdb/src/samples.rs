//! A series' samples as a read returns them: sorted runs, each wholly after the one before.
//! Decoded blocks the cache holds are shared with the query that reads them, not copied,
//! together with what was learnt of their samples when they were decoded (counter resets,
//! staleness markers, an exact cadence), so that a query need not read every sample to
//! know it.

use std::ops::Range;
use std::sync::Arc;

use nunchi_model::{Sample, is_stale_nan};

use super::head::merge_in;

/// A decoded block: its samples (sorted, one per timestamp) and facts about them found
/// once, when it was decoded.
#[derive(Debug)]
pub struct Block {
    samples: Box<[Sample]>,
    /// Positions of the counter resets: samples below the one before.
    resets: Box<[u32]>,
    /// Whether a staleness marker is among the samples.
    stale: bool,
    /// The samples' cadence, when they keep one exactly.
    cadence: Option<Cadence>,
}

/// Sample times that keep an exact cadence: sample `i` is at `first + i * interval`.
/// Scrapers that align their timestamps to their schedule (Prometheus does, within 2 ms)
/// write such series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The first sample's time, in ms.
    pub first: i64,
    /// Time from one sample to the next, in ms; above zero.
    pub interval: i64,
}

impl Cadence {
    /// The cadence of `samples`, if they keep one: at least two, evenly spaced.
    fn of(samples: &[Sample]) -> Option<Cadence> {
        let [first, second, ..] = samples else {
            return None;
        };
        let interval = second.timestamp_ms - first.timestamp_ms;
        samples
            .windows(2)
            .all(|w| w[1].timestamp_ms - w[0].timestamp_ms == interval)
            .then_some(Cadence {
                first: first.timestamp_ms,
                interval,
            })
    }
}

impl Block {
    /// The block of `samples`, which must be sorted, one per timestamp.
    pub fn new(samples: Vec<Sample>) -> Block {
        let mut resets = Vec::new();
        let mut stale = false;
        for (i, w) in samples.windows(2).enumerate() {
            if w[1].value < w[0].value {
                resets.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
            }
        }
        for s in &samples {
            stale |= is_stale_nan(s.value);
        }
        Block {
            cadence: Cadence::of(&samples),
            samples: samples.into(),
            resets: resets.into(),
            stale,
        }
    }

    /// Its samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Memory it holds, in bytes.
    pub fn weight(&self) -> usize {
        self.samples.len() * size_of::<Sample>() + self.resets.len() * size_of::<u32>() + 64
    }
}

/// One run: part of a shared decoded block, or samples of its own.
#[derive(Debug, Clone)]
enum Run {
    Shared(Arc<Block>, Range<usize>),
    Owned(Vec<Sample>),
}

impl Run {
    fn as_slice(&self) -> &[Sample] {
        match self {
            Run::Shared(b, r) => &b.samples[r.clone()],
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

    /// The runs, in time order, each with its cadence where it is part of a decoded block
    /// that keeps one.
    pub fn cadenced_parts(&self) -> impl ExactSizeIterator<Item = (&[Sample], Option<Cadence>)> {
        self.runs.iter().map(|run| {
            let cadence = match run {
                Run::Shared(b, r) => b.cadence.map(|c| Cadence {
                    first: c.first + r.start as i64 * c.interval,
                    interval: c.interval,
                }),
                Run::Owned(_) => None,
            };
            (run.as_slice(), cadence)
        })
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

    /// The positions of the counter resets (samples below the one before) into `out`, in
    /// order; false, with `out` unfinished, when a staleness marker is among the samples.
    /// Shared blocks answer from what was found when they were decoded.
    pub fn counter_resets(&self, out: &mut Vec<usize>) -> bool {
        out.clear();
        let mut base = 0;
        let mut prev = f64::NAN;
        for run in &self.runs {
            let part = run.as_slice();
            if part[0].value < prev {
                out.push(base);
            }
            match run {
                Run::Shared(b, r) if !b.stale => {
                    // Resets at the run's first sample compare with one outside it.
                    let lo = b.resets.partition_point(|&p| p as usize <= r.start);
                    let hi = b.resets.partition_point(|&p| (p as usize) < r.end);
                    out.extend(
                        b.resets[lo..hi]
                            .iter()
                            .map(|&p| base + p as usize - r.start),
                    );
                }
                _ => {
                    for (i, w) in part.windows(2).enumerate() {
                        if w[1].value < w[0].value {
                            out.push(base + i + 1);
                        }
                    }
                    if part.iter().any(|s| is_stale_nan(s.value)) {
                        return false;
                    }
                }
            }
            prev = part[part.len() - 1].value;
            base += part.len();
        }
        true
    }

    /// Adds `range` of the shared block `block`.
    pub fn push_shared(&mut self, block: &Arc<Block>, range: Range<usize>) {
        let part = &block.samples[range.clone()];
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
        let block = Arc::new(Block::new((0..10).map(|t| s(t, t as f64)).collect()));
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

    #[test]
    fn a_block_knows_its_cadence_and_a_part_of_it_starts_where_it_does() {
        let even = Arc::new(Block::new((0..6).map(|i| s(100 + i * 15, 1.0)).collect()));
        assert_eq!(
            even.cadence,
            Some(Cadence {
                first: 100,
                interval: 15
            })
        );
        let mut x = Samples::default();
        x.push_shared(&even, 2..5);
        x.push(vec![s(500, 1.0), s(515, 2.0)]);
        let parts: Vec<_> = x.cadenced_parts().map(|(p, c)| (p.len(), c)).collect();
        assert_eq!(
            parts,
            [
                (
                    3,
                    Some(Cadence {
                        first: 130,
                        interval: 15
                    })
                ),
                (2, None)
            ]
        );
        let uneven = Block::new(vec![s(0, 1.0), s(15, 1.0), s(31, 1.0)]);
        assert_eq!(uneven.cadence, None);
        assert_eq!(Block::new(vec![s(0, 1.0)]).cadence, None);
    }

    #[test]
    fn counter_resets_are_found_in_blocks_and_between_runs() {
        let values = [5.0, 6.0, 1.0, 2.0, 3.0, 0.5, 4.0, 9.0, 2.0, 3.0];
        let block = Arc::new(Block::new(
            values
                .iter()
                .enumerate()
                .map(|(t, &v)| s(t as i64 * 10, v))
                .collect(),
        ));
        assert_eq!(&*block.resets, [2, 5, 8]);
        // A run starting at one of the block's resets leaves it out: it compares with a
        // sample outside the run.
        let mut x = Samples::default();
        x.push_shared(&block, 2..5);
        x.push(vec![s(45, 1.0), s(47, 0.0)]);
        x.push_shared(&block, 5..10);
        assert_eq!(x.parts().len(), 3);
        let mut out = Vec::new();
        assert!(x.counter_resets(&mut out));
        // At a join (3), within the owned run (4), in the block (8).
        let all = x.to_vec();
        let want: Vec<usize> = (1..all.len())
            .filter(|&i| all[i].value < all[i - 1].value)
            .collect();
        assert_eq!(out, want);
        assert_eq!(out, [3, 4, 8]);
        // A staleness marker anywhere says so.
        let stale = f64::from_bits(nunchi_model::STALE_NAN_BITS);
        let marked = Arc::new(Block::new(vec![s(0, 1.0), s(1, stale)]));
        let mut y = Samples::default();
        y.push_shared(&marked, 0..1);
        assert!(y.counter_resets(&mut out));
        y.push(vec![s(5, stale)]);
        assert!(!y.counter_resets(&mut out));
        let mut z = Samples::default();
        z.push_shared(&marked, 0..2);
        assert!(!z.counter_resets(&mut out));
    }
}

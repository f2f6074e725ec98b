//! The head: the recent, not yet persisted samples of every series, in memory.
//!
//! Each series has one open [`XorChunk`] of in-order samples and a small sorted buffer of
//! out-of-order samples (those older than the chunk's last sample but within the
//! out-of-order window). [`Head::cut`] moves everything appended so far into a
//! [`FlushBatch`] that stays readable until the persister has written it and drops it.
//!
//! Locking: the index sits behind one `RwLock` (read for lookups, write to create a
//! series); series data is striped over mutexes by ref, so writers to different series
//! rarely meet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use nunchi_codec::remote_write::WriteRequest;
use nunchi_model::{Labels, Sample};

use super::chunk::XorChunk;
use super::index::{Index, RefMap, SeriesRef, labels_hash};

const STRIPES: usize = 64;

/// What happened to the samples of one append.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples stored.
    pub appended: u64,
    /// Samples equal to one already stored (same timestamp and value), ignored.
    pub duplicates: u64,
    /// Samples older than the out-of-order window allows, refused.
    pub too_old: u64,
    /// Samples with the timestamp of a stored sample but another value, refused.
    pub conflicting: u64,
    /// Series created.
    pub new_series: u64,
}

#[derive(Default)]
struct MemSeries {
    chunk: XorChunk,
    ooo: Vec<Sample>,
    /// Largest timestamp ever appended (persisted or not); -inf for none.
    max_t: i64,
    /// Smallest timestamp ever appended (persisted or not); +inf for none.
    min_t: i64,
    /// Whether the series row is in the database.
    persisted: bool,
}

/// One series' share of a flush.
pub struct FlushItem {
    /// In-order samples.
    pub chunk: XorChunk,
    /// Out-of-order samples, sorted.
    pub ooo: Vec<Sample>,
    /// Labels, when the series row must still be written.
    pub new_labels: Option<Labels>,
}

impl FlushItem {
    /// All samples, merged in time order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(self.chunk.len() + self.ooo.len());
        self.chunk.read_into(i64::MIN, i64::MAX, &mut out);
        merge_in(&mut out, &self.ooo);
        out
    }
}

/// What [`Head::cut`] took out of the head.
#[derive(Default)]
pub struct FlushBatch {
    /// Per series.
    pub items: RefMap<FlushItem>,
}

/// Merges sorted `extra` into sorted `out`; on equal timestamps the sample already in
/// `out` wins.
pub fn merge_in(out: &mut Vec<Sample>, extra: &[Sample]) {
    if extra.is_empty() {
        return;
    }
    // Common cases: one side wholly before the other (blocks read in time order, head
    // after persisted data).
    match (out.last(), out.first()) {
        (None, _) => {
            out.extend_from_slice(extra);
            return;
        }
        (Some(last), _) if last.timestamp_ms < extra[0].timestamp_ms => {
            out.extend_from_slice(extra);
            return;
        }
        (_, Some(first)) if extra[extra.len() - 1].timestamp_ms < first.timestamp_ms => {
            out.splice(0..0, extra.iter().copied());
            return;
        }
        _ => {}
    }
    let mut merged = Vec::with_capacity(out.len() + extra.len());
    let (mut i, mut j) = (0, 0);
    while i < out.len() || j < extra.len() {
        let take_out =
            j >= extra.len() || (i < out.len() && out[i].timestamp_ms <= extra[j].timestamp_ms);
        if take_out {
            if j < extra.len() && extra[j].timestamp_ms == out[i].timestamp_ms {
                j += 1;
            }
            merged.push(out[i]);
            i += 1;
        } else {
            merged.push(extra[j]);
            j += 1;
        }
    }
    *out = merged;
}

/// The head.
pub struct Head {
    index: RwLock<Index>,
    stripes: Box<[Mutex<Vec<Option<MemSeries>>>]>,
    flushing: RwLock<Vec<Arc<FlushBatch>>>,
    ooo_window_ms: i64,
    samples: AtomicU64,
}

fn stripe_of(r: SeriesRef) -> (usize, usize) {
    ((r as usize) % STRIPES, (r as usize) / STRIPES)
}

impl Head {
    /// An empty head accepting samples up to `ooo_window_ms` older than a series' newest.
    pub fn new(ooo_window_ms: i64) -> Head {
        Head {
            index: RwLock::new(Index::default()),
            stripes: (0..STRIPES).map(|_| Mutex::new(Vec::new())).collect(),
            flushing: RwLock::new(Vec::new()),
            ooo_window_ms,
            samples: AtomicU64::new(0),
        }
    }

    /// Read access to the index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn with_series<R>(&self, r: SeriesRef, f: impl FnOnce(&mut MemSeries) -> R) -> R {
        let (stripe, slot) = stripe_of(r);
        let mut s = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s.len() <= slot {
            s.resize_with(slot + 1, || None);
        }
        let series = s[slot].get_or_insert_with(|| MemSeries {
            max_t: i64::MIN,
            min_t: i64::MAX,
            ..MemSeries::default()
        });
        f(series)
    }

    /// Registers a persisted series (at start-up) with its oldest and newest persisted
    /// timestamps.
    pub fn load_series(&self, r: SeriesRef, labels: &Labels, min_t: i64, max_t: i64) {
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        self.index_mut()
            .insert(r, labels_hash(pairs.iter().copied()), &pairs);
        self.with_series(r, |s| {
            s.persisted = true;
            s.max_t = max_t;
            s.min_t = min_t;
        });
    }

    /// Oldest and newest timestamps a series has had (its data may have gaps, and
    /// retention may since have removed its oldest samples).
    pub fn span(&self, r: SeriesRef) -> Option<(i64, i64)> {
        let (stripe, slot) = stripe_of(r);
        let s = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.get(slot)?
            .as_ref()
            .filter(|x| x.min_t <= x.max_t)
            .map(|x| (x.min_t, x.max_t))
    }

    /// Samples held in memory (appended and not yet flushed).
    pub fn sample_count(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// How many of a request's series (canonical labels) do not exist yet.
    pub fn count_new(&self, req: &WriteRequest) -> u64 {
        let ix = self.index();
        req.timeseries
            .iter()
            .filter(|ts| {
                let hash = labels_hash(
                    ts.labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str())),
                );
                ix.lookup(hash, |f| ts.labels.iter().all(|l| f(&l.name, &l.value)))
                    .is_none()
            })
            .count() as u64
    }

    /// Appends a request whose labels are canonical (sorted, unique, no empty values).
    pub fn append(&self, req: &WriteRequest) -> AppendOutcome {
        self.append_with(req, self.ooo_window_ms)
    }

    /// Appends a request replayed from the write-ahead log: it was accepted once, so no
    /// out-of-order limit applies (samples already persisted come back as duplicates,
    /// which readers merge away).
    pub fn append_replay(&self, req: &WriteRequest) -> AppendOutcome {
        self.append_with(req, i64::MAX)
    }

    fn append_with(&self, req: &WriteRequest, window: i64) -> AppendOutcome {
        let mut out = AppendOutcome::default();
        for ts in &req.timeseries {
            if ts.samples.is_empty() {
                continue;
            }
            let hash = labels_hash(
                ts.labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str())),
            );
            let eq = |f: &mut dyn FnMut(&str, &str) -> bool| {
                ts.labels.iter().all(|l| f(&l.name, &l.value))
            };
            let found = self.index().lookup(hash, eq);
            let r = match found {
                Some(r) => r,
                None => {
                    let mut ix = self.index_mut();
                    match ix.lookup(hash, eq) {
                        Some(r) => r,
                        None => {
                            let r = ix.next_ref();
                            let pairs: Vec<(&str, &str)> = ts
                                .labels
                                .iter()
                                .map(|l| (l.name.as_str(), l.value.as_str()))
                                .collect();
                            ix.insert(r, hash, &pairs);
                            out.new_series += 1;
                            r
                        }
                    }
                }
            };
            self.with_series(r, |s| {
                for x in &ts.samples {
                    append_one(s, x.timestamp, x.value, window, &mut out);
                }
            });
        }
        self.samples.fetch_add(out.appended, Ordering::Relaxed);
        out
    }

    /// Moves every series' unflushed samples into a new [`FlushBatch`], which stays
    /// readable (see [`Head::read`]) until [`Head::release`].
    pub fn cut(&self) -> Arc<FlushBatch> {
        let ix = self.index();
        let mut batch = FlushBatch::default();
        for (stripe_no, stripe) in self.stripes.iter().enumerate() {
            let mut s = stripe.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, series) in s.iter_mut().enumerate() {
                let Some(series) = series else { continue };
                if series.chunk.is_empty() && series.ooo.is_empty() && series.persisted {
                    continue;
                }
                let r = (slot * STRIPES + stripe_no) as SeriesRef;
                let mut chunk = std::mem::take(&mut series.chunk);
                chunk.shrink();
                let new_labels = if series.persisted {
                    None
                } else {
                    series.persisted = true;
                    ix.labels(r)
                };
                batch.items.insert(
                    r,
                    FlushItem {
                        chunk,
                        ooo: std::mem::take(&mut series.ooo),
                        new_labels,
                    },
                );
            }
        }
        drop(ix);
        let batch = Arc::new(batch);
        self.flushing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(batch.clone());
        self.samples.store(0, Ordering::Relaxed);
        batch
    }

    /// Drops a persisted batch from memory.
    pub fn release(&self, batch: &Arc<FlushBatch>) {
        self.flushing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b| !Arc::ptr_eq(b, batch));
    }

    /// Marks a batch as not persisted after a failed write: its new series rows must be
    /// written again by the next flush, which also carries its samples.
    pub fn unpersist(&self, batch: &FlushBatch) {
        for (&r, item) in &batch.items {
            if item.new_labels.is_some() {
                self.with_series(r, |s| s.persisted = false);
            }
        }
    }

    /// Appends this series' in-memory samples with `mint <= t <= maxt` to `out`, sorted.
    pub fn read(&self, r: SeriesRef, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
        let mut extra: Vec<Sample> = Vec::new();
        for b in self
            .flushing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Some(item) = b.items.get(&r) {
                item.chunk.read_into(mint, maxt, &mut extra);
                let from = extra.len();
                extra.extend(
                    item.ooo
                        .iter()
                        .filter(|s| (mint..=maxt).contains(&s.timestamp_ms)),
                );
                if from != extra.len() {
                    extra.sort_by_key(|s| s.timestamp_ms);
                }
            }
        }
        let (stripe, slot) = stripe_of(r);
        let s = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(Some(series)) = s.get(slot) {
            let mut mine = Vec::new();
            series.chunk.read_into(mint, maxt, &mut mine);
            let ooo: Vec<Sample> = series
                .ooo
                .iter()
                .filter(|s| (mint..=maxt).contains(&s.timestamp_ms))
                .copied()
                .collect();
            merge_in(&mut mine, &ooo);
            merge_in(&mut extra, &mine);
        }
        drop(s);
        merge_in(out, &extra);
    }

    /// Forgets series (deleted by retention) entirely.
    pub fn remove(&self, refs: &[SeriesRef]) {
        let mut ix = self.index_mut();
        for &r in refs {
            ix.remove(r);
            let (stripe, slot) = stripe_of(r);
            let mut s = self.stripes[stripe]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(x) = s.get_mut(slot) {
                *x = None;
            }
        }
    }

    /// Series refs whose in-memory data is empty and whose newest sample is older than
    /// `before`: candidates for deletion once their persisted data is gone too.
    pub fn idle_since(&self, before: i64) -> Vec<SeriesRef> {
        let mut out = Vec::new();
        for (stripe_no, stripe) in self.stripes.iter().enumerate() {
            let s = stripe.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, series) in s.iter().enumerate() {
                if let Some(series) = series
                    && series.chunk.is_empty()
                    && series.ooo.is_empty()
                    && series.max_t < before
                {
                    out.push((slot * STRIPES + stripe_no) as SeriesRef);
                }
            }
        }
        out
    }
}

fn append_one(s: &mut MemSeries, t: i64, v: f64, window: i64, out: &mut AppendOutcome) {
    match s.chunk.last_timestamp() {
        Some(last) if t > last => {
            s.chunk.append(t, v);
        }
        None if t > s.max_t => {
            s.chunk.append(t, v);
        }
        _ => {
            if t < s.max_t.saturating_sub(window) {
                out.too_old += 1;
                return;
            }
            let mut existing = Vec::new();
            s.chunk.read_into(t, t, &mut existing);
            if let Some(e) = existing.first().or_else(|| {
                s.ooo
                    .binary_search_by_key(&t, |x| x.timestamp_ms)
                    .ok()
                    .map(|i| &s.ooo[i])
            }) {
                if e.value.to_bits() == v.to_bits() {
                    out.duplicates += 1;
                } else {
                    out.conflicting += 1;
                }
                return;
            }
            let at = s.ooo.partition_point(|x| x.timestamp_ms < t);
            s.ooo.insert(
                at,
                Sample {
                    timestamp_ms: t,
                    value: v,
                },
            );
        }
    }
    s.max_t = s.max_t.max(t);
    s.min_t = s.min_t.min(t);
    out.appended += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use nunchi_codec::remote_write::{Label, Sample as WSample, TimeSeries};

    fn req(name: &str, samples: &[(i64, f64)]) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: name.into(),
                }],
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| WSample { value, timestamp })
                    .collect(),
            }],
            metadata: vec![],
        }
    }

    fn read(h: &Head, r: SeriesRef) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        h.read(r, i64::MIN, i64::MAX, &mut out);
        out.iter().map(|s| (s.timestamp_ms, s.value)).collect()
    }

    #[test]
    fn out_of_order_within_the_window_is_kept_and_merged() {
        let h = Head::new(100);
        let o = h.append(&req("x", &[(1000, 1.0), (1100, 2.0)]));
        assert_eq!((o.appended, o.new_series), (2, 1));
        let o = h.append(&req(
            "x",
            &[(1050, 1.5), (1100, 2.0), (1100, 9.0), (999, 0.0)],
        ));
        assert_eq!(
            (o.appended, o.duplicates, o.conflicting, o.too_old),
            (1, 1, 1, 1)
        );
        assert_eq!(read(&h, 0), [(1000, 1.0), (1050, 1.5), (1100, 2.0)]);
    }

    #[test]
    fn a_cut_batch_stays_readable_until_released() {
        let h = Head::new(0);
        h.append(&req("x", &[(1, 1.0), (2, 2.0)]));
        let batch = h.cut();
        h.append(&req("x", &[(3, 3.0)]));
        assert_eq!(read(&h, 0), [(1, 1.0), (2, 2.0), (3, 3.0)]);
        let item = &batch.items[&0];
        assert!(item.new_labels.is_some());
        assert_eq!(item.samples().len(), 2);
        h.release(&batch);
        assert_eq!(read(&h, 0), [(3, 3.0)]);
        let second = h.cut();
        assert!(second.items[&0].new_labels.is_none());
        // After a flush, older samples are still judged against the newest one.
        let o = h.append(&req("x", &[(2, 5.0)]));
        assert_eq!(o.too_old, 1);
    }
}

//! Reads: the series a set of matchers selects, their raw samples or rollups in a time
//! range (the head, the batch being flushed and the database, under the read lock that
//! keeps a flush from hiding a sample from all three), and the names and values of their
//! labels.

use super::*;

impl Storage {
    /// Refs of the series matching `matchers`.
    pub fn select_refs(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        self.head.index().select(matchers)
    }

    /// Raw samples of the series matching `matchers` in `[mint, maxt]`. Samples older than
    /// the retention period are never returned.
    pub async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        let mint = mint.max(now_ms() - ms(self.opts.retention));
        let refs = self.select_refs(matchers);
        let _r = self.reading.read().await;
        let mut stored = self.db.read_raw(&refs, mint, maxt).await?;
        let ix_labels: Vec<Option<Labels>> = {
            let ix = self.head.index();
            refs.iter().map(|&r| ix.labels(r)).collect()
        };
        let mut out = Vec::with_capacity(refs.len());
        for (&r, labels) in refs.iter().zip(ix_labels) {
            let Some(labels) = labels else { continue };
            let mut samples = stored.remove(&r).unwrap_or_default();
            let mut recent = Vec::new();
            self.head.read(r, mint, maxt, &mut recent);
            samples.push(recent);
            if !samples.is_empty() {
                out.push(SelectedSeries { labels, samples });
            }
        }
        Ok(out)
    }

    /// Rollup points of the series matching `matchers` in `[mint, maxt]`: stored rollups
    /// where compaction has made them, computed from raw samples after that.
    pub async fn select_rollup(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedRollup>, StorageError> {
        let mint = mint.max(now_ms() - ms(self.opts.retention));
        let res = ms(self.opts.rollup_resolution).max(1);
        let refs = self.select_refs(matchers);
        let _r = self.reading.read().await;
        let mut stored = self.db.read_rollup(&refs, mint, maxt).await?;
        let mut raw_from: Vec<(SeriesRef, i64)> = Vec::new();
        for &r in &refs {
            let from = stored
                .get(&r)
                .and_then(|p| p.last())
                .map_or(mint, |p| (p.timestamp_ms.div_euclid(res) + 1) * res);
            raw_from.push((r, from));
        }
        let earliest = raw_from.iter().map(|(_, f)| *f).min().unwrap_or(mint);
        let mut raw = self.db.read_raw(&refs, earliest, maxt).await?;
        let labels: Vec<Option<Labels>> = {
            let ix = self.head.index();
            refs.iter().map(|&r| ix.labels(r)).collect()
        };
        let mut out = Vec::with_capacity(refs.len());
        for ((r, from), labels) in raw_from.into_iter().zip(labels) {
            let Some(labels) = labels else { continue };
            let mut points = stored.remove(&r).unwrap_or_default();
            let mut samples = raw.remove(&r).unwrap_or_default().into_vec();
            self.head.read(r, from, maxt, &mut samples);
            samples.retain(|s| s.timestamp_ms >= from);
            points.extend(block::rollup(&samples, res));
            if !points.is_empty() {
                out.push(SelectedRollup { labels, points });
            }
        }
        Ok(out)
    }

    /// Series matching any of the matcher sets (every series when there are none) whose
    /// time span overlaps `[start, end]`, ascending by ref.
    pub fn series_refs(&self, sets: &[Vec<Matcher>], start: i64, end: i64) -> Vec<SeriesRef> {
        let start = start.max(now_ms() - ms(self.opts.retention));
        let mut refs: Vec<SeriesRef> = if sets.is_empty() {
            self.head.index().all()
        } else {
            let ix = self.head.index();
            sets.iter().flat_map(|m| ix.select(m)).collect()
        };
        refs.sort_unstable();
        refs.dedup();
        refs.retain(|&r| {
            self.head
                .span(r)
                .is_some_and(|(min_t, max_t)| min_t <= end && max_t >= start)
        });
        refs
    }

    /// Label sets of [`Storage::series_refs`], sorted.
    pub fn series(&self, sets: &[Vec<Matcher>], start: i64, end: i64) -> Vec<Labels> {
        let refs = self.series_refs(sets, start, end);
        let ix = self.head.index();
        let mut out: Vec<Labels> = refs.iter().filter_map(|&r| ix.labels(r)).collect();
        out.sort();
        out
    }

    /// Label names used by [`Storage::series_refs`], sorted.
    pub fn label_names(&self, sets: &[Vec<Matcher>], start: i64, end: i64) -> Vec<String> {
        let refs = self.series_refs(sets, start, end);
        let ix = self.head.index();
        let mut names = std::collections::BTreeSet::new();
        for r in refs {
            ix.for_each_pair(r, |n, _| {
                if !names.contains(n) {
                    names.insert(n.to_owned());
                }
            });
        }
        names.into_iter().collect()
    }

    /// Values of label `name` in [`Storage::series_refs`], sorted.
    pub fn label_values(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Vec<String> {
        let refs = self.series_refs(sets, start, end);
        let ix = self.head.index();
        let mut values = std::collections::BTreeSet::new();
        for r in refs {
            ix.for_each_pair(r, |n, v| {
                if n == name && !values.contains(v) {
                    values.insert(v.to_owned());
                }
            });
        }
        values.into_iter().collect()
    }
}

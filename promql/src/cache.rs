//! Range query answers kept for the next time they are asked. A dashboard that refreshes a
//! 24-hour panel every minute asks for the same 1,440 steps again, plus one new one; with
//! the answer kept, only the new steps are computed.
//!
//! Only steps older than the fresh window are kept (newer samples may still be on their
//! way). A kept step stays right as long as no sample at or before it is written or
//! deleted, and the storage tells the cache of both ([`ChangeObserver`]): a write holding a
//! sample older than the fresh window (a backfill, a late out-of-order sample, an agent
//! sending its buffer after an outage) empties the cache, and retention drops the answers
//! that read data it deleted. Queries whose answer at a step depends on more than the data
//! up to that step (an `@` modifier, a negative `offset`) are never kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunchi_model::Labels;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use promql_parser::parser::Expr;

use super::{Engine, Querier, QueryError, QueryResult, data_span};
use nunchi_tsdb::ChangeObserver;

/// Answers kept per query, step and phase (different time ranges over the same query).
const ENTRIES_PER_KEY: usize = 4;

/// Result series: labels and `(timestamp ms, value)` points, sorted by labels.
type Matrix = Vec<(Labels, Vec<(i64, f64)>)>;

/// How the cache is set up.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Most memory the kept answers may take, in bytes; 0 turns the cache off.
    pub max_bytes: u64,
    /// Steps this close to now are always computed, never kept.
    pub fresh_window: Duration,
}

/// What makes two range queries' steps the same computation.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    query: String,
    step: i64,
    /// `start` modulo `step`: the grid the steps lie on.
    phase: i64,
    lookback: i64,
    subquery_step: i64,
    rollup: bool,
}

struct Entry {
    /// The cache generation it was computed in.
    generation: u64,
    /// The oldest sample time its computation read.
    data_from: i64,
    /// First and last step kept.
    start: i64,
    end: i64,
    series: Arc<Matrix>,
    bytes: u64,
    /// When it was last used, on the cache's own clock.
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Vec<Entry>>,
    bytes: u64,
    clock: u64,
}

/// The range query result cache.
pub struct ResultCache {
    opts: CacheOptions,
    inner: Mutex<Inner>,
    /// Bumped whenever kept answers may have become wrong.
    generation: AtomicU64,
    /// Retention has deleted samples before this time.
    deleted_before: AtomicI64,
    lookups: IntCounterVec,
    invalidations: IntCounterVec,
    bytes: IntGauge,
}

impl ResultCache {
    /// A cache with its metrics registered in `registry`.
    pub fn new(opts: CacheOptions, registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "nunchi_query_result_cache_lookups_total",
                "Range queries by what the result cache held for them: hit (every step), partial (older steps; the rest computed), miss, or uncacheable (cache off, nocache, an @ modifier or negative offset, or all steps too recent).",
            ),
            &["result"],
        )?;
        let invalidations = IntCounterVec::new(
            Opts::new(
                "nunchi_query_result_cache_invalidations_total",
                "Times kept range query answers were dropped because older data changed: late_write (a sample older than the fresh window was written) or retention.",
            ),
            &["reason"],
        )?;
        let bytes = IntGauge::new(
            "nunchi_query_result_cache_bytes",
            "Memory held by kept range query answers, estimated.",
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(invalidations.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Arc::new(ResultCache {
            opts,
            inner: Mutex::new(Inner::default()),
            generation: AtomicU64::new(0),
            deleted_before: AtomicI64::new(i64::MIN),
            lookups,
            invalidations,
            bytes,
        }))
    }

    fn fresh_ms(&self) -> i64 {
        self.opts.fresh_window.as_millis().min(i64::MAX as u128) as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Engine::range`], reusing the steps a kept answer holds (none with `bypass`).
    #[allow(clippy::too_many_arguments)]
    pub async fn range<Q: Querier>(
        &self,
        engine: &Engine<'_, Q>,
        expr: &Expr,
        text: &str,
        start: i64,
        end: i64,
        step: i64,
        bypass: bool,
    ) -> Result<QueryResult, QueryError> {
        engine.check_range(expr, start, end, step)?;
        let rollup = engine.uses_rollup(start, end, step);
        let settled = nunchi_tsdb::now_ms().saturating_sub(self.fresh_ms());
        let span = data_span(expr, start, end, &engine.limits);
        let cacheable = match span {
            Some((from, to)) if !bypass && to <= end && start <= settled => Some(from),
            _ => None,
        };
        let Some(data_from) = cacheable.filter(|_| self.opts.max_bytes > 0) else {
            self.lookups.with_label_values(&["uncacheable"]).inc();
            return engine.range_with(expr, start, end, step, rollup).await;
        };
        let key = Key {
            query: text.trim().to_owned(),
            step,
            phase: start.rem_euclid(step),
            lookback: engine.limits.lookback.as_millis() as i64,
            subquery_step: engine.limits.subquery_step.as_millis() as i64,
            rollup,
        };
        // Read before any data: a change after this makes what is computed now unkept.
        let generation = self.generation.load(Ordering::SeqCst);
        let merged = match self.lookup(&key, generation, start) {
            Some((kept_end, kept)) if kept_end >= end => {
                self.lookups.with_label_values(&["hit"]).inc();
                return Ok(QueryResult::Matrix(slice(&kept, start, end)));
            }
            Some((kept_end, kept)) => {
                self.lookups.with_label_values(&["partial"]).inc();
                let fresh = engine
                    .range_with(expr, kept_end + step, end, step, rollup)
                    .await?;
                merge(slice(&kept, start, kept_end), matrix(fresh)?)
            }
            None => {
                self.lookups.with_label_values(&["miss"]).inc();
                matrix(engine.range_with(expr, start, end, step, rollup).await?)?
            }
        };
        let cut = start + (settled.min(end) - start).div_euclid(step) * step;
        let keep = if cut >= end {
            merged.clone()
        } else {
            slice(&merged, start, cut)
        };
        self.store(key, generation, data_from, start, cut, keep);
        Ok(QueryResult::Matrix(merged))
    }

    /// The kept answer for `key` that covers `start` and reaches furthest.
    fn lookup(&self, key: &Key, generation: u64, start: i64) -> Option<(i64, Arc<Matrix>)> {
        let deleted = self.deleted_before.load(Ordering::SeqCst);
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let e = inner
            .entries
            .get_mut(key)?
            .iter_mut()
            .filter(|e| {
                e.generation == generation
                    && e.data_from >= deleted
                    && e.start <= start
                    && start <= e.end
            })
            .max_by_key(|e| e.end)?;
        e.used = clock;
        Some((e.end, e.series.clone()))
    }

    fn store(
        &self,
        key: Key,
        generation: u64,
        data_from: i64,
        start: i64,
        end: i64,
        series: Matrix,
    ) {
        let bytes = estimate(&series);
        if bytes > self.opts.max_bytes {
            return;
        }
        let step = key.step;
        let mut guard = self.lock();
        // Under the lock: an invalidation either ran before (and this answer may be
        // wrong) or will empty the cache after.
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let inner = &mut *guard;
        inner.clock += 1;
        let list = inner.entries.entry(key).or_default();
        let before: u64 = list.iter().map(|e| e.bytes).sum();
        // Drop what the new answer covers, and the earlier position of a window of the same
        // length that has moved on.
        list.retain(|e| {
            let covered = e.start >= start && e.end <= end;
            let slid = e.start < start && e.end <= end && e.end - e.start <= end - start + step;
            !(covered || slid)
        });
        list.push(Entry {
            generation,
            data_from,
            start,
            end,
            series: Arc::new(series),
            bytes,
            used: inner.clock,
        });
        if list.len() > ENTRIES_PER_KEY
            && let Some(i) = (0..list.len()).min_by_key(|&i| list[i].used)
        {
            list.swap_remove(i);
        }
        let after: u64 = list.iter().map(|e| e.bytes).sum();
        inner.bytes = inner.bytes + after - before;
        while inner.bytes > self.opts.max_bytes {
            let Some((k, i)) = inner
                .entries
                .iter()
                .flat_map(|(k, l)| l.iter().enumerate().map(move |(i, e)| (e.used, k, i)))
                .min_by_key(|(used, _, _)| *used)
                .map(|(_, k, i)| (k.clone(), i))
            else {
                break;
            };
            if let Some(l) = inner.entries.get_mut(&k) {
                let e = l.swap_remove(i);
                inner.bytes -= e.bytes;
                if l.is_empty() {
                    inner.entries.remove(&k);
                }
            }
        }
        self.bytes.set(inner.bytes as i64);
    }

    /// Drops every kept answer.
    fn clear(&self, reason: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        if inner.bytes > 0 {
            self.invalidations.with_label_values(&[reason]).inc();
        }
        inner.entries.clear();
        inner.bytes = 0;
        self.bytes.set(0);
    }
}

impl ChangeObserver for ResultCache {
    fn samples_written(&self, oldest_ms: i64) {
        if oldest_ms <= nunchi_tsdb::now_ms().saturating_sub(self.fresh_ms()) {
            self.clear("late_write");
        }
    }

    fn deleted_before(&self, before_ms: i64) {
        self.deleted_before.fetch_max(before_ms, Ordering::SeqCst);
        let mut inner = self.lock();
        let mut dropped = 0;
        for list in inner.entries.values_mut() {
            list.retain(|e| {
                let keep = e.data_from >= before_ms;
                if !keep {
                    dropped += e.bytes;
                }
                keep
            });
        }
        inner.entries.retain(|_, l| !l.is_empty());
        if dropped > 0 {
            self.invalidations.with_label_values(&["retention"]).inc();
        }
        inner.bytes -= dropped;
        self.bytes.set(inner.bytes as i64);
    }
}

fn matrix(r: QueryResult) -> Result<Matrix, QueryError> {
    match r {
        QueryResult::Matrix(m) => Ok(m),
        _ => Err(QueryError::Execution(
            "range query evaluation returned no matrix".to_owned(),
        )),
    }
}

/// The points of `m` in `[start, end]`, without series left with none.
fn slice(m: &Matrix, start: i64, end: i64) -> Matrix {
    m.iter()
        .filter_map(|(l, p)| {
            let a = p.partition_point(|x| x.0 < start);
            let b = p.partition_point(|x| x.0 <= end);
            (a < b).then(|| (l.clone(), p[a..b].to_vec()))
        })
        .collect()
}

/// Joins kept steps with the steps computed after them; both sorted by labels.
fn merge(old: Matrix, new: Matrix) -> Matrix {
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        let next = match (old.peek(), new.peek()) {
            (Some(a), Some(b)) => match a.0.cmp(&b.0) {
                std::cmp::Ordering::Less => old.next(),
                std::cmp::Ordering::Greater => new.next(),
                std::cmp::Ordering::Equal => {
                    let (l, mut p) = old.next().expect("peeked");
                    p.extend(new.next().expect("peeked").1);
                    Some((l, p))
                }
            },
            (Some(_), None) => old.next(),
            (None, Some(_)) => new.next(),
            (None, None) => None,
        };
        match next {
            Some(s) => out.push(s),
            None => return out,
        }
    }
}

/// Memory an answer takes, roughly.
fn estimate(m: &Matrix) -> u64 {
    m.iter()
        .map(|(l, p)| {
            let labels: usize = l.iter().map(|x| x.name.len() + x.value.len() + 48).sum();
            (labels + p.len() * 16 + 64) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(i64, f64)]) -> (Labels, Vec<(i64, f64)>) {
        (Labels::from_pairs([("a", name)]), points.to_vec())
    }

    #[test]
    fn merge_joins_by_labels_in_order() {
        let old = vec![series("a", &[(1, 1.0)]), series("c", &[(1, 3.0)])];
        let new = vec![series("b", &[(2, 2.0)]), series("c", &[(2, 4.0)])];
        assert_eq!(
            merge(old, new),
            vec![
                series("a", &[(1, 1.0)]),
                series("b", &[(2, 2.0)]),
                series("c", &[(1, 3.0), (2, 4.0)]),
            ]
        );
    }

    fn key(query: &str) -> Key {
        Key {
            query: query.to_owned(),
            step: 10,
            phase: 0,
            lookback: 300_000,
            subquery_step: 60_000,
            rollup: false,
        }
    }

    fn answer(start: i64, end: i64) -> Matrix {
        vec![series(
            "a",
            &(start..=end)
                .step_by(10)
                .map(|t| (t, 1.0))
                .collect::<Vec<_>>(),
        )]
    }

    fn cache(max_bytes: u64) -> Arc<ResultCache> {
        ResultCache::new(
            CacheOptions {
                max_bytes,
                fresh_window: Duration::from_secs(300),
            },
            &Registry::new(),
        )
        .expect("cache")
    }

    #[test]
    fn a_window_that_moved_on_replaces_its_earlier_place_but_not_a_longer_one() {
        let c = cache(1 << 20);
        c.store(key("q"), 0, 0, 1000, 2000, answer(1000, 2000));
        c.store(key("q"), 0, 0, 100, 2000, answer(100, 2000));
        c.store(key("q"), 0, 0, 1010, 2010, answer(1010, 2010));
        let kept: Vec<(i64, i64)> = c.lock().entries[&key("q")]
            .iter()
            .map(|e| (e.start, e.end))
            .collect();
        assert_eq!(kept, vec![(100, 2000), (1010, 2010)]);
        // The one reaching furthest is used.
        assert_eq!(c.lookup(&key("q"), 0, 1500).map(|k| k.0), Some(2010));
        assert_eq!(c.lookup(&key("q"), 0, 500).map(|k| k.0), Some(2000));
        assert_eq!(c.lookup(&key("q"), 0, 2500), None);
        // Another generation's answers are not used, nor kept.
        assert_eq!(c.lookup(&key("q"), 1, 1500), None);
        c.store(key("q"), 1, 0, 1000, 2000, answer(1000, 2000));
        assert_eq!(c.lock().entries[&key("q")].len(), 2);
    }

    #[test]
    fn the_least_recently_used_answers_go_first_when_memory_is_full() {
        let one = estimate(&answer(0, 1000));
        let c = cache(one * 2);
        c.store(key("a"), 0, 0, 0, 1000, answer(0, 1000));
        c.store(key("b"), 0, 0, 0, 1000, answer(0, 1000));
        assert!(c.lookup(&key("a"), 0, 0).is_some());
        c.store(key("c"), 0, 0, 0, 1000, answer(0, 1000));
        assert!(c.lookup(&key("a"), 0, 0).is_some());
        assert!(c.lookup(&key("b"), 0, 0).is_none());
        assert!(c.lookup(&key("c"), 0, 0).is_some());
        assert_eq!(c.lock().bytes, one * 2);
    }

    #[test]
    fn retention_drops_answers_that_read_deleted_data_and_late_writes_drop_all() {
        let c = cache(1 << 20);
        c.store(key("old"), 0, 50, 1000, 2000, answer(1000, 2000));
        c.store(key("new"), 0, 500, 1000, 2000, answer(1000, 2000));
        c.deleted_before(100);
        assert!(c.lookup(&key("old"), 0, 1000).is_none());
        assert!(c.lookup(&key("new"), 0, 1000).is_some());
        // A write of samples from now: nothing kept can depend on it.
        c.samples_written(nunchi_tsdb::now_ms());
        assert!(c.lookup(&key("new"), 0, 1000).is_some());
        c.samples_written(nunchi_tsdb::now_ms() - 600_000);
        let generation = c.generation.load(Ordering::SeqCst);
        assert_eq!(generation, 1);
        assert!(c.lookup(&key("new"), generation, 1000).is_none());
        assert_eq!(c.lock().bytes, 0);
    }

    #[test]
    fn slice_drops_series_left_empty() {
        let m = vec![
            series("a", &[(1, 1.0), (2, 2.0), (3, 3.0)]),
            series("b", &[(1, 1.0)]),
        ];
        assert_eq!(slice(&m, 2, 3), vec![series("a", &[(2, 2.0), (3, 3.0)])]);
    }
}

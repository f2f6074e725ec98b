//! Reading chunks back: raw samples through the decoded-block cache, and rollups.
//!
//! Compacted (level-1) blocks carry a `block_id` that every written block gets anew, and the
//! cache holds decoded blocks by series and id. A read lists its chunks from the
//! `chunks_listing` index alone, takes the blocks the cache holds, fetches the others by id
//! and the level-0 chunks by series, and starts over with one statement that fetches every
//! chunk's bytes when the fetch no longer matches the listing (a flush or compaction ran in
//! between). What a read returns per series is sorted, one sample per timestamp, in runs that share
//! the cached blocks.

use std::collections::HashMap;
use std::sync::Arc;

use nunchi_model::Sample;
use rayon::prelude::*;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{IN_LIST, Persist, PersistError, id_list};
use crate::block::{self, RollupPoint};
use crate::index::{RefMap, SeriesRef};
use crate::{Block, Samples};

/// Compacted blocks, decoded, so a time range read again is neither read from the database
/// nor decompressed again (a dashboard reads the same day every refresh). Keyed by series
/// and the block's `block_id`, which every written block gets anew: a block compaction
/// rewrote has another id and is never answered from an older one, and a cached block's
/// bytes are not fetched at all.
pub(super) struct DecodedBlocks {
    cache: moka::sync::Cache<BlockKey, Arc<Block>, rustc_hash::FxBuildHasher>,
}

/// A block: its series and `block_id`.
type BlockKey = (i64, i64);

impl DecodedBlocks {
    pub(super) fn new(max_bytes: u64) -> Option<DecodedBlocks> {
        (max_bytes > 0).then(|| DecodedBlocks {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, d: &Arc<Block>| u32::try_from(d.weight()).unwrap_or(u32::MAX))
                .build_with_hasher(rustc_hash::FxBuildHasher),
        })
    }
}

/// The chunk listing of each series read, kept where this process is the database's only
/// writer (SQLite), so a read lists its chunks from memory. Every write of chunks forgets
/// the listings of the series it touched, once it has committed; a listing read from the
/// database is kept only if no write ended while it was being read.
pub(super) struct Listings {
    state: std::sync::Mutex<ListingState>,
}

#[derive(Default)]
struct ListingState {
    /// Counts the writes that ended.
    generation: u64,
    by_series: HashMap<i64, Arc<[Listed]>>,
    entries: usize,
}

/// One chunk of a listing.
#[derive(Debug, Clone, Copy)]
struct Listed {
    min_t: i64,
    max_t: i64,
    level: i64,
    block: Option<i64>,
}

/// Most chunks the listings hold; past it they are dropped and read again.
const MAX_LISTED: usize = 2_000_000;

impl Listings {
    pub(super) fn new() -> Listings {
        Listings {
            state: std::sync::Mutex::new(ListingState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ListingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the listings of `series` (every series when `None`): their chunks changed.
    pub(super) fn forget(&self, series: Option<&[i64]>) {
        let mut st = self.lock();
        st.generation += 1;
        match series {
            None => {
                st.by_series.clear();
                st.entries = 0;
            }
            Some(ids) => {
                for id in ids {
                    if let Some(l) = st.by_series.remove(id) {
                        st.entries -= l.len();
                    }
                }
            }
        }
    }
}

/// One chunk row of a raw read, in the order the rows were listed.
enum Piece {
    /// A block, decoded (from the cache, or fetched and decoded for it).
    Decoded(Arc<Block>),
    /// A chunk's encoded bytes.
    Encoded(Vec<u8>),
    /// A block not in the cache, to be fetched by its id.
    Missing(i64),
    /// A chunk without an id (level 0), to be fetched with its series' others.
    Unfetched,
}

/// The samples of one series in `[mint, maxt]` from its pieces: decoded blocks are shared,
/// not copied.
fn assemble(
    id: i64,
    pieces: &[Piece],
    mint: i64,
    maxt: i64,
) -> Result<(SeriesRef, Samples), PersistError> {
    // Most blocks lie wholly inside the range; their ends alone say so.
    let in_range = |d: &[Sample]| {
        let lo = match d.first() {
            Some(f) if f.timestamp_ms < mint => d.partition_point(|s| s.timestamp_ms < mint),
            _ => 0,
        };
        let hi = match d.last() {
            Some(l) if l.timestamp_ms > maxt => d.partition_point(|s| s.timestamp_ms <= maxt),
            _ => d.len(),
        };
        lo..hi.max(lo)
    };
    let mut out = Samples::default();
    for p in pieces {
        match p {
            Piece::Decoded(d) => out.push_shared(d, in_range(d.samples())),
            Piece::Encoded(data) => {
                let mut decoded = Vec::new();
                block::decode_raw(data, mint, maxt, &mut decoded)
                    .map_err(|source| PersistError::Block { series: id, source })?;
                out.push(decoded);
            }
            // `Persist::fill` leaves none of these.
            Piece::Missing(_) | Piece::Unfetched => {}
        }
    }
    Ok((id as SeriesRef, out))
}

impl Persist {
    /// Calls `f(row)` for each chunk of `refs` that overlaps `[mint, maxt]` and satisfies
    /// `filter`, selecting `series_id` and then `columns`, in `IN (...)` batches, in order of
    /// series and time.
    async fn for_each_row(
        &self,
        refs: &[SeriesRef],
        columns: &str,
        filter: &str,
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(AnyRow) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        // Parts of the list are read at once, on as many connections as there are cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let size = refs.len().div_ceil(cores).clamp(1, IN_LIST);
        let reads = refs.chunks(size).map(|part| {
            let sql = format!(
                "SELECT series_id, {columns} FROM chunks WHERE series_id IN ({}){filter} AND max_t >= $1 AND min_t <= $2 ORDER BY series_id, min_t",
                id_list(part)
            );
            async move {
                sqlx::query(&sql)
                    .bind(mint)
                    .bind(maxt)
                    .fetch_all(&self.pool)
                    .await
            }
        });
        for rows in futures_util::future::try_join_all(reads).await? {
            for row in rows {
                f(row)?;
            }
        }
        Ok(())
    }

    /// Raw samples of `refs` in `[mint, maxt]`, sorted, one per timestamp.
    ///
    /// With the block cache on, chunks are first listed from an index alone (no chunk
    /// bytes are read): blocks the cache holds are taken from it, the others are then
    /// fetched by id, and level-0 chunks by series. When what is fetched no longer matches
    /// the listing (a flush or compaction ran in between), the read starts over and fetches
    /// every chunk's bytes in one statement.
    pub async fn read_raw(
        &self,
        refs: &[SeriesRef],
        mint: i64,
        maxt: i64,
    ) -> Result<RefMap<Samples>, PersistError> {
        let began = std::time::Instant::now();
        let mut listed = None;
        if self.decoded.is_some() {
            let l = self.list_chunks(refs, mint, maxt, false).await?;
            listed = self.fill(l, mint, maxt).await?;
        }
        let listed = match listed {
            Some(l) => l,
            None => self.list_chunks(refs, mint, maxt, true).await?,
        };
        tracing::debug!(
            chunks = listed.iter().map(|(_, p)| p.len()).sum::<usize>(),
            read_ms = began.elapsed().as_secs_f64() * 1000.0,
            "raw chunks read"
        );
        // Series by series, on every core.
        let assemble = |(id, pieces): &(i64, Vec<Piece>)| assemble(*id, pieces, mint, maxt);
        let series: Vec<(SeriesRef, Samples)> = if listed.len() < 64 {
            listed.iter().map(assemble).collect::<Result<_, _>>()?
        } else {
            listed.par_iter().map(assemble).collect::<Result<_, _>>()?
        };
        Ok(series.into_iter().collect())
    }

    /// The chunks of `refs` overlapping `[mint, maxt]`, per series in time order: with
    /// `with_data`, each with its bytes; otherwise blocks with an id come from the cache or
    /// are left [`Piece::Missing`], and the rest [`Piece::Unfetched`].
    async fn list_chunks(
        &self,
        refs: &[SeriesRef],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<(i64, Vec<Piece>)>, PersistError> {
        if !with_data && let Some(listings) = &self.listings {
            return self.list_kept(listings, refs, mint, maxt).await;
        }
        // Without the bytes, the listing is read from the chunks_listing index alone.
        let columns = if with_data {
            "level, block_id, data"
        } else {
            "level, block_id"
        };
        let mut out: Vec<(i64, Vec<Piece>)> = Vec::new();
        self.for_each_row(refs, columns, "", mint, maxt, |row| {
            let id: i64 = row.try_get(0)?;
            let level: i64 = row.try_get(1)?;
            let block: Option<i64> = row.try_get(2)?;
            let piece = if with_data {
                Piece::Encoded(row.try_get(3)?)
            } else {
                match (level, block) {
                    (1.., Some(b)) => {
                        match self.decoded.as_ref().and_then(|c| c.cache.get(&(id, b))) {
                            Some(d) => Piece::Decoded(d),
                            None => Piece::Missing(b),
                        }
                    }
                    _ => Piece::Unfetched,
                }
            };
            match out.last_mut() {
                Some((last, pieces)) if *last == id => pieces.push(piece),
                _ => out.push((id, vec![piece])),
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// [`Persist::list_chunks`] without the bytes, from the kept listings: those of series
    /// not kept yet are read whole (every chunk, whatever its time) and kept.
    async fn list_kept(
        &self,
        listings: &Listings,
        refs: &[SeriesRef],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, Vec<Piece>)>, PersistError> {
        let (generation, mut kept, absent) = {
            let st = listings.lock();
            let mut kept = Vec::with_capacity(refs.len());
            let mut absent = Vec::new();
            for &r in refs {
                match st.by_series.get(&i64::from(r)) {
                    Some(l) => kept.push((i64::from(r), l.clone())),
                    None => absent.push(r),
                }
            }
            (st.generation, kept, absent)
        };
        if !absent.is_empty() {
            let mut read: Vec<(i64, Vec<Listed>)> =
                absent.iter().map(|&r| (i64::from(r), Vec::new())).collect();
            let at: HashMap<i64, usize> = read
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (*id, i))
                .collect();
            self.for_each_row(
                &absent,
                "min_t, max_t, level, block_id",
                "",
                i64::MIN,
                i64::MAX,
                |row| {
                    let id: i64 = row.try_get(0)?;
                    if let Some(&i) = at.get(&id) {
                        read[i].1.push(Listed {
                            min_t: row.try_get(1)?,
                            max_t: row.try_get(2)?,
                            level: row.try_get(3)?,
                            block: row.try_get(4)?,
                        });
                    }
                    Ok(())
                },
            )
            .await?;
            let read: Vec<(i64, Arc<[Listed]>)> =
                read.into_iter().map(|(id, l)| (id, l.into())).collect();
            let mut st = listings.lock();
            if st.generation == generation {
                if st.entries > MAX_LISTED {
                    st.by_series.clear();
                    st.entries = 0;
                }
                for (id, l) in &read {
                    st.entries += l.len();
                    if let Some(old) = st.by_series.insert(*id, l.clone()) {
                        st.entries -= old.len();
                    }
                }
            }
            drop(st);
            kept.extend(read);
        }
        let cache = self.decoded.as_ref();
        let pieces = |(id, listing): (i64, Arc<[Listed]>)| {
            let pieces: Vec<Piece> = listing
                .iter()
                .filter(|c| c.max_t >= mint && c.min_t <= maxt)
                .map(|c| match (c.level, c.block) {
                    (1.., Some(b)) => match cache.and_then(|d| d.cache.get(&(id, b))) {
                        Some(d) => Piece::Decoded(d),
                        None => Piece::Missing(b),
                    },
                    _ => Piece::Unfetched,
                })
                .collect();
            (!pieces.is_empty()).then_some((id, pieces))
        };
        // A dashboard's day of 1,000 series is 5,000 cache lookups: on every core.
        Ok(if kept.len() < 64 {
            kept.into_iter().filter_map(pieces).collect()
        } else {
            kept.into_par_iter().filter_map(pieces).collect()
        })
    }

    /// Fetches what `listed` lacks: blocks by id (decoded and cached), other chunks by
    /// series. `None` when the database no longer holds what was listed.
    async fn fill(
        &self,
        mut listed: Vec<(i64, Vec<Piece>)>,
        mint: i64,
        maxt: i64,
    ) -> Result<Option<Vec<(i64, Vec<Piece>)>>, PersistError> {
        let missing: Vec<(i64, i64)> = listed
            .iter()
            .flat_map(|(id, pieces)| {
                pieces.iter().filter_map(move |p| match p {
                    Piece::Missing(b) => Some((*id, *b)),
                    _ => None,
                })
            })
            .collect();
        let decoded = self.fetch_blocks(&missing).await?;
        let unfetched: Vec<SeriesRef> = listed
            .iter()
            .filter(|(_, pieces)| pieces.iter().any(|p| matches!(p, Piece::Unfetched)))
            .map(|(id, _)| *id as SeriesRef)
            .collect();
        let mut chunks: HashMap<i64, Vec<Vec<u8>>> = HashMap::new();
        if !unfetched.is_empty() {
            self.for_each_row(
                &unfetched,
                "data",
                " AND (level = 0 OR block_id IS NULL)",
                mint,
                maxt,
                |row| {
                    chunks
                        .entry(row.try_get(0)?)
                        .or_default()
                        .push(row.try_get(1)?);
                    Ok(())
                },
            )
            .await?;
        }
        for (id, pieces) in &mut listed {
            let mut encoded = chunks.remove(id).unwrap_or_default().into_iter();
            for p in pieces.iter_mut() {
                match *p {
                    Piece::Missing(b) => match decoded.get(&(*id, b)) {
                        Some(d) => *p = Piece::Decoded(d.clone()),
                        None => return Ok(None),
                    },
                    Piece::Unfetched => match encoded.next() {
                        Some(data) => *p = Piece::Encoded(data),
                        None => return Ok(None),
                    },
                    _ => {}
                }
            }
            if encoded.next().is_some() {
                return Ok(None);
            }
        }
        Ok(Some(listed))
    }

    /// The blocks `(series, block_id)` of `wanted` that are still stored, decoded (on every
    /// core) and put in the cache.
    async fn fetch_blocks(
        &self,
        wanted: &[(i64, i64)],
    ) -> Result<HashMap<BlockKey, Arc<Block>>, PersistError> {
        let reads = wanted.chunks(IN_LIST).map(|part| {
            let mut series: Vec<SeriesRef> = part.iter().map(|(s, _)| *s as SeriesRef).collect();
            series.dedup();
            let blocks: Vec<String> = part.iter().map(|(_, b)| b.to_string()).collect();
            let sql = format!(
                "SELECT series_id, block_id, data FROM chunks WHERE series_id IN ({}) AND block_id IN ({})",
                id_list(&series),
                blocks.join(",")
            );
            async move { sqlx::query(&sql).fetch_all(&self.pool).await }
        });
        let mut fetched: Vec<(i64, i64, Vec<u8>)> = Vec::with_capacity(wanted.len());
        for rows in futures_util::future::try_join_all(reads).await? {
            for row in rows {
                fetched.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
        }
        let decoded: Vec<(BlockKey, Arc<Block>)> = fetched
            .par_iter()
            .map(|(id, b, data)| {
                let mut samples = Vec::new();
                block::decode_raw(data, i64::MIN, i64::MAX, &mut samples).map_err(|source| {
                    PersistError::Block {
                        series: *id,
                        source,
                    }
                })?;
                Ok(((*id, *b), Arc::new(Block::new(samples))))
            })
            .collect::<Result<_, PersistError>>()?;
        if let Some(cache) = &self.decoded {
            for (key, d) in &decoded {
                cache.cache.insert(*key, d.clone());
            }
        }
        Ok(decoded.into_iter().collect())
    }

    /// Rollup points of `refs` in `[mint, maxt]`, sorted.
    pub async fn read_rollup(
        &self,
        refs: &[SeriesRef],
        mint: i64,
        maxt: i64,
    ) -> Result<RefMap<Vec<RollupPoint>>, PersistError> {
        let mut out: RefMap<Vec<RollupPoint>> = RefMap::default();
        self.for_each_row(
            refs,
            "rollup",
            " AND level = 1 AND rollup IS NOT NULL",
            mint,
            maxt,
            |row| {
                let id: i64 = row.try_get(0)?;
                let data: Vec<u8> = row.try_get(1)?;
                block::decode_rollup(&data, mint, maxt, out.entry(id as SeriesRef).or_default())
                    .map_err(|source| PersistError::Block { series: id, source })
            },
        )
        .await?;
        Ok(out)
    }
}

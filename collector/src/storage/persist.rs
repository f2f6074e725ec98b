//! Persisted series and chunks, through sqlx: a SQLite file under the data directory by
//! default, PostgreSQL by URL. Every statement is written once (`$n` placeholders work in
//! both through sqlx's `Any` driver).
//!
//! Durability: a flush is one transaction; until it commits, its samples stay in the head
//! and in the write-ahead log. Level-0 rows may overlap (a flush repeated after a crash);
//! readers and compaction merge them, keeping one sample per timestamp.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nunchi_model::{Label, Labels, Sample};
use rayon::prelude::*;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::block::{self, RollupPoint};
use super::head::{FlushBatch, merge_in};
use super::index::{RefMap, SeriesRef};

/// Rows per multi-row `INSERT`.
const INSERT_ROWS: usize = 40;
/// Series per `IN (...)` list.
const IN_LIST: usize = 500;

/// Persistence failures.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A statement or connection failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored chunk does not decode.
    #[error("series {series}: {source}")]
    Block {
        /// The series.
        series: i64,
        /// Why.
        #[source]
        source: block::BlockError,
    },
    /// A stored label set (or the symbol table, -1) does not parse.
    #[error("series {0}: stored labels are corrupt")]
    Labels(i64),
}

/// The database.
pub struct Persist {
    pool: AnyPool,
    sqlite: bool,
    symbols: tokio::sync::Mutex<Symbols>,
    decoded: Option<DecodedBlocks>,
}

/// Compacted blocks, decoded, so a time range read again is neither read from the database
/// nor decompressed again (a dashboard reads the same day every refresh). Keyed by series
/// and the block's `block_id`, which every written block gets anew: a block compaction
/// rewrote has another id and is never answered from an older one, and a cached block's
/// bytes are not fetched at all.
struct DecodedBlocks {
    cache: moka::sync::Cache<BlockKey, Arc<[Sample]>>,
}

/// A block: its series and `block_id`.
type BlockKey = (i64, i64);

impl DecodedBlocks {
    fn new(max_bytes: u64) -> Option<DecodedBlocks> {
        (max_bytes > 0).then(|| DecodedBlocks {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, d: &Arc<[Sample]>| {
                    u32::try_from(d.len() * size_of::<Sample>() + 64).unwrap_or(u32::MAX)
                })
                .build(),
        })
    }
}

/// One chunk row of a raw read, in the order the rows were listed.
enum Piece {
    /// A block's samples, decoded (from the cache, or fetched and decoded for it).
    Decoded(Arc<[Sample]>),
    /// A chunk's encoded bytes.
    Encoded(Vec<u8>),
    /// A block not in the cache, to be fetched by its id.
    Missing(i64),
    /// A chunk without an id (level 0), to be fetched with its series' others.
    Unfetched,
}

/// The symbol table: every label name and value persisted, by id.
#[derive(Default)]
struct Symbols {
    ids: HashMap<String, i64>,
    strings: Vec<String>,
}

impl Symbols {
    /// Encodes labels as varint symbol ids, adding unknown strings to `fresh` (ids are
    /// handed out past the committed ones and those already in `fresh`).
    fn encode(&self, l: &Labels, fresh: &mut Vec<(i64, String)>, out: &mut Vec<u8>) {
        out.clear();
        for s in l.iter().flat_map(|l| [l.name.as_str(), l.value.as_str()]) {
            let id = match self.ids.get(s) {
                Some(&id) => id,
                None => match fresh.iter().find(|(_, f)| f == s) {
                    Some((id, _)) => *id,
                    None => {
                        let id = (self.strings.len() + fresh.len()) as i64;
                        fresh.push((id, s.to_owned()));
                        id
                    }
                },
            };
            prost::encoding::encode_varint(id as u64, out);
        }
    }

    fn decode(&self, series: i64, mut bytes: &[u8]) -> Result<Labels, PersistError> {
        let mut strings = Vec::new();
        while !bytes.is_empty() {
            let id = prost::encoding::decode_varint(&mut bytes)
                .map_err(|_| PersistError::Labels(series))?;
            strings.push(
                self.strings
                    .get(id as usize)
                    .cloned()
                    .ok_or(PersistError::Labels(series))?,
            );
        }
        if strings.len() % 2 != 0 {
            return Err(PersistError::Labels(series));
        }
        let mut it = strings.into_iter();
        let mut v = Vec::new();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            v.push(Label { name, value });
        }
        Ok(Labels::from_sorted(v))
    }

    fn commit(&mut self, fresh: Vec<(i64, String)>) {
        for (id, s) in fresh {
            debug_assert_eq!(id as usize, self.strings.len());
            self.ids.insert(s.clone(), id);
            self.strings.push(s);
        }
    }
}

fn id_list(refs: &[SeriesRef]) -> String {
    let mut s = String::with_capacity(refs.len() * 7);
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&r.to_string());
    }
    s
}

fn placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push_str(&format!("${}", r * cols + c + 1));
        }
        s.push(')');
    }
    s
}

/// One chunk row about to be written.
struct ChunkRow {
    series: i64,
    level: i64,
    samples: Vec<Sample>,
    data: Vec<u8>,
    rollup: Option<Vec<u8>>,
}

impl Persist {
    /// Connects and migrates; up to `block_cache_bytes` of decoded blocks are kept.
    pub async fn connect(url: &str, block_cache_bytes: u64) -> Result<Persist, PersistError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(PersistError::UnsupportedUrl(url.to_owned()));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA auto_vacuum=INCREMENTAL",
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=NORMAL",
                            "PRAGMA busy_timeout=10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if sqlite {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        Ok(Persist {
            pool,
            sqlite,
            symbols: tokio::sync::Mutex::new(Symbols::default()),
            decoded: DecodedBlocks::new(block_cache_bytes),
        })
    }

    /// Every persisted series with the oldest and newest timestamps of its raw chunks
    /// (loads the symbol table first).
    pub async fn load_series(&self) -> Result<Vec<(SeriesRef, Labels, i64, i64)>, PersistError> {
        let mut symbols = self.symbols.lock().await;
        let rows = sqlx::query("SELECT id, value FROM symbols ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut fresh = Vec::with_capacity(rows.len());
        for r in &rows {
            fresh.push((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?));
        }
        if fresh.iter().enumerate().any(|(i, (id, _))| *id != i as i64) {
            return Err(PersistError::Labels(-1));
        }
        symbols.commit(fresh);
        let rows = sqlx::query(
            "SELECT s.id, s.labels, COALESCE((SELECT MIN(c.min_t) FROM chunks c WHERE c.series_id = s.id), 9223372036854775807), COALESCE((SELECT MAX(c.max_t) FROM chunks c WHERE c.series_id = s.id), -9223372036854775807) FROM series s",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let labels: Vec<u8> = r.try_get(1)?;
                let min_t: i64 = r.try_get(2)?;
                let max_t: i64 = r.try_get(3)?;
                Ok((id as SeriesRef, symbols.decode(id, &labels)?, min_t, max_t))
            })
            .collect()
    }

    /// Writes a flushed batch in one transaction: new series rows and one level-0 chunk per
    /// series. Returns the number of samples written.
    pub async fn write_flush(&self, batch: &FlushBatch) -> Result<u64, PersistError> {
        let mut symbols = self.symbols.lock().await;
        let mut fresh: Vec<(i64, String)> = Vec::new();
        let mut buf = Vec::new();
        let new: Vec<(i64, Vec<u8>)> = batch
            .items
            .iter()
            .filter_map(|(&r, item)| {
                symbols.encode(item.new_labels.as_ref()?, &mut fresh, &mut buf);
                Some((i64::from(r), buf.clone()))
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        for part in fresh.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO symbols (id, value) VALUES {}",
                placeholders(part.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (id, value) in part {
                q = q.bind(*id).bind(value.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        for part in new.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO series (id, labels) VALUES {} ON CONFLICT (id) DO NOTHING",
                placeholders(part.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (id, labels) in part {
                q = q.bind(*id).bind(labels.clone());
            }
            q.execute(&mut *tx).await?;
        }
        let mut written = 0u64;
        let mut rows = Vec::with_capacity(INSERT_ROWS);
        for (&r, item) in &batch.items {
            let samples = item.samples();
            if samples.is_empty() {
                continue;
            }
            written += samples.len() as u64;
            let data = block::encode_raw(&samples);
            rows.push(ChunkRow {
                series: i64::from(r),
                level: 0,
                samples,
                data,
                rollup: None,
            });
            if rows.len() == INSERT_ROWS {
                insert_chunks(&mut tx, &rows).await?;
                rows.clear();
            }
        }
        insert_chunks(&mut tx, &rows).await?;
        tx.commit().await?;
        symbols.commit(fresh);
        Ok(written)
    }

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
    ) -> Result<RefMap<Vec<Sample>>, PersistError> {
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
        // Series by series, on every core, each copied once into a vector of its size.
        let assemble = |(id, pieces): &(i64, Vec<Piece>)| -> Result<(SeriesRef, Vec<Sample>), PersistError> {
            let in_range = |d: &[Sample]| {
                let lo = d.partition_point(|s| s.timestamp_ms < mint);
                let hi = d.partition_point(|s| s.timestamp_ms <= maxt);
                lo..hi.max(lo)
            };
            let size: usize = pieces
                .iter()
                .map(|p| match p {
                    Piece::Decoded(d) => in_range(d).len(),
                    _ => 0,
                })
                .sum();
            let mut out = Vec::with_capacity(size);
            let mut scratch = Vec::new();
            for p in pieces {
                match p {
                    Piece::Decoded(d) => merge_in(&mut out, &d[in_range(d)]),
                    Piece::Encoded(data) => {
                        scratch.clear();
                        block::decode_raw(data, mint, maxt, &mut scratch).map_err(|source| {
                            PersistError::Block {
                                series: *id,
                                source,
                            }
                        })?;
                        merge_in(&mut out, &scratch);
                    }
                    // `fill` left none of these.
                    Piece::Missing(_) | Piece::Unfetched => {}
                }
            }
            Ok((*id as SeriesRef, out))
        };
        let series: Vec<(SeriesRef, Vec<Sample>)> = if listed.len() < 64 {
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
                    chunks.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
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
    ) -> Result<HashMap<BlockKey, Arc<[Sample]>>, PersistError> {
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
        let decoded: Vec<(BlockKey, Arc<[Sample]>)> = fetched
            .par_iter()
            .map(|(id, b, data)| {
                let mut samples = Vec::new();
                block::decode_raw(data, i64::MIN, i64::MAX, &mut samples).map_err(|source| {
                    PersistError::Block {
                        series: *id,
                        source,
                    }
                })?;
                Ok(((*id, *b), Arc::from(samples)))
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

    /// Merges level-0 rows whose samples all lie before `cutoff` into one level-1 block per
    /// series and `span` window (re-merging a window's existing block). A block whose window
    /// ended before `complete_before` gets its rollup at `resolution`, once; the current
    /// window's block has none (queries summarise its raw samples), so it is not rewritten
    /// with a fresh rollup on every compaction. Returns the number of blocks written.
    pub async fn compact(
        &self,
        cutoff: i64,
        complete_before: i64,
        span: i64,
        resolution: i64,
    ) -> Result<u64, PersistError> {
        let complete = |w: i64| (w + 1).saturating_mul(span) <= complete_before;
        let ids: Vec<i64> =
            sqlx::query("SELECT DISTINCT series_id FROM chunks WHERE (level = 0 AND max_t < $1) OR (level = 1 AND rollup IS NULL AND max_t < $2)")
                .bind(cutoff)
                .bind(complete_before.div_euclid(span).saturating_mul(span))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        let mut blocks = 0u64;
        for part in ids.chunks(IN_LIST) {
            let refs: Vec<SeriesRef> = part.iter().map(|&i| i as SeriesRef).collect();
            let list = id_list(&refs);
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(&format!(
                "SELECT series_id, level, min_t, max_t, data, CASE WHEN rollup IS NULL THEN 0 ELSE 1 END FROM chunks WHERE series_id IN ({list}) ORDER BY series_id, level"
            ))
            .fetch_all(&mut *tx)
            .await?;
            // Per series: level-0 samples before the cutoff, and existing level-1 blocks.
            let mut fresh: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
            let mut replaced: Vec<(i64, i64)> = Vec::new();
            let mut old_blocks: BTreeMap<(i64, i64), Vec<u8>> = BTreeMap::new();
            for row in &rows {
                let id: i64 = row.try_get(0)?;
                let level: i64 = row.try_get(1)?;
                let min_t: i64 = row.try_get(2)?;
                let max_t: i64 = row.try_get(3)?;
                let data: Vec<u8> = row.try_get(4)?;
                let has_rollup: i64 = row.try_get(5)?;
                let w = min_t.div_euclid(span);
                if level == 0 && max_t < cutoff {
                    block::decode_raw(&data, i64::MIN, i64::MAX, fresh.entry(id).or_default())
                        .map_err(|source| PersistError::Block { series: id, source })?;
                } else if level == 1 && has_rollup == 0 && complete(w) {
                    // A block of a window that has since closed: rewritten with its rollup.
                    block::decode_raw(&data, i64::MIN, i64::MAX, fresh.entry(id).or_default())
                        .map_err(|source| PersistError::Block { series: id, source })?;
                    replaced.push((id, w));
                } else if level == 1 {
                    old_blocks.insert((id, w), data);
                }
            }
            let mut out_rows: Vec<ChunkRow> = Vec::new();
            for (id, mut samples) in fresh {
                samples.sort_by_key(|s| s.timestamp_ms);
                samples.dedup_by_key(|s| s.timestamp_ms);
                let mut start = 0;
                while start < samples.len() {
                    let w = samples[start].timestamp_ms.div_euclid(span);
                    let end = start
                        + samples[start..]
                            .partition_point(|s| s.timestamp_ms.div_euclid(span) == w);
                    let mut merged = samples[start..end].to_vec();
                    if let Some(old) = old_blocks.get(&(id, w)) {
                        let mut prev = Vec::new();
                        block::decode_raw(old, i64::MIN, i64::MAX, &mut prev)
                            .map_err(|source| PersistError::Block { series: id, source })?;
                        merge_in(&mut merged, &prev);
                        replaced.push((id, w));
                    }
                    let data = block::encode_raw(&merged);
                    let rollup = complete(w)
                        .then(|| block::encode_rollup(&block::rollup(&merged, resolution)));
                    out_rows.push(ChunkRow {
                        series: id,
                        level: 1,
                        samples: merged,
                        data,
                        rollup,
                    });
                    start = end;
                }
            }
            for (id, w) in &replaced {
                sqlx::query("DELETE FROM chunks WHERE series_id = $1 AND level = 1 AND min_t >= $2 AND min_t < $3")
                    .bind(*id)
                    .bind(w * span)
                    .bind((w + 1) * span)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&format!(
                "DELETE FROM chunks WHERE series_id IN ({list}) AND level = 0 AND max_t < $1"
            ))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            for part in out_rows.chunks(INSERT_ROWS) {
                insert_chunks(&mut tx, part).await?;
            }
            tx.commit().await?;
            blocks += out_rows.len() as u64;
        }
        if self.sqlite {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await?;
        }
        Ok(blocks)
    }

    /// Deletes chunks whose newest sample is before `before`, then those of `candidates`
    /// that have no chunks left. Returns the deleted series.
    pub async fn apply_retention(
        &self,
        before: i64,
        candidates: &[SeriesRef],
    ) -> Result<(u64, Vec<SeriesRef>), PersistError> {
        let chunks = sqlx::query("DELETE FROM chunks WHERE max_t < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let mut gone = Vec::new();
        for part in candidates.chunks(IN_LIST) {
            let rows = sqlx::query(&format!(
                "DELETE FROM series WHERE id IN ({}) AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.series_id = series.id) RETURNING id",
                id_list(part)
            ))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                gone.push(r.try_get::<i64, _>(0)? as SeriesRef);
            }
        }
        if self.sqlite && chunks > 0 {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await?;
        }
        Ok((chunks, gone))
    }

    /// Checkpoints SQLite's own write-ahead log into the database file (no-op on PostgreSQL).
    pub async fn checkpoint(&self) -> Result<(), PersistError> {
        if self.sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_chunks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[ChunkRow],
) -> Result<(), PersistError> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO chunks (series_id, level, min_t, max_t, samples, data, rollup, block_id) VALUES {}",
        placeholders(rows.len(), 8)
    );
    let mut q = sqlx::query(&sql);
    for r in rows {
        let min_t = r.samples.first().map_or(0, |s| s.timestamp_ms);
        let max_t = r.samples.last().map_or(0, |s| s.timestamp_ms);
        q = q
            .bind(r.series)
            .bind(r.level)
            .bind(min_t)
            .bind(max_t)
            .bind(r.samples.len() as i64)
            .bind(r.data.clone())
            .bind(r.rollup.clone())
            // Compacted blocks are cached by id, so each written block gets a new one.
            .bind((r.level > 0).then(rand::random::<i64>));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

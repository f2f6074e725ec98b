//! Persisted series and chunks, through sqlx: a SQLite file under the data directory by
//! default, PostgreSQL by URL. Every statement is written once (`$n` placeholders work in
//! both through sqlx's `Any` driver).
//!
//! Durability: a flush is one transaction; until it commits, its samples stay in the head
//! and in the write-ahead log. Level-0 rows may overlap (a flush repeated after a crash);
//! readers and compaction merge them, keeping one sample per timestamp. Reads, and the
//! cache of decoded blocks they go through, are in `persist/read.rs`.

use std::collections::{BTreeMap, HashMap};

use nunchi_model::{Label, Labels, Sample};
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{AnyPool, Row};

mod read;

use super::block;
use super::head::{FlushBatch, merge_in};
use super::index::SeriesRef;

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
    decoded: Option<read::DecodedBlocks>,
    /// Chunk listings, where this process alone writes the database and blocks are cached.
    listings: Option<read::Listings>,
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
            decoded: read::DecodedBlocks::new(block_cache_bytes),
            // Several collectors may share a PostgreSQL: a listing kept here would miss the
            // chunks another one writes.
            listings: (sqlite && block_cache_bytes > 0).then(read::Listings::new),
        })
    }

    /// Begins a transaction that writes, on `conn`. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`, waiting up to the busy timeout): a deferred transaction that
    /// read first fails with "database is locked" when it then writes after another
    /// connection took the lock, even briefly.
    async fn begin_write<'c>(
        &self,
        conn: &'c mut PoolConnection<sqlx::Any>,
    ) -> Result<sqlx::Transaction<'c, sqlx::Any>, sqlx::Error> {
        if self.sqlite {
            sqlx::Connection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await
        } else {
            sqlx::Connection::begin(&mut **conn).await
        }
    }

    /// Forgets the kept chunk listings of `series` (all when `None`) after a write to them.
    fn forget_listings(&self, series: Option<&[i64]>) {
        if let Some(l) = &self.listings {
            l.forget(series);
        }
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
        let mut conn = self.pool.acquire().await?;
        let result: Result<u64, PersistError> = async {
            let mut tx = self.begin_write(&mut conn).await?;
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
            Ok(written)
        }
        .await;
        let written = close_on_error(&mut conn, result)?;
        self.forget_listings(Some(
            &batch
                .items
                .keys()
                .map(|&r| i64::from(r))
                .collect::<Vec<_>>(),
        ));
        symbols.commit(fresh);
        Ok(written)
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
            let mut conn = self.pool.acquire().await?;
            let result: Result<u64, PersistError> = async {
            let mut tx = self.begin_write(&mut conn).await?;
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
            Ok(out_rows.len() as u64)
            }
            .await;
            blocks += close_on_error(&mut conn, result)?;
            self.forget_listings(Some(part));
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
        if chunks > 0 {
            self.forget_listings(None);
        }
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

/// `result`, with `conn` closed instead of returned to the pool if it is an error. A write
/// transaction that failed part-way (a full disk can fail the `COMMIT` itself, after which
/// SQLite has already rolled back and sqlx's `ROLLBACK` fails too) can leave the connection
/// believing it is still inside a transaction, and every later `BEGIN` on it would fail.
fn close_on_error<T>(
    conn: &mut PoolConnection<sqlx::Any>,
    result: Result<T, PersistError>,
) -> Result<T, PersistError> {
    if result.is_err() {
        conn.close_on_drop();
    }
    result
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

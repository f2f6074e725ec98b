//! The write-ahead log: every accepted write request is logged here before it is
//! acknowledged, so an acknowledged sample survives `kill -9` (and, with `sync`, a power
//! loss).
//!
//! # Layout
//! A directory of segment files `<id>.wal` (ids ascending, zero-padded). A record is
//! `len: u32 LE | crc32: u32 LE | payload[len]`; the payload is a snappy-compressed
//! remote_write request, the same bytes a writer sent.
//!
//! # Invariants
//! - One writer thread owns the files. Appends queued while it writes are written
//!   together and share one `fdatasync` (group commit); each caller is answered only after
//!   its record is written (and synced, when `sync` is on).
//! - [`Wal::rotate`] closes the current segment; records appended after it returns go to
//!   a later one. [`Wal::remove_through`] deletes closed segments once their contents are
//!   persisted elsewhere.
//! - On open, a torn or corrupt record ends its segment: the rest of that segment is
//!   truncated (and counted), later segments are still read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

const EXT: &str = "wal";
const HEADER: usize = 8;
/// A segment is closed once it passes this size.
const SEGMENT_BYTES: u64 = 128 << 20;

/// A write-ahead log failure. The record concerned was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// Reading or writing a WAL file failed.
    #[error("write-ahead log {path}: {message}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
    /// The writer thread is gone (the collector is shutting down).
    #[error("write-ahead log is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |e| WalError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// What opening the log found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    /// Records handed to the replay callback.
    pub records: u64,
    /// Bytes of torn or corrupt data cut from segment tails.
    pub truncated_bytes: u64,
}

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<(), WalError>>),
    Rotate(oneshot::Sender<Result<u64, WalError>>),
    Remove(u64, oneshot::Sender<Result<(), WalError>>),
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Op>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.{EXT}"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(&format!(".{EXT}"))?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

impl Wal {
    /// Opens (creating) the log in `dir`, passing every intact record to `replay` in order,
    /// then starts the writer thread on a fresh segment.
    pub fn open(
        dir: &Path,
        sync: bool,
        mut replay: impl FnMut(&[u8]),
    ) -> Result<(Wal, Replayed), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ids = list_segments(dir)?;
        let mut stats = Replayed::default();
        for &id in &ids {
            let path = segment_path(dir, id);
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err(&path))?;
            let mut pos = 0usize;
            while pos + HEADER <= data.len() {
                let len =
                    u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
                let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
                let end = pos + HEADER + len;
                if end > data.len() || crc32fast::hash(&data[pos + HEADER..end]) != crc {
                    break;
                }
                replay(&data[pos + HEADER..end]);
                stats.records += 1;
                pos = end;
            }
            if pos < data.len() {
                stats.truncated_bytes += (data.len() - pos) as u64;
                tracing::warn!(file = %path.display(), bytes = data.len() - pos, "truncating a torn or corrupt write-ahead log tail");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(pos as u64))
                    .map_err(io_err(&path))?;
            }
        }
        let next = ids.last().map_or(1, |id| id + 1);
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_owned(),
            id: next,
            file: None,
            len: 0,
            sync,
            failed: None,
        };
        writer.open_segment()?;
        std::thread::Builder::new()
            .name("wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((Wal { tx }, stats))
    }

    /// Appends one record; resolves once it is written (and synced, if configured).
    pub async fn append(&self, payload: Vec<u8>) -> Result<(), WalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Op::Append(payload, tx))
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Closes the current segment, returning its id: every record appended before this call
    /// is in that segment or an earlier one.
    pub async fn rotate(&self) -> Result<u64, WalError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Rotate(tx)).map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes every closed segment with an id up to `id`.
    pub async fn remove_through(&self, id: u64) -> Result<(), WalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Op::Remove(id, tx))
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }
}

struct Writer {
    dir: PathBuf,
    id: u64,
    file: Option<File>,
    len: u64,
    sync: bool,
    /// Set after a write or sync failure: the segment's tail is unknown, so the next append
    /// starts a new segment.
    failed: Option<WalError>,
}

impl Writer {
    fn open_segment(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.id);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if self.sync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
        }
        self.file = Some(f);
        self.len = 0;
        self.failed = None;
        Ok(())
    }

    fn roll(&mut self) -> Result<u64, WalError> {
        let closed = self.id;
        if let Some(f) = self.file.take()
            && self.sync
        {
            f.sync_all()
                .map_err(io_err(&segment_path(&self.dir, closed)))?;
        }
        self.id += 1;
        self.open_segment()?;
        Ok(closed)
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut batch: Vec<oneshot::Sender<Result<(), WalError>>> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Append(payload, reply) => {
                        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                        buf.extend_from_slice(&payload);
                        batch.push(reply);
                    }
                    Op::Rotate(reply) => {
                        self.flush(&mut buf, &mut batch);
                        let _ = reply.send(self.roll());
                    }
                    Op::Remove(id, reply) => {
                        self.flush(&mut buf, &mut batch);
                        let _ = reply.send(self.remove_through(id));
                    }
                }
                next = rx.try_recv().ok();
            }
            self.flush(&mut buf, &mut batch);
        }
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
    }

    fn flush(&mut self, buf: &mut Vec<u8>, batch: &mut Vec<oneshot::Sender<Result<(), WalError>>>) {
        if batch.is_empty() {
            return;
        }
        let result = self.write(buf);
        if let Err(e) = &result {
            tracing::error!(error = %e, "write-ahead log write failed; writers get 503 and retry");
            self.failed = Some(e.clone());
        }
        for reply in batch.drain(..) {
            let _ = reply.send(result.clone());
        }
        buf.clear();
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), WalError> {
        if self.failed.is_some() || self.file.is_none() || self.len > SEGMENT_BYTES {
            self.roll()?;
        }
        let path = segment_path(&self.dir, self.id);
        let f = self.file.as_mut().ok_or(WalError::Closed)?;
        f.write_all(buf).map_err(io_err(&path))?;
        if self.sync {
            f.sync_data().map_err(io_err(&path))?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn remove_through(&mut self, id: u64) -> Result<(), WalError> {
        for old in list_segments(&self.dir)? {
            if old <= id && old != self.id {
                let path = segment_path(&self.dir, old);
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_all(dir: &Path) -> (Vec<Vec<u8>>, Replayed) {
        let mut got = Vec::new();
        let (_wal, stats) = Wal::open(dir, false, |p| got.push(p.to_vec())).expect("open");
        (got, stats)
    }

    #[tokio::test]
    async fn records_come_back_in_order_and_removed_segments_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(dir.path(), true, |_| {}).expect("open");
        wal.append(b"one".to_vec()).await.expect("append");
        let closed = wal.rotate().await.expect("rotate");
        wal.append(b"two".to_vec()).await.expect("append");
        let (got, _) = replay_all(dir.path());
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        wal.remove_through(closed).await.expect("remove");
        let (got, _) = replay_all(dir.path());
        assert_eq!(got, [b"two".to_vec()]);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_later_appends_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (wal, _) = Wal::open(dir.path(), false, |_| {}).expect("open");
            wal.append(b"kept".to_vec()).await.expect("append");
        }
        let seg = list_segments(dir.path()).expect("list")[0];
        let path = segment_path(dir.path(), seg);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("write");
        let (got, stats) = replay_all(dir.path());
        assert_eq!(got, [b"kept".to_vec()]);
        assert_eq!(stats.truncated_bytes, 6);
        let (got, stats) = replay_all(dir.path());
        assert_eq!((got.len(), stats.truncated_bytes), (1, 0));
    }
}

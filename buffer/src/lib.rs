//! A bounded on-disk FIFO of opaque records: what an agent holds while its receiver is
//! unreachable.
//!
//! # Layout
//! A directory of segment files `<id>.seg` (ids ascending, zero-padded) and a `cursor`
//! file. Each record in a segment is `len: u32 LE | crc32: u32 LE | samples: u32 LE |
//! payload[len]`, where the CRC covers `samples` and the payload. `samples` is how many
//! samples the payload carries, so dropped data can be counted in samples.
//!
//! # Invariants
//! - Records come out in the order they went in ([`DiskBuffer::peek`] then
//!   [`DiskBuffer::ack`]).
//! - [`DiskBuffer::append`] returns only after the record is written and `fdatasync`ed: an
//!   appended record survives a crash of the process or the machine.
//! - [`DiskBuffer::ack`] persists the read position (write to a temporary file, then
//!   rename). A crash between delivering a record and acking it replays that record once
//!   more after restart: delivery is at-least-once across crashes, exactly-once otherwise.
//! - The total size of segment files never exceeds `max_bytes`: to make room, whole oldest
//!   segments are deleted and their unread records are reported as dropped.
//! - A torn write at the tail (a crash mid-append) is detected by length and CRC on open
//!   and truncated away; nothing after a corrupt record in that segment is trusted.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER_LEN: u64 = 12;
const CURSOR_FILE: &str = "cursor";
const SEGMENT_EXT: &str = "seg";

/// Errors from the buffer. Every one names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// An I/O operation on a buffer file failed.
    #[error("disk buffer {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configured maximum size is too small to hold anything.
    #[error("disk buffer max size {0} bytes is too small (minimum 64 KiB)")]
    TooSmall(u64),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One record read back from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The number of samples the payload carries.
    pub samples: u32,
    /// The bytes that were appended.
    pub payload: Vec<u8>,
}

/// What an append had to give up to stay under the size cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Records discarded (oldest first, or the new record itself if it alone is too big).
    pub records: u64,
    /// Samples those records carried.
    pub samples: u64,
}

/// What [`DiskBuffer::open`] found on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Unread records found.
    pub records: u64,
    /// Samples they carry.
    pub samples: u64,
    /// Bytes of torn or corrupt data truncated from segment tails.
    pub truncated_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes in the file (all valid records).
    len: u64,
    /// Unread records and their samples (records before the cursor are not counted).
    records: u64,
    samples: u64,
}

/// A bounded, durable FIFO of records in a directory. Not shared between processes: the
/// caller holds the directory exclusively.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Read offset within the first segment.
    read_offset: u64,
    /// Append handle for the last segment.
    tail: Option<File>,
    /// Read handle for the first segment.
    head: Option<(u64, File)>,
    /// The record at the cursor, once read, until acked.
    peeked: Option<(Record, u64)>,
    /// The records last returned by [`DiskBuffer::peek_batch`], until acked: how many,
    /// their samples, and the offset after the last one (all in the first segment).
    peeked_batch: Option<(u64, u64, u64)>,
}

impl DiskBuffer {
    /// Opens (creating if needed) the buffer in `dir`, holding at most `max_bytes` on disk.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<(Self, Recovered), BufferError> {
        if max_bytes < 64 * 1024 {
            return Err(BufferError::TooSmall(max_bytes));
        }
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let segment_bytes = (max_bytes / 8).clamp(16 * 1024, 64 * 1024 * 1024);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            if let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let (cursor_id, cursor_offset) = read_cursor(&dir.join(CURSOR_FILE));
        let mut buf = DiskBuffer {
            dir,
            max_bytes,
            segment_bytes,
            segments: VecDeque::new(),
            read_offset: 0,
            tail: None,
            head: None,
            peeked: None,
            peeked_batch: None,
        };
        let mut recovered = Recovered::default();
        for id in ids {
            if id < cursor_id {
                let path = buf.segment_path(id);
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let skip_to = if id == cursor_id { cursor_offset } else { 0 };
            let (seg, truncated) = buf.scan_segment(id, skip_to)?;
            recovered.truncated_bytes += truncated;
            recovered.records += seg.records;
            recovered.samples += seg.samples;
            if buf.segments.is_empty() {
                buf.read_offset = skip_to.min(seg.len);
            }
            buf.segments.push_back(seg);
        }
        if recovered.truncated_bytes > 0 {
            tracing::warn!(dir = %buf.dir.display(), bytes = recovered.truncated_bytes,
                "disk buffer: truncated a torn or corrupt tail left by a crash");
        }
        Ok((buf, recovered))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.{SEGMENT_EXT}"))
    }

    /// Reads a segment, validating every record; truncates the file at the first invalid
    /// record. Records before `skip_to` are already delivered and not counted.
    fn scan_segment(&self, id: u64, skip_to: u64) -> Result<(Segment, u64), BufferError> {
        let path = self.segment_path(id);
        let data = fs::read(&path).map_err(io_err(&path))?;
        let mut off = 0u64;
        let mut seg = Segment {
            id,
            len: 0,
            records: 0,
            samples: 0,
        };
        while let Some((record, next)) = parse_record(&data, off) {
            if off >= skip_to {
                seg.records += 1;
                seg.samples += u64::from(record.samples);
            }
            off = next;
        }
        let truncated = data.len() as u64 - off;
        if truncated > 0 {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(off).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        seg.len = off;
        Ok((seg, truncated))
    }

    /// Appends a record carrying `samples` samples and syncs it to disk. To stay under the
    /// cap, whole oldest segments are dropped first; a record that alone exceeds the cap is
    /// itself dropped. Either way the loss is returned, never an error.
    pub fn append(&mut self, samples: u32, payload: &[u8]) -> Result<Dropped, BufferError> {
        let need = HEADER_LEN + payload.len() as u64;
        let mut dropped = Dropped::default();
        if need > self.max_bytes {
            dropped.records = 1;
            dropped.samples = u64::from(samples);
            return Ok(dropped);
        }
        while self.disk_bytes() + need > self.max_bytes && !self.segments.is_empty() {
            let d = self.drop_oldest_segment()?;
            dropped.records += d.records;
            dropped.samples += d.samples;
        }
        let roll = match self.segments.back() {
            None => true,
            Some(seg) => seg.len > 0 && seg.len + need > self.segment_bytes,
        };
        if roll {
            let id = self
                .segments
                .back()
                .map_or(self.first_free_id(), |s| s.id + 1);
            let path = self.segment_path(id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.segments.push_back(Segment {
                id,
                len: 0,
                records: 0,
                samples: 0,
            });
            self.tail = Some(file);
            if self.segments.len() == 1 {
                self.read_offset = 0;
            }
        }
        let seg_id = self.segments.back().map(|s| s.id).unwrap_or_default();
        let path = self.segment_path(seg_id);
        if self.tail.is_none() {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.tail = Some(file);
        }
        let mut bytes = Vec::with_capacity(need as usize);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&samples.to_le_bytes());
        crc.update(payload);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        bytes.extend_from_slice(&samples.to_le_bytes());
        bytes.extend_from_slice(payload);
        if let Some(tail) = self.tail.as_mut() {
            tail.write_all(&bytes).map_err(io_err(&path))?;
            tail.sync_data().map_err(io_err(&path))?;
        }
        if let Some(seg) = self.segments.back_mut() {
            seg.len += need;
            seg.records += 1;
            seg.samples += u64::from(samples);
        }
        Ok(dropped)
    }

    fn first_free_id(&self) -> u64 {
        let (cursor_id, _) = read_cursor(&self.dir.join(CURSOR_FILE));
        cursor_id.max(1)
    }

    fn drop_oldest_segment(&mut self) -> Result<Dropped, BufferError> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(Dropped::default());
        };
        let path = self.segment_path(seg.id);
        if self.segments.is_empty() {
            self.tail = None;
        }
        self.head = None;
        self.peeked = None;
        self.peeked_batch = None;
        self.read_offset = 0;
        fs::remove_file(&path).map_err(io_err(&path))?;
        if let Some(next) = self.segments.front() {
            self.write_cursor(next.id, 0)?;
        } else {
            self.write_cursor(seg.id + 1, 0)?;
        }
        Ok(Dropped {
            records: seg.records,
            samples: seg.samples,
        })
    }

    /// The oldest unread record, without consuming it. Repeated calls return the same one
    /// until [`DiskBuffer::ack`].
    pub fn peek(&mut self) -> Result<Option<Record>, BufferError> {
        if let Some((r, _)) = &self.peeked {
            return Ok(Some(r.clone()));
        }
        loop {
            let Some((id, len)) = self.position()? else {
                return Ok(None);
            };
            let path = self.segment_path(id);
            let Some((_, file)) = self.head.as_mut() else {
                return Ok(None);
            };
            file.seek(SeekFrom::Start(self.read_offset))
                .map_err(io_err(&path))?;
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact(&mut header).map_err(io_err(&path))?;
            let plen = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let mut rec = header.to_vec();
            rec.resize(HEADER_LEN as usize + plen, 0);
            file.read_exact(&mut rec[HEADER_LEN as usize..])
                .map_err(io_err(&path))?;
            match parse_record(&rec, 0) {
                Some((record, next)) => {
                    self.peeked = Some((record.clone(), self.read_offset + next));
                    return Ok(Some(record));
                }
                None => {
                    // Validated on open and written by us since; a mismatch means the file
                    // was changed underneath. Skip the rest of this segment.
                    tracing::error!(path = %path.display(), offset = self.read_offset,
                        "disk buffer: corrupt record; skipping the rest of the segment");
                    self.read_offset = len;
                }
            }
        }
    }

    /// Moves past fully read segments and opens the first one with unread records,
    /// returning its id and length; `None` when nothing is left to read.
    fn position(&mut self) -> Result<Option<(u64, u64)>, BufferError> {
        loop {
            let Some(seg) = self.segments.front() else {
                return Ok(None);
            };
            let (id, len) = (seg.id, seg.len);
            if self.read_offset >= len {
                if self.segments.len() == 1 {
                    return Ok(None);
                }
                self.advance_segment()?;
                continue;
            }
            if self.head.as_ref().map(|(h, _)| *h) != Some(id) {
                let path = self.segment_path(id);
                let f = File::open(&path).map_err(io_err(&path))?;
                self.head = Some((id, f));
            }
            return Ok(Some((id, len)));
        }
    }

    /// The oldest unread records, as many as fit in `max_records` and `max_bytes` of
    /// payload (at least one, whatever its size) and lie in the same segment, without
    /// consuming them. [`DiskBuffer::ack_batch`] consumes them all.
    pub fn peek_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, BufferError> {
        self.peeked = None;
        self.peeked_batch = None;
        // Position on the first unread record (this skips exhausted segments).
        if self.peek()?.is_none() {
            return Ok(Vec::new());
        }
        self.peeked = None;
        let Some(seg) = self.segments.front() else {
            return Ok(Vec::new());
        };
        let (id, len) = (seg.id, seg.len);
        let path = self.segment_path(id);
        let Some((_, file)) = self.head.as_mut() else {
            return Ok(Vec::new());
        };
        let window = (len - self.read_offset).min(max_bytes as u64 + HEADER_LEN);
        file.seek(SeekFrom::Start(self.read_offset))
            .map_err(io_err(&path))?;
        let mut data = vec![0u8; window as usize];
        file.read_exact(&mut data).map_err(io_err(&path))?;
        let mut out = Vec::new();
        let (mut off, mut bytes, mut samples) = (0u64, 0usize, 0u64);
        while out.len() < max_records.max(1) {
            let Some((record, next)) = parse_record(&data, off) else {
                break;
            };
            if !out.is_empty() && bytes + record.payload.len() > max_bytes {
                break;
            }
            bytes += record.payload.len();
            samples += u64::from(record.samples);
            out.push(record);
            off = next;
        }
        if out.is_empty() {
            // The first record is larger than the window: fall back to reading it alone.
            if let Some(r) = self.peek()? {
                self.peeked = None;
                let next = self.read_offset + HEADER_LEN + r.payload.len() as u64;
                self.peeked_batch = Some((1, u64::from(r.samples), next));
                return Ok(vec![r]);
            }
            return Ok(Vec::new());
        }
        self.peeked_batch = Some((out.len() as u64, samples, self.read_offset + off));
        Ok(out)
    }

    /// Consumes the records last returned by [`DiskBuffer::peek_batch`] and persists the
    /// position.
    pub fn ack_batch(&mut self) -> Result<(), BufferError> {
        let Some((records, samples, next)) = self.peeked_batch.take() else {
            return Ok(());
        };
        self.read_offset = next;
        let Some(seg) = self.segments.front_mut() else {
            return Ok(());
        };
        seg.records = seg.records.saturating_sub(records);
        seg.samples = seg.samples.saturating_sub(samples);
        let (id, len) = (seg.id, seg.len);
        if next >= len && self.segments.len() > 1 {
            self.advance_segment()
        } else {
            self.write_cursor(id, next)
        }
    }

    /// Consumes the record last returned by [`DiskBuffer::peek`] and persists the position.
    pub fn ack(&mut self) -> Result<(), BufferError> {
        let Some((record, next)) = self.peeked.take() else {
            return Ok(());
        };
        self.read_offset = next;
        let Some(seg) = self.segments.front_mut() else {
            return Ok(());
        };
        seg.records = seg.records.saturating_sub(1);
        seg.samples = seg.samples.saturating_sub(u64::from(record.samples));
        let (id, len) = (seg.id, seg.len);
        if next >= len && self.segments.len() > 1 {
            self.advance_segment()
        } else {
            self.write_cursor(id, next)
        }
    }

    fn advance_segment(&mut self) -> Result<(), BufferError> {
        if let Some(seg) = self.segments.pop_front() {
            let path = self.segment_path(seg.id);
            self.head = None;
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        self.read_offset = 0;
        let next = self.segments.front().map_or(0, |s| s.id);
        self.write_cursor(next, 0)
    }

    fn write_cursor(&self, id: u64, offset: u64) -> Result<(), BufferError> {
        let path = self.dir.join(CURSOR_FILE);
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{id} {offset}\n")).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Whether there is nothing left to read.
    pub fn is_empty(&self) -> bool {
        self.pending_records() == 0
    }

    /// Unread records.
    pub fn pending_records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Samples in unread records.
    pub fn pending_samples(&self) -> u64 {
        self.segments.iter().map(|s| s.samples).sum()
    }

    /// Bytes of segment files on disk (read records included until their segment goes).
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
}

fn read_cursor(path: &Path) -> (u64, u64) {
    let Ok(text) = fs::read_to_string(path) else {
        return (0, 0);
    };
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(id), Some(off)) => (id, off),
        _ => (0, 0),
    }
}

/// Parses the record at `off` in `data`, returning it and the offset after it, or `None`
/// if the bytes there are not a whole, valid record.
fn parse_record(data: &[u8], off: u64) -> Option<(Record, u64)> {
    let off = usize::try_from(off).ok()?;
    let header = data.get(off..off + HEADER_LEN as usize)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let samples_bytes: [u8; 4] = header[8..12].try_into().ok()?;
    let start = off + HEADER_LEN as usize;
    let payload = data.get(start..start.checked_add(len)?)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&samples_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return None;
    }
    let record = Record {
        samples: u32::from_le_bytes(samples_bytes),
        payload: payload.to_vec(),
    };
    Some((record, (start + len) as u64))
}

#[cfg(test)]
mod tests;

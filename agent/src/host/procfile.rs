//! A `/proc` file kept open and re-read from offset 0 each cycle: one `pread` instead of
//! open, read and close, into a buffer that is reused.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An open `/proc` file and its last contents.
#[derive(Debug)]
pub(super) struct ProcFile {
    file: File,
    buf: Vec<u8>,
}

impl ProcFile {
    pub(super) fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(ProcFile {
            file: File::open(path)?,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Reads the whole file afresh.
    pub(super) fn read(&mut self) -> io::Result<&[u8]> {
        self.buf.clear();
        loop {
            let len = self.buf.len();
            if self.buf.capacity() - len < 4096 {
                self.buf.reserve(self.buf.capacity().max(4096));
            }
            self.buf.resize(self.buf.capacity(), 0);
            let n = self.file.read_at(&mut self.buf[len..], len as u64);
            match n {
                Ok(0) => {
                    self.buf.truncate(len);
                    return Ok(&self.buf);
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        }
    }

    /// What the last [`ProcFile::read`] returned.
    pub(super) fn contents(&self) -> &[u8] {
        &self.buf
    }

    /// The open file, for `poll`.
    pub(super) fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_fresh_contents() {
        let mut f = ProcFile::open("/proc/self/stat").expect("open");
        let a = f.read().expect("read").to_vec();
        let b = f.read().expect("read").to_vec();
        assert!(a.starts_with(b"") && !a.is_empty() && !b.is_empty());
        let mut big = ProcFile::open("/proc/self/maps").expect("open");
        let text = String::from_utf8(big.read().expect("read").to_vec()).expect("utf8");
        assert!(text.lines().count() > 3 && text.ends_with('\n'));
    }
}

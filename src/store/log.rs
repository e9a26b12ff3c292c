//! STUB: being written. The API below is fixed; the implementation is not.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Where a record is: its segment and its byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u32,
    pub offset: u32,
}

/// A record found by recovery, in log order.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub position: Position,
    pub payload: Bytes,
    /// A delivery of it was recorded ([`Log::mark_delivered`]) before the restart.
    pub delivered: bool,
}

/// What [`Log::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records neither acked nor deleted, in append order.
    pub records: Vec<Recovered>,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    pub segments: usize,
}

/// One queue's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
}

impl Log {
    /// Opens (creating if missing) the log in `dir` and recovers it.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<(Log, Recovery)> {
        let _ = segment_size;
        std::fs::create_dir_all(dir)?;
        Ok((
            Log {
                dir: dir.to_path_buf(),
            },
            Recovery::default(),
        ))
    }

    /// Appends one record (written, not yet synced).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<Position> {
        let _ = payload;
        Err(io::Error::other("store log not implemented yet"))
    }

    /// Reads a record back.
    pub fn read(&self, position: Position) -> io::Result<Bytes> {
        let _ = position;
        Err(io::Error::other("store log not implemented yet"))
    }

    /// Records that a record was settled (acked, or dropped); whole segments go when all their
    /// records are settled.
    pub fn settle(&mut self, position: Position) -> io::Result<()> {
        let _ = position;
        Ok(())
    }

    /// Records that a record was delivered to a consumer (so a recovered copy is redelivered).
    pub fn mark_delivered(&mut self, position: Position) -> io::Result<()> {
        let _ = position;
        Ok(())
    }

    /// The files written since the last call, for the group commit to fsync.
    pub fn take_dirty(&mut self) -> Vec<Arc<File>> {
        Vec::new()
    }

    /// Deletes the whole log (the queue was deleted).
    pub fn destroy(self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

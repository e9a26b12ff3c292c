//! Rewriting the log from its live set: a [`Snapshot`] is the new file's bytes, taken by the broker
//! under its topology lock; writing it out happens with no lock held; swapping it in holds only
//! the log's file lock, for the entries appended meanwhile, one sync, a rename and a directory
//! sync. Also how a new log is made at all (a first start, an upgrade): the same temporary file
//! and rename.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{frame, DefinitionLog, Tail, FILE, MAGIC, PUT, TEMP};

/// The live set, framed as a new log (header and one put per record).
#[derive(Debug)]
pub struct Snapshot {
    bytes: Vec<u8>,
    records: usize,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot {
            bytes: MAGIC.to_vec(),
            records: 0,
        }
    }

    /// Adds a live record.
    pub fn put(&mut self, key: &[u8], record: &[u8]) -> io::Result<()> {
        frame(&mut self.bytes, PUT, key, record)?;
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> usize {
        self.records
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Writes the snapshot to the temporary file and syncs it.
    pub(super) fn write_temp(&self, dir: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(TEMP))?;
        file.write_all_at(&self.bytes, 0)?;
        file.sync_data()?;
        Ok(file)
    }
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot::new()
    }
}

/// Renames the (synced) temporary file over the log and syncs the directory.
pub(super) fn install(dir: &Path) -> io::Result<()> {
    fs::rename(dir.join(TEMP), dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

impl DefinitionLog {
    /// Starts a compaction: writes out what is buffered, and from now on keeps a copy of what is
    /// written. Call it while nothing can be appended (under the topology's lock), and take the
    /// [`Snapshot`] of the live set under the same lock.
    pub fn begin_compaction(&self) -> io::Result<()> {
        let mut current = self.current.lock();
        if current.tail.is_some() {
            return Err(io::Error::other("a compaction is already running"));
        }
        self.write_pending(&mut current)?;
        let pending = self.pending.lock();
        current.tail = Some(Tail {
            bytes: Vec::new(),
            entries_at_start: pending.entries,
            live_at_start: pending.live,
        });
        Ok(())
    }

    /// Ends a compaction begun with [`DefinitionLog::begin_compaction`] without rewriting.
    pub fn abort_compaction(&self) {
        self.current.lock().tail = None;
    }

    /// Replaces the log with `snapshot` and what was appended since [`begin_compaction`]; the
    /// bytes it saved. On an error the log is as it was (and the compaction over).
    ///
    /// [`begin_compaction`]: DefinitionLog::begin_compaction
    pub fn finish_compaction(&self, snapshot: &Snapshot) -> io::Result<u64> {
        let swapped = self.swap_in(snapshot);
        if swapped.is_err() {
            self.abort_compaction();
            let _ = fs::remove_file(self.dir.join(TEMP));
        }
        swapped
    }

    fn swap_in(&self, snapshot: &Snapshot) -> io::Result<u64> {
        let file = snapshot.write_temp(&self.dir)?;
        let mut current = self.current.lock();
        self.write_pending(&mut current)?;
        let tail = current
            .tail
            .take()
            .ok_or_else(|| io::Error::other("no compaction was begun"))?;
        file.write_all_at(&tail.bytes, snapshot.len())?;
        file.sync_data()?;
        install(&self.dir)?;
        let before = current.len;
        current.file = Arc::new(file);
        current.len = snapshot.len() + tail.bytes.len() as u64;
        let mut pending = self.pending.lock();
        let records = snapshot.records() as u64;
        pending.entries = records + (pending.entries - tail.entries_at_start);
        pending.live = records as i64 + (pending.live - tail.live_at_start);
        Ok(before.saturating_sub(current.len))
    }
}

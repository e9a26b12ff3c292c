//! The write buffer and what is left to sync: records and acks entries gathered in memory reach
//! their files in one `pwrite` per file ([`Log::flush`], or past [`PENDING_LIMIT`]; records
//! first, so an entry never reaches the disk before the record it names), and every file written
//! since the last [`Log::take_dirty`] is handed back by it, once, for the group commit to sync.
//! Files are reached through their handles (`store/files.rs`): a file that cannot be opened
//! (out of descriptors) leaves what was buffered for it in the buffer, for the next flush. Never
//! syncs; never reads a record.

use std::io;
use std::sync::Arc;

use super::acks::{self, Kind};
use super::{Dirty, Handle, Log, Mode, PENDING_LIMIT};

impl Log {
    /// Writes every buffered record and acks entry to its file (records first: an entry never
    /// reaches the disk before the record it names).
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_records()?;
        self.flush_acks()
    }

    pub(super) fn flush_records(&mut self) -> io::Result<()> {
        let Some(writes) = self.writes.as_mut().filter(|w| !w.pending.is_empty()) else {
            return Ok(());
        };
        let Some((id, file)) = self.active.clone() else {
            writes.pending.clear();
            return Err(io::Error::other("queue log: no active segment"));
        };
        // Nothing written yet if the file cannot be opened: the records stay buffered.
        file.open()?;
        let at = writes.pending_at;
        let written = file.write_all_at(&writes.pending, at);
        writes.pending.clear();
        if let Err(e) = written {
            // The records buffered are lost, and their positions were handed out: cut the
            // partial write and seal the segment, so that the next append starts a new one and
            // no position is ever reused (an ack of a lost record must never match a later one).
            let _ = file.set_len(at);
            if self.holds_damage() {
                // Its active segment must stay the newest file: start the next one now.
                if let Err(roll) = self.roll() {
                    tracing::error!(error = %roll, "queue log: starting a new segment failed");
                }
            } else {
                self.seal();
            }
            return Err(e);
        }
        self.mark_dirty(Dirty::Msgs(id), file);
        Ok(())
    }

    pub(super) fn flush_acks(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        let Some(writes) = self.writes.as_mut() else {
            return Ok(());
        };
        for (id, at, entries) in std::mem::take(&mut writes.pending_acks) {
            let Some(file) = self.segment(id).map(|s| Arc::clone(&s.acks)) else {
                continue;
            };
            if let Err(e) = file.open() {
                // Not written: kept for the next flush.
                self.writes().pending_acks.push((id, at, entries));
                result = result.and(Err(e));
                continue;
            }
            match file.write_all_at(&entries, at) {
                Ok(()) => {
                    if at == 0 {
                        self.mark_dir_dirty(); // the file may be new
                    }
                    self.mark_dirty(Dirty::Acks(id), file);
                }
                Err(e) => result = result.and(Err(e)),
            }
        }
        result
    }

    /// Flushes, and returns the files written since the last call, for the group commit to
    /// fsync (each once). A failed flush is returned too: what it held is not on disk.
    pub fn take_dirty(&mut self) -> (Vec<Arc<Handle>>, io::Result<()>) {
        let flushed = self.flush();
        let files = match &mut self.writes {
            Some(writes) => writes.dirty.drain(..).map(|(_, file)| file).collect(),
            None => Vec::new(),
        };
        (files, flushed)
    }

    /// Buffers an acks entry (written at the next flush).
    pub(super) fn write_ack(&mut self, id: u32, kind: Kind, offset: u32) -> io::Result<()> {
        let Some(segment) = self.segment_mut(id) else {
            return Ok(());
        };
        let at = segment.acks_len;
        segment.acks_len = at + acks::ENTRY_LEN;
        let entry = acks::encode(kind, offset);
        let pending = &mut self.writes().pending_acks;
        match pending.iter_mut().find(|(segment, _, _)| *segment == id) {
            Some((_, _, entries)) => entries.extend_from_slice(&entry),
            None => pending.push((id, at, entry.to_vec())),
        }
        let buffered: usize = pending.iter().map(|(_, _, e)| e.len()).sum();
        if buffered >= PENDING_LIMIT {
            self.flush_acks()?;
        }
        Ok(())
    }

    /// The log's directory changed (a file created): it is synced with the next dirty files,
    /// through a handle made for that sync (a log keeps none of its directory).
    pub(super) fn mark_dir_dirty(&mut self) {
        let dirty = self.writes.as_ref().map_or(&[][..], |w| &w.dirty[..]);
        if dirty.iter().any(|(dirty, _)| *dirty == Dirty::Dir) {
            return;
        }
        let dir = self.files.handle(self.dir.to_path_buf(), Mode::Directory);
        dir.mark_dirty();
        self.mark_dirty(Dirty::Dir, dir);
    }

    pub(super) fn mark_dirty(&mut self, what: Dirty, file: Arc<Handle>) {
        let dirty = &mut self.writes().dirty;
        if !dirty.iter().any(|(dirty, _)| *dirty == what) {
            dirty.push((what, file));
        }
    }
}

impl Drop for Log {
    /// A log dropped with buffered writes (the broker stopping) writes them first.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(dir = %self.dir.display(), error = %e, "queue log: writing buffered records at close failed");
        }
    }
}

//! The durable topology of a vhost (its exchanges, queues and bindings) as an append-only log,
//! `definitions.log` in the vhost's directory, compacted now and then. Keys and records are opaque
//! bytes here: the broker encodes them (`broker/definition.rs`) and gives each record a stable
//! key, so that a later entry can delete it. This module owns that file and nothing else; it
//! never knows AMQP, never blocks while its caller holds the topology's write lock, and never
//! trusts a length read from the file without a bound.
//!
//! Format: `WRNDLOG1`, then entries, each `u32 body length (BE) | u32 crc32c(body) | body`, where
//! body = `u8 op (1 put, 2 delete) | u32 key length | key | record` (a delete has no record).
//! Replaying the entries in order gives the live set: a put sets its key's record, a delete
//! removes it.
//!
//! Writing: while it holds its topology's write lock, the broker appends the change
//! ([`DefinitionLog::put`], [`DefinitionLog::delete`]: into a buffer, no I/O, so changes are
//! logged in the order they were made); it lets go of the lock and then [`DefinitionLog::commit`]s:
//! the buffer is written with one `pwrite` and handed to the group commit
//! ([`super::sync::Syncer`]), and `commit` returns once an `fdatasync` that covers it is done. So a
//! `declare-ok` still means "on disk", for one `pwrite` and one shared `fdatasync` instead of a
//! rewrite of the whole file, a rename and two syncs. Declarers that commit at the same time share
//! one sync (with publishers' confirms too). `commit` blocks its thread (the configuration file,
//! the management API and the definitions import use it); a connection instead
//! [`DefinitionLog::write`]s once per batch of input and registers one group-commit callback, so
//! a client that pipelines its declarations shares one sync among all of them.
//!
//! Recovery ([`DefinitionLog::open`]): entries are replayed up to the first one whose length is out
//! of bounds or whose CRC fails, and the file is cut there, as a queue's log cuts its last
//! segment: a crash mid-append loses only entries whose commit had not returned, never the file. A
//! data directory from before the log (`definitions`, [`legacy`]) is read once, written out as a
//! new log, and removed.
//!
//! Compaction ([`DefinitionLog::wants_compaction`]): when dead entries outnumber live ones more
//! than two to one and the file is over 1 MiB, the broker takes a [`Snapshot`] of its live set
//! under its topology lock ([`DefinitionLog::begin_compaction`]); the snapshot is written to a
//! temporary file and synced outside any lock; then, under this log's file lock only, what was
//! appended meanwhile is added, the file is synced, renamed over the log and the directory synced
//! ([`DefinitionLog::finish_compaction`]).
//!
//! Locks: `pending` (buffer and counts) is a leaf, taken under the broker's topology lock;
//! `current` (the file) is taken by commits and compaction, and under the topology lock only by
//! `begin_compaction` (a read lock). Order: topology, then `current`, then `pending`.

mod compact;
pub mod legacy;
mod recover;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

pub use compact::Snapshot;
pub use recover::Entry;

use super::sync::Syncer;

/// The log's name in the vhost's directory.
const FILE: &str = "definitions.log";
/// Where a new log is written before it is renamed over [`FILE`].
const TEMP: &str = "definitions.log.tmp";
const MAGIC: &[u8; 8] = b"WRNDLOG1";
/// The largest entry body written or read (a length above it is corruption).
const MAX_ENTRY: usize = 16 * 1024 * 1024;
/// The largest log read at start (a bound before reading it whole).
const MAX_FILE: u64 = 1 << 30;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Length and CRC before each entry's body.
const FRAME: usize = 8;

/// One vhost's definitions log.
#[derive(Debug)]
pub struct DefinitionLog {
    dir: PathBuf,
    current: Mutex<Current>,
    pending: Mutex<Pending>,
}

/// The file and what is written to it.
#[derive(Debug)]
struct Current {
    file: Arc<File>,
    /// Bytes written (entries after it, if any, are a failed write's and are overwritten).
    len: u64,
    /// While a compaction runs: what was written after its snapshot.
    tail: Option<Tail>,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// `Pending`'s counts when the snapshot was taken.
    entries_at_start: u64,
    live_at_start: i64,
}

/// Entries appended and not yet written, and the counts that decide compaction.
#[derive(Debug, Default)]
struct Pending {
    buffer: Vec<u8>,
    /// Entries in the file and the buffer.
    entries: u64,
    /// Records live (puts less deletes).
    live: i64,
}

impl DefinitionLog {
    fn new(dir: PathBuf, file: File, len: u64, entries: u64, live: usize) -> DefinitionLog {
        DefinitionLog {
            dir,
            current: Mutex::new(Current {
                file: Arc::new(file),
                len,
                tail: None,
            }),
            pending: Mutex::new(Pending {
                buffer: Vec::new(),
                entries,
                live: i64::try_from(live).unwrap_or(i64::MAX),
            }),
        }
    }

    /// Appends "`key` is `record`" (buffered: [`DefinitionLog::commit`] makes it durable).
    pub fn put(&self, key: &[u8], record: &[u8]) -> io::Result<()> {
        let mut pending = self.pending.lock();
        frame(&mut pending.buffer, PUT, key, record)?;
        pending.entries += 1;
        pending.live += 1;
        Ok(())
    }

    /// Appends "`key` is gone" (buffered: [`DefinitionLog::commit`] makes it durable).
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        let mut pending = self.pending.lock();
        frame(&mut pending.buffer, DELETE, key, &[])?;
        pending.entries += 1;
        pending.live -= 1;
        Ok(())
    }

    /// Writes what was appended and returns once it is synced. Blocks: never call it while
    /// holding the topology's lock (other declarers could not join the sync).
    pub fn commit(&self, syncer: &Syncer) -> io::Result<()> {
        self.write(syncer)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        syncer.notify(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("the group commit stopped")))
    }

    /// Writes what was appended (by anyone) and hands the file to the group commit, without
    /// waiting: a callback [`Syncer::notify`] registers after this returns is told once what was
    /// appended before the call is on disk. A connection that answers its declarations after the
    /// sync calls this once per batch of input.
    pub fn write(&self, syncer: &Syncer) -> io::Result<()> {
        let mut current = self.current.lock();
        self.write_pending(&mut current)?;
        // Even with nothing left to write (another commit took the buffer), the file is handed
        // over: that commit's write is done (it held `current`), its sync may not be.
        syncer.dirty([Arc::clone(&current.file)]);
        Ok(())
    }

    /// Writes the buffer at the end of the file (and into a running compaction's tail). A failed
    /// write leaves the entries buffered, to be written again at the same place.
    fn write_pending(&self, current: &mut MutexGuard<'_, Current>) -> io::Result<()> {
        let buffer = std::mem::take(&mut self.pending.lock().buffer);
        if buffer.is_empty() {
            return Ok(());
        }
        if let Err(e) = current.file.write_all_at(&buffer, current.len) {
            let mut pending = self.pending.lock();
            let later = std::mem::replace(&mut pending.buffer, buffer);
            pending.buffer.extend_from_slice(&later);
            return Err(e);
        }
        current.len += buffer.len() as u64;
        if let Some(tail) = &mut current.tail {
            tail.bytes.extend_from_slice(&buffer);
        }
        Ok(())
    }

    /// (entries, live records, bytes) in the file and the buffer.
    pub fn stats(&self) -> (u64, u64, u64) {
        let len = self.current.lock().len;
        let pending = self.pending.lock();
        let live = u64::try_from(pending.live).unwrap_or(0);
        (pending.entries, live, len + pending.buffer.len() as u64)
    }

    /// Whether the log is worth compacting: over 1 MiB, with dead entries more than twice the
    /// live ones.
    pub fn wants_compaction(&self) -> bool {
        let (entries, live, bytes) = self.stats();
        bytes > 1024 * 1024 && entries > live.saturating_mul(3)
    }
}

/// Appends one framed entry to `out`.
fn frame(out: &mut Vec<u8>, op: u8, key: &[u8], record: &[u8]) -> io::Result<()> {
    let body = 1 + 4 + key.len() + record.len();
    if body > MAX_ENTRY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "definition larger than the log accepts",
        ));
    }
    out.reserve(FRAME + body);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(record);
    let crc = crc32c::crc32c(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

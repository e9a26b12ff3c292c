//! One queue's message log: records appended to segment files, settled by appending to a companion
//! acks file, whole segments deleted once every record in them is settled. Knows bytes and files;
//! never AMQP; needs no lock of its own (its queue's mutex guards it); never fsyncs (the group commit
//! does), except a compaction job, outside that lock.
//!
//! # Files
//!
//! A directory per queue holds, per segment id (1, 2, …, never reused):
//!
//! - `msgs.{id:010}`: records, back to back from offset 0 (format in `log/record.rs`):
//!   `u32 length | u32 crc32c(length ++ payload) | payload`, big endian. Because the checksum
//!   covers the length, a zero-filled tail never reads as a record. Payloads are at most 512 MiB.
//!   A record is addressed by [`Position`] `{segment, offset}`.
//! - `acks.{id:010}`: 8-byte entries (format in `log/acks.rs`) `u32 offset | u8 kind | u24 check`, kind
//!   1 = settled (acked or dropped), 2 = delivered (so a recovered copy is marked redelivered).
//!
//! Any other file in the directory is ignored.
//!
//! The log holds *handles* on its files (`store/files.rs`), never descriptors of its own: a
//! handle opens its file when it is used and the store's descriptor cache closes it when idle,
//! so an idle log holds no descriptor.
//!
//! # Writing
//!
//! Appends go to the end of the newest segment only. A new segment starts when the record would
//! take the current one past `segment_size` (a record larger than that gets a segment of its
//! own); offsets stay below 4 GiB. `settle` and `mark_delivered` each add one entry to the
//! segment's acks file.
//!
//! Writes are *buffered*: records (up to [`COPY_LIMIT`] each) and acks entries gather in memory
//! and reach their files in one `pwrite` per file at [`Log::flush`] (`log/flush.rs`), or when
//! [`PENDING_LIMIT`] bytes have gathered, or before anything that reads the files (compaction,
//! rolling to a new segment); [`Log::read`] (`log/read.rs`, with the other reads) serves a record
//! still in the buffer from it. The owner flushes once per batch of operations (a queue: once per
//! lock hold, or once per read of a publishing connection), so a thousand publishes cost one
//! system call, not a thousand.
//! Nothing here is synced: every file written to since the last [`Log::take_dirty`] (segment
//! files, acks files, and the directories whose entries changed when a file was created) is
//! handed back by it, once, for the caller to `sync_data`; `take_dirty` flushes first. So a write
//! is durable once the `take_dirty` that follows it has been synced; acks being unsynced means a
//! crash may bring back a settled message (at-least-once), never lose an unsettled one.
//!
//! # Space
//!
//! RAM per segment: its record count, settled count, valid size, settled bytes and acks length;
//! nothing per message. When the last record of a sealed segment (not the one being appended to)
//! is settled, its `msgs` file and then its `acks` file are deleted (the final settle is not
//! written). A segment sealed while already fully settled is deleted at once.
//!
//! A sealed segment that is mostly settled but kept alive by a few records gives its settled
//! bytes back by *hole punching*, in place ([`Log::compact`], `log/compact.rs`): positions stay
//! valid and nothing is copied. To know when, `settle` reads the settled record's 8-byte header
//! (one `pread` through the segment's handle, of a page that is usually still cached) and adds its
//! length to the segment's settled bytes. Before punching, compaction appends to the acks file a
//! *punched* pair of entries naming a range of settled records and syncs it, so that recovery can
//! jump over the range whether or not the holes (which read as zeros) were made. The work runs in
//! steps ([`Log::start_compaction`], [`CompactionJob::plan`], [`Log::record_punches`],
//! [`CompactionJob::sync_and_punch`]) so that an owner holding the log behind a lock holds it
//! only for the two short `Log` ones: no walk, fsync or punch under it.
//!
//! # Recovery ([`Log::open`])
//!
//! Lists the directory, reads each segment's acks file, and scans every segment in id order,
//! checking each record's length bound and checksum. At the first bad or incomplete record of the
//! *last* segment, the file is cut there (`truncated_bytes`). In an earlier segment, reading stops
//! there: if only zeros follow (a lost write) the segment is otherwise normal; if not, it is
//! *damaged*: warned about, its readable records served, and its files kept (never deleted
//! automatically) for inspection. Acks entries that are partial, fail their check, or name no
//! record start are ignored. A punched range (see Space) is jumped over when the scan reaches its
//! start, and nowhere else. Fully settled (or empty) segments are deleted; acks files without
//! their segment are deleted. Live records come back in log order with their `delivered` flag.
//! Finally `open` creates a fresh, empty segment (id above every id seen) for the appends: no record
//! is ever written after recovered data, so an acks entry that survived a crash its record did not
//! can never match a newer record; and the newest segment is always the one that was being
//! appended to, so a damaged older segment is never mistaken for a torn tail and cut.

mod acks;
mod compact;
mod flush;
mod read;
mod reader;
mod record;
mod recovery;

pub use compact::{CompactionJob, Plan};
pub use reader::{Live, LiveRecord};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::files::{Files, Handle, Mode};
use acks::Kind;
use record::{HEADER_LEN, MAX_PAYLOAD};

/// Where a record is: its segment and its byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// What the caller's `decide` said to keep beside it ([`Keep`]).
    pub meta: u64,
}

/// What [`Log::open_with`] keeps of a live record found by recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The payload, and a number of the caller's (returned as [`Recovered::meta`]).
    Payload(u64),
    /// Nothing: the record stays live in the log, not returned (the caller keeps what it needs
    /// of it, e.g. a count, and reads it later with [`Log::read_live`]).
    Leave,
    /// Settle it: the caller does not want it back.
    Drop,
}

/// What [`Log::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records neither acked nor deleted, in append order.
    pub records: Vec<Recovered>,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Segments kept (not counting the fresh one `open` starts for appends).
    pub segments: usize,
}

/// Payloads up to this size are buffered; larger ones are written at once, header then payload.
const COPY_LIMIT: usize = 1 << 20;

/// Buffered bytes (records, or acks entries) past which they are written without waiting for
/// [`Log::flush`].
const PENDING_LIMIT: usize = 256 * 1024;

/// What the log knows of one segment.
#[derive(Debug, Clone)]
struct Segment {
    records: u32,
    settled: u32,
    /// Bytes of valid records (for the active segment: where the next one goes).
    size: u64,
    /// Bytes (headers included) of its settled records, punched or not.
    settled_bytes: u64,
    /// `settled_bytes` when it was last compacted (recovery: the bytes of its punched ranges).
    compacted_bytes: u64,
    /// Where the next acks entry goes.
    acks_len: u64,
    /// Recovery found a bad record before its end: its files are never deleted automatically.
    damaged: bool,
    /// What recovery found settled or delivered among its live records (`None`: nothing, as
    /// for every segment written since): [`Log::read_live`] skips and flags by it.
    marks: Option<Box<Marks>>,
    /// Ranges `(start, end)` of settled records that compaction may have punched (they read as
    /// zeros): [`Log::read_live`] jumps over them.
    punched: Vec<(u32, u32)>,
    /// Its files, opened when used and closed when idle by the store's [`Files`].
    msgs: Arc<Handle>,
    acks: Arc<Handle>,
}

impl Segment {
    fn new(files: &Files, dir: &Path, id: u32, msgs: Option<Arc<Handle>>) -> Segment {
        Segment {
            records: 0,
            settled: 0,
            size: 0,
            settled_bytes: 0,
            compacted_bytes: 0,
            acks_len: 0,
            damaged: false,
            marks: None,
            punched: Vec::new(),
            msgs: msgs.unwrap_or_else(|| files.handle(msgs_path(dir, id), Mode::ReadWrite)),
            acks: files.handle(acks_path(dir, id), Mode::Write),
        }
    }
}

/// What recovery found in a segment's acks file about records after its first live one: the
/// records settled (acked before the restart, or dropped by the caller's `decide`) and those
/// delivered, sorted. Bounded by what was unsettled or out of order at the crash, not by the
/// backlog.
#[derive(Debug, Clone, Default)]
struct Marks {
    /// The first live record's offset (the segment's end if none is readable): every record
    /// before it is settled or dropped, so a reader entering the segment starts there.
    first_live: u32,
    settled: Vec<u32>,
    delivered: Vec<u32>,
}

/// A file written since the last [`Log::take_dirty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dirty {
    Msgs(u32),
    Acks(u32),
    Dir,
    ParentDir,
}

/// One queue's log.
#[derive(Debug)]
pub struct Log {
    /// Tells this log from any other, even one later opened in the same directory (a
    /// [`CompactionJob`] is applied only to the log it was taken from).
    instance: u64,
    dir: PathBuf,
    segment_size: u64,
    segments: BTreeMap<u32, Segment>,
    /// The segment appended to, and its file.
    active: Option<(u32, Arc<Handle>)>,
    next_id: u64,
    /// Records appended to the active segment but not yet written, from offset `pending_at`.
    pending: Vec<u8>,
    pending_at: u64,
    /// Acks entries not yet written: (segment, offset in its acks file, entries).
    pending_acks: Vec<(u32, u64, Vec<u8>)>,
    /// Where descriptors come from (and go back to when idle).
    files: Files,
    /// The log's directory, synced when an entry in it changed.
    dir_handle: Arc<Handle>,
    dirty: Vec<(Dirty, Arc<Handle>)>,
    /// Some sealed segment may have become worth compacting since the last [`Log::compact`].
    compaction_due: bool,
    /// How holes are punched (a seam for tests); `None` once the filesystem said it cannot.
    punch: Option<compact::Punch>,
}

pub(crate) fn msgs_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("msgs.{id:010}"))
}

pub(crate) fn acks_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("acks.{id:010}"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl Log {
    /// Opens (creating if missing) the log in `dir` and recovers it, with every live record's
    /// payload.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<(Log, Recovery)> {
        Log::open_with(dir, segment_size, &mut |_, _| Keep::Payload(0))
    }

    /// [`Log::open_in`] with descriptors of its own (no limit shared with other logs).
    pub fn open_with(
        dir: &Path,
        segment_size: u64,
        decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
    ) -> io::Result<(Log, Recovery)> {
        Log::open_in(&Files::unswept(usize::MAX), dir, segment_size, decide)
    }

    /// Like [`Log::open`], with its descriptors from `files`, and `decide` sees each live
    /// record's position and payload during the scan and says whether to return it
    /// ([`Keep::Payload`]), leave it in the log unreturned ([`Keep::Leave`], so that a huge log
    /// is recovered without holding anything per record in memory), or settle it
    /// ([`Keep::Drop`]). Out of descriptors, the error says so.
    pub fn open_in(
        files: &Files,
        dir: &Path,
        segment_size: u64,
        decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
    ) -> io::Result<(Log, Recovery)> {
        Log::open_described(files, dir, segment_size, decide).map_err(|e| files.describe(e))
    }

    fn open_described(
        files: &Files,
        dir: &Path,
        segment_size: u64,
        decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
    ) -> io::Result<(Log, Recovery)> {
        let started = Instant::now();
        let created = !dir.is_dir();
        std::fs::create_dir_all(dir)?;
        let mut state = recovery::recover(dir, files, decide)?;
        let dropped = std::mem::take(&mut state.dropped);
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let mut log = Log {
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            dir: dir.to_path_buf(),
            segment_size: segment_size.min(u64::from(u32::MAX)),
            segments: state.segments,
            active: None,
            next_id: u64::from(state.max_id) + 1,
            pending: Vec::new(),
            pending_at: 0,
            pending_acks: Vec::new(),
            files: files.clone(),
            dir_handle: files.handle(dir.to_path_buf(), Mode::Directory),
            dirty: Vec::new(),
            compaction_due: false,
            punch: Some(compact::punch_hole),
        };
        if created {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let parent = files.handle(parent.to_path_buf(), Mode::Directory);
                parent.mark_dirty();
                log.mark_dirty(Dirty::ParentDir, parent);
            }
        }
        // A fresh segment, created now: appends never follow recovered data (an acks entry that
        // outlived its record in a crash must match nothing new), and the newest file is always
        // the one appended to, so only it is ever cut at the next recovery.
        let segments = log.segments.len();
        log.roll()?;
        for position in dropped {
            log.settle(position)?;
        }
        log.compaction_due |= log.segments.values().any(Segment::wants_compaction);
        let recovery = Recovery {
            records: state.records,
            truncated_bytes: state.truncated_bytes,
            segments,
        };
        tracing::info!(
            dir = %dir.display(),
            records = recovery.records.len(),
            segments = recovery.segments,
            truncated_bytes = recovery.truncated_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "queue log recovered"
        );
        Ok((log, recovery))
    }

    /// Appends one record (written, not yet synced).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<Position> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_PAYLOAD)
            .ok_or_else(|| invalid("queue log: record too large"))?;
        let record_len = HEADER_LEN + u64::from(len);
        let fits = self.active_segment().is_some_and(|segment| {
            segment.size == 0 || segment.size + record_len <= self.segment_size
        });
        if !fits {
            self.roll()?;
        }
        let (id, file) = self
            .active
            .clone()
            .ok_or_else(|| io::Error::other("queue log: no active segment"))?;
        let offset = self.active_segment().map_or(0, |segment| segment.size);
        let offset32 = u32::try_from(offset)
            .map_err(|_| io::Error::other("queue log: segment offset out of range"))?;
        let header = record::header(len, payload);
        if payload.len() <= COPY_LIMIT {
            if self.pending.is_empty() {
                self.pending_at = offset;
            }
            self.pending.extend_from_slice(&header);
            self.pending.extend_from_slice(payload);
        } else {
            self.flush_records()?;
            let written = file
                .write_all_at(&header, offset)
                .and_then(|()| file.write_all_at(payload, offset + HEADER_LEN));
            if let Err(e) = written {
                // Best effort: leave no partial record behind (the next append overwrites it).
                let _ = file.set_len(offset);
                return Err(e);
            }
            self.mark_dirty(Dirty::Msgs(id), file);
        }
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.size = offset + record_len;
            segment.records += 1;
        }
        if self.pending.len() >= PENDING_LIMIT {
            self.flush_records()?;
        }
        Ok(Position {
            segment: id,
            offset: offset32,
        })
    }

    /// Records that a record was settled (acked, or dropped); whole segments go when all their
    /// records are settled. Each record must be settled at most once (counts are per segment).
    pub fn settle(&mut self, position: Position) -> io::Result<()> {
        self.settle_sized(position, None)
    }

    /// Like [`Log::settle`], for a caller that knows the record's payload length (the message
    /// it holds): the record's header is then not read back to count the settled bytes.
    pub fn settle_sized(&mut self, position: Position, payload_len: Option<u64>) -> io::Result<()> {
        let id = position.segment;
        let is_active = self
            .active
            .as_ref()
            .is_some_and(|(active, _)| *active == id);
        let Some(segment) = self.segments.get(&id) else {
            tracing::warn!(
                segment = id,
                offset = position.offset,
                "queue log: settling a record of no segment"
            );
            return Ok(());
        };
        if segment.settled >= segment.records {
            tracing::warn!(
                segment = id,
                offset = position.offset,
                "queue log: more settles than records"
            );
            return Ok(());
        }
        if segment.settled + 1 == segment.records && !is_active && !segment.damaged {
            match self.delete_segment(id) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(segment = id, error = %e, "queue log: deleting a settled segment failed")
                }
            }
        }
        let record_len = match payload_len {
            Some(len) => HEADER_LEN + len,
            None => self.record_len(position),
        };
        self.write_ack(id, Kind::Settled, position.offset)?;
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.settled += 1;
            segment.settled_bytes += record_len;
            self.compaction_due |= !is_active && segment.wants_compaction();
        }
        Ok(())
    }

    /// Records that a record was delivered to a consumer (so a recovered copy is redelivered).
    pub fn mark_delivered(&mut self, position: Position) -> io::Result<()> {
        if !self.segments.contains_key(&position.segment) {
            tracing::warn!(
                segment = position.segment,
                offset = position.offset,
                "queue log: delivery of a record of no segment"
            );
            return Ok(());
        }
        self.write_ack(position.segment, Kind::Delivered, position.offset)
    }

    /// Deletes the whole log (the queue was deleted).
    pub fn destroy(mut self) -> io::Result<()> {
        self.pending.clear();
        self.pending_acks.clear();
        std::fs::remove_dir_all(&self.dir)
    }

    fn active_segment(&self) -> Option<&Segment> {
        self.active
            .as_ref()
            .and_then(|(id, _)| self.segments.get(id))
    }

    /// Seals the active segment (deleting it if fully settled) and starts a new one.
    fn roll(&mut self) -> io::Result<()> {
        self.flush_records()?;
        let id = u32::try_from(self.next_id)
            .map_err(|_| io::Error::other("queue log: segment ids exhausted"))?;
        let file = self.files.create_new(msgs_path(&self.dir, id))?;
        self.next_id += 1;
        if let Some((old, _)) = self.active.take() {
            let done = self
                .segments
                .get(&old)
                .is_some_and(|s| s.settled == s.records && !s.damaged);
            if done {
                if let Err(e) = self.delete_segment(old) {
                    tracing::warn!(segment = old, error = %e, "queue log: deleting a settled segment failed");
                }
            }
            self.compaction_due |= self
                .segments
                .get(&old)
                .is_some_and(Segment::wants_compaction);
        }
        let segment = Segment::new(&self.files, &self.dir, id, Some(Arc::clone(&file)));
        self.segments.insert(id, segment);
        self.active = Some((id, file));
        self.mark_dir_dirty();
        Ok(())
    }

    /// Deletes a segment's files (`msgs` first: an `acks` file alone is deleted at recovery) and
    /// forgets it.
    fn delete_segment(&mut self, id: u32) -> io::Result<()> {
        recovery::remove_if_present(&msgs_path(&self.dir, id))?;
        // Its handles go with it: their descriptors (if open) are closed.
        self.segments.remove(&id);
        self.dirty
            .retain(|(dirty, _)| *dirty != Dirty::Msgs(id) && *dirty != Dirty::Acks(id));
        self.pending_acks.retain(|(segment, _, _)| *segment != id);
        if let Err(e) = recovery::remove_if_present(&acks_path(&self.dir, id)) {
            tracing::warn!(segment = id, error = %e, "queue log: deleting an acks file failed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

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
//! Any other file in the directory is ignored. The directory itself is created with the first
//! segment: a log never appended to has no files at all (and no directory), so an idle durable
//! queue costs nothing on disk and nothing to recover.
//!
//! The log holds *handles* on its segments' files (`store/files.rs`), never descriptors of its
//! own: a handle opens its file when it is used and the store's descriptor cache closes it when
//! idle, so an idle log holds no descriptor. The handles share the log's directory path and keep
//! only their file names; the directory's own handle (synced after a file was created in it) is
//! made when needed and given to the group commit with the dirty files, not kept.
//!
//! # Writing
//!
//! Appends go to the end of the newest segment only. A new segment starts (its file created) at
//! the first append after [`Log::open`], and when the record would take the current one past
//! `segment_size` (a record larger than that gets a segment of its own); offsets stay below
//! 4 GiB. `settle` and `mark_delivered` each add one entry to the
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
//! RAM per segment: its record count, settled count, valid size, settled bytes and acks length,
//! in a list sorted by id (segments are added at its end and mostly removed from its front);
//! nothing per message. An empty log holds no segment. When the last record of a sealed segment (not the one being appended to)
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
//! A missing directory is an empty log. `open` creates no file: the first append starts a fresh
//! segment (id above every id seen, acks files without their segment included), so no record is
//! ever written after recovered data, and an acks entry that survived a crash its record did not
//! can never match a newer record (an id is used again only after a recovery found no file of
//! it at all: their removals came before the new segment's creation, which the group commit
//! makes durable with the directory before any of its records counts); and the
//! newest segment is always the one that was being appended to (or, if nothing was appended
//! since, the newest one the previous recovery saw, already cut to its valid records), so a
//! damaged older segment is never mistaken for a torn tail and cut. (A log holding a damaged
//! segment starts its fresh segment at `open`, so that one newer file is always there even when
//! every segment after the damaged one is settled and deleted.)

mod acks;
mod compact;
mod flush;
mod read;
mod reader;
mod record;
mod recovery;

pub use compact::{CompactionJob, Plan};
pub use reader::{Live, LiveRecord};

use std::collections::VecDeque;
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
    id: u32,
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
    fn new(files: &Files, dir: &Arc<Path>, id: u32, msgs: Option<Arc<Handle>>) -> Segment {
        Segment {
            id,
            records: 0,
            settled: 0,
            size: 0,
            settled_bytes: 0,
            compacted_bytes: 0,
            acks_len: 0,
            damaged: false,
            marks: None,
            punched: Vec::new(),
            msgs: msgs.unwrap_or_else(|| files.handle_in(dir, &msgs_name(id), Mode::ReadWrite)),
            acks: files.handle_in(dir, &acks_name(id), Mode::Write),
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
    /// Shared with the handles of its files.
    dir: Arc<Path>,
    /// Whether `dir` is known to exist (else the first segment creates it).
    dir_exists: bool,
    /// At most `u32::MAX` (offsets are `u32`).
    segment_size: u32,
    /// Sorted by id: a new one goes at the end (see [`Log::segment`]).
    segments: VecDeque<Segment>,
    /// The segment appended to, and its file (`None` until the first append after `open`, and
    /// after a failed write sealed it).
    active: Option<(u32, Arc<Handle>)>,
    next_id: u64,
    /// Made by the first write: a log never written to (most of 100,000 idle queues') has none.
    writes: Option<Box<Writes>>,
    /// Where descriptors come from (and go back to when idle).
    files: Files,
    /// Some sealed segment may have become worth compacting since the last [`Log::compact`].
    compaction_due: bool,
    /// How holes are punched (a seam for tests); `None` once the filesystem said it cannot.
    punch: Option<compact::Punch>,
}

/// What a log is writing: buffered records and acks entries, and the files to sync.
#[derive(Debug, Default)]
struct Writes {
    /// Records appended to the active segment but not yet written, from offset `pending_at`.
    pending: Vec<u8>,
    pending_at: u64,
    /// Acks entries not yet written: (segment, offset in its acks file, entries).
    pending_acks: Vec<(u32, u64, Vec<u8>)>,
    /// Files (and directories) written or changed since the last [`Log::take_dirty`].
    dirty: Vec<(Dirty, Arc<Handle>)>,
}

fn msgs_name(id: u32) -> String {
    format!("msgs.{id:010}")
}

fn acks_name(id: u32) -> String {
    format!("acks.{id:010}")
}

pub(crate) fn msgs_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(msgs_name(id))
}

pub(crate) fn acks_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(acks_name(id))
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
        let dir: Arc<Path> = Arc::from(dir);
        let mut state = recovery::recover(&dir, files, decide)?;
        let dropped = std::mem::take(&mut state.dropped);
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let mut log = Log {
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            dir: Arc::clone(&dir),
            dir_exists: state.dir_exists,
            segment_size: u32::try_from(segment_size).unwrap_or(u32::MAX),
            segments: state.segments,
            active: None,
            next_id: u64::from(state.max_id) + 1,
            writes: None,
            files: files.clone(),
            compaction_due: false,
            punch: Some(compact::punch_hole),
        };
        // No segment is started here: the first append starts one, above every id seen, so
        // appends never follow recovered data (an acks entry that outlived its record in a crash
        // must match nothing new), and an empty log stays without files.
        let segments = log.segments.len();
        if log.holds_damage() {
            // Only the newest segment file is ever cut as a torn tail: a damaged one must never
            // become the newest once the segments after it are settled and deleted.
            log.roll()?;
        }
        for position in dropped {
            log.settle(position)?;
        }
        log.compaction_due |= log.segments.iter().any(Segment::wants_compaction);
        let recovery = Recovery {
            records: state.records,
            truncated_bytes: state.truncated_bytes,
            segments,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if recovery.segments == 0 {
            // Most logs, at 100,000 idle queues: not worth a line each.
            tracing::debug!(dir = %dir.display(), elapsed_ms, "queue log recovered: empty");
        } else {
            tracing::info!(
                dir = %dir.display(),
                records = recovery.records.len(),
                segments = recovery.segments,
                truncated_bytes = recovery.truncated_bytes,
                elapsed_ms,
                "queue log recovered"
            );
        }
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
            segment.size == 0 || segment.size + record_len <= u64::from(self.segment_size)
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
            let writes = self.writes();
            if writes.pending.is_empty() {
                writes.pending_at = offset;
            }
            writes.pending.extend_from_slice(&header);
            writes.pending.extend_from_slice(payload);
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
        if let Some(segment) = self.segment_mut(id) {
            segment.size = offset + record_len;
            segment.records += 1;
        }
        if self.writes().pending.len() >= PENDING_LIMIT {
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
        let Some(segment) = self.segment(id) else {
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
        if let Some(segment) = self.segment_mut(id) {
            segment.settled += 1;
            segment.settled_bytes += record_len;
            self.compaction_due |= !is_active && segment.wants_compaction();
        }
        Ok(())
    }

    /// Records that a record was delivered to a consumer (so a recovered copy is redelivered).
    pub fn mark_delivered(&mut self, position: Position) -> io::Result<()> {
        if self.segment(position.segment).is_none() {
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
        self.writes = None;
        match std::fs::remove_dir_all(&self.dir) {
            // Never appended to: it has no directory.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The write buffers, made at the first write.
    fn writes(&mut self) -> &mut Writes {
        self.writes.get_or_insert_with(Box::default)
    }

    /// Records buffered and not yet written (empty if none).
    fn pending(&self) -> &[u8] {
        self.writes.as_ref().map_or(&[], |w| &w.pending)
    }

    /// The segment `id`, if the log has it (a binary search: there are few, sorted).
    fn segment(&self, id: u32) -> Option<&Segment> {
        let at = self.segments.binary_search_by_key(&id, |s| s.id).ok()?;
        self.segments.get(at)
    }

    fn segment_mut(&mut self, id: u32) -> Option<&mut Segment> {
        let at = self.segments.binary_search_by_key(&id, |s| s.id).ok()?;
        self.segments.get_mut(at)
    }

    fn active_segment(&self) -> Option<&Segment> {
        self.active.as_ref().and_then(|(id, _)| self.segment(*id))
    }

    /// Seals the active segment (deleting it if fully settled) and starts a new one: its file
    /// created (and the log's directory, the first time), the directory marked to be synced.
    fn roll(&mut self) -> io::Result<()> {
        self.flush_records()?;
        let id = u32::try_from(self.next_id)
            .map_err(|_| io::Error::other("queue log: segment ids exhausted"))?;
        self.create_dir()?;
        let file = self.files.create_new_in(&self.dir, &msgs_name(id))?;
        self.next_id += 1;
        self.seal();
        let segment = Segment::new(&self.files, &self.dir, id, Some(Arc::clone(&file)));
        if self.segments.capacity() == 0 {
            // Most logs never have more than one segment at a time.
            self.segments.reserve_exact(1);
        }
        debug_assert!(self.segments.back().is_none_or(|last| last.id < id));
        self.segments.push_back(segment);
        self.active = Some((id, file));
        self.mark_dir_dirty();
        Ok(())
    }

    /// Whether some segment is damaged (see Recovery): the log then always has an active
    /// segment, newer than it.
    fn holds_damage(&self) -> bool {
        self.segments.iter().any(|s| s.damaged)
    }

    /// Ends appends to the active segment (the next append starts a new one); deletes it if
    /// everything in it is settled.
    fn seal(&mut self) {
        let Some((old, _)) = self.active.take() else {
            return;
        };
        let done = self
            .segment(old)
            .is_some_and(|s| s.settled == s.records && !s.damaged);
        if done {
            if let Err(e) = self.delete_segment(old) {
                tracing::warn!(segment = old, error = %e, "queue log: deleting a settled segment failed");
            }
        }
        self.compaction_due |= self.segment(old).is_some_and(Segment::wants_compaction);
    }

    /// Creates the log's directory if it was not there (a log never appended to has none); its
    /// parent is synced with the next dirty files.
    fn create_dir(&mut self) -> io::Result<()> {
        if self.dir_exists {
            return Ok(());
        }
        let created = !self.dir.is_dir();
        std::fs::create_dir_all(&self.dir)?;
        self.dir_exists = true;
        if created {
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let parent = self.files.handle(parent.to_path_buf(), Mode::Directory);
                parent.mark_dirty();
                self.mark_dirty(Dirty::ParentDir, parent);
            }
        }
        Ok(())
    }

    /// Deletes a segment's files (`msgs` first: an `acks` file alone is deleted at recovery) and
    /// forgets it.
    fn delete_segment(&mut self, id: u32) -> io::Result<()> {
        recovery::remove_if_present(&msgs_path(&self.dir, id))?;
        // Its handles go with it: their descriptors (if open) are closed.
        if let Ok(at) = self.segments.binary_search_by_key(&id, |s| s.id) {
            self.segments.remove(at);
        }
        if let Some(writes) = &mut self.writes {
            writes
                .dirty
                .retain(|(dirty, _)| *dirty != Dirty::Msgs(id) && *dirty != Dirty::Acks(id));
            writes.pending_acks.retain(|(segment, _, _)| *segment != id);
        }
        if let Err(e) = recovery::remove_if_present(&acks_path(&self.dir, id)) {
            tracing::warn!(segment = id, error = %e, "queue log: deleting an acks file failed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The on-disk log of one stream queue: an append-only, segmented, replayable log. Reading
//! never removes a record; retention deletes whole segments, oldest first.
//!
//! Owns the stream's directory and the files in it, and nothing else: a record's `payload` is
//! opaque here (the broker encodes the message into it), and so is its `filter` (a stream
//! filter value). Never knows AMQP, never fsyncs (durability is the caller's group commit:
//! [`StreamLog::flush`] returns the files to sync), and never trusts a length read from a file
//! without a bound.
//!
//! Format: segment files `{first_offset:020}.seg`, each `WRNSTRM1` then records
//!
//! ```text
//! body_len: u32 BE   HEADER..=MAX_RECORD
//! crc:      u32 BE   CRC-32C of the body
//! body:     offset u64 BE | timestamp_ms u64 BE | flags u8 | filter_len u16 BE | filter | payload
//! ```
//!
//! Offsets are consecutive within a segment; flags bit 0 (CHUNK_START) marks the first record
//! appended after a flush. An empty filter is no filter.
//!
//! Memory: per segment, never per message: its range of offsets, newest timestamp, sizes and a
//! sparse index (one entry every [`INDEX_STRIDE`] bytes, plus the first record). A reader takes
//! a [`ReadPlan`] under the broker's lock and reads outside it: bytes below a snapshot's
//! readable end never change, and a segment deleted under a reader stays readable through the
//! plan's open file.
//!
//! Recovery ([`StreamLog::open`]) reads every segment once. A torn or damaged record cuts the
//! last segment there (a crash mid-write loses only records whose sync never completed, so never
//! a confirmed one); in an older segment the records before it are kept and the offsets jump
//! to the next segment's.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod read;
mod recovery;
#[cfg(test)]
mod tests;

use read::*;
use recovery::*;

const MAGIC: &[u8; 8] = b"WRNSTRM1";
/// Length and CRC before each record's body.
const FRAME: usize = 8;
/// Offset, timestamp, flags and filter length: the smallest body.
const HEADER: usize = 19;
/// The largest body accepted (a longer length is a torn or corrupt record).
const MAX_RECORD: usize = 1 << 30;
/// Flags bit 0: the first record of a flush.
const CHUNK_START: u8 = 1;
/// Bytes of segment between two sparse-index entries.
pub const INDEX_STRIDE: u64 = 256 << 10;
/// How much of a segment recovery reads per pread.
const SCAN_BYTES: usize = 1 << 20;

/// The log of one stream queue; the broker keeps it under its stream's mutex.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    max_segment_bytes: u64,
    /// Oldest first; the last is the active one (appended to), the others are sealed.
    segments: VecDeque<Segment>,
    first_offset: u64,
    next_offset: u64,
    /// Every offset below it is written (flushed) and readable.
    readable_end: u64,
    last_chunk_start: Option<u64>,
    /// Sum of the segments' file sizes.
    bytes: u64,
    /// Records appended since the last flush, encoded as they go to the file.
    pending: Vec<u8>,
    /// Directories to hand to the next flush's sync: a segment file was created in `dir` (and,
    /// for the first one, `open` created `dir` in its parent).
    dir_dirty: bool,
    parent_dirty: bool,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Its first record's offset (== `next_offset` while it has none).
    first_offset: u64,
    next_offset: u64,
    /// The newest timestamp of its records (retention by age).
    newest: u64,
    /// The end of its last whole record: where reads stop and appends go.
    end: u64,
    /// Its file's size (past `end` only for an older segment with a damaged tail).
    bytes: u64,
    index: Vec<IndexEntry>,
}

/// A record of the sparse index.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    offset: u64,
    position: u64,
    timestamp: u64,
}

/// A snapshot for reading one segment outside the broker's lock, from a position on, with the
/// bytes it read ahead and has not visited yet.
#[derive(Debug)]
pub struct ReadPlan {
    file: Arc<File>,
    /// Where the next record to visit starts in the file.
    position: u64,
    /// The offset of the record at `position`.
    next: u64,
    /// The segment's readable end when the plan was made.
    end: u64,
    /// The segment will not grow: the next records are in a later one.
    sealed: bool,
    /// Bytes read ahead: `buf[at..]` are the file's bytes from `position` on.
    buf: Vec<u8>,
    at: usize,
}

/// One record as read, borrowed from the reader's buffer.
#[derive(Debug)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp: u64,
    pub chunk_start: bool,
    pub filter: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// What [`StreamLog::retain`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub segments: usize,
    /// Offsets deleted (how far `first_offset` moved).
    pub messages: u64,
    pub bytes: u64,
}

impl StreamLog {
    /// Opens (or creates) the stream in `dir`: recovery scans every segment once, cuts a torn
    /// tail of the last one (truncate the file), builds the in-memory sparse index.
    /// `max_segment_bytes`: roll to a new segment when the active one would pass it (a segment
    /// always takes at least one record).
    pub fn open(dir: &Path, max_segment_bytes: u64) -> io::Result<StreamLog> {
        let created = !dir.exists();
        fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if let Some(first) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_name)
            {
                names.push((first, path));
            }
        }
        names.sort();
        // The offsets already given out: the highest name, whatever its file holds.
        let mut next_offset = names.last().map_or(0, |(first, _)| *first);
        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut last_chunk_start = None;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let after = segments.back().map_or(0, |s| s.next_offset);
            let Some((segment, chunk_start)) = recover(path, first, after, last)? else {
                continue;
            };
            if segment.first_offset < after {
                tracing::warn!(file = %segment.path.display(), "stream segment: its offsets go back; skipping it");
                set_aside(&segment.path)?;
                continue;
            }
            last_chunk_start = chunk_start.or(last_chunk_start);
            segments.push_back(segment);
        }
        if let Some(active) = segments.back_mut() {
            next_offset = next_offset.max(active.next_offset);
            // An older segment left last (the ones after it were set aside): appends go to its
            // end, so its damaged tail goes.
            if active.end < active.bytes {
                tracing::warn!(file = %active.path.display(), at = active.end, "stream segment: cutting the damaged tail of the new last segment");
                active.file.set_len(active.end)?;
                active.bytes = active.end;
            }
        }
        let first_offset = segments.front().map_or(next_offset, |s| s.first_offset);
        Ok(StreamLog {
            dir: dir.to_path_buf(),
            max_segment_bytes,
            bytes: segments.iter().map(|s| s.bytes).sum(),
            segments,
            first_offset,
            next_offset,
            readable_end: next_offset,
            last_chunk_start,
            pending: Vec::new(),
            dir_dirty: false,
            parent_dirty: created,
        })
    }

    /// Appends one record (buffered in memory until [`StreamLog::flush`]); returns its offset.
    /// `filter`: at most `u16::MAX` bytes (longer: an `InvalidInput` error); empty is none.
    pub fn append(
        &mut self,
        timestamp_ms: u64,
        filter: Option<&[u8]>,
        payload: &[u8],
    ) -> io::Result<u64> {
        let filter = filter.unwrap_or_default();
        let filter_len = u16::try_from(filter.len())
            .map_err(|_| invalid_input("stream filter longer than 65535 bytes"))?;
        let body_len = HEADER + filter.len() + payload.len();
        if body_len > MAX_RECORD {
            return Err(invalid_input("stream record too large"));
        }
        let offset = self.next_offset;
        let flags = if self.pending.is_empty() {
            CHUNK_START
        } else {
            0
        };
        let start = self.pending.len();
        self.pending.reserve(FRAME + body_len);
        self.pending
            .extend_from_slice(&(body_len as u32).to_be_bytes());
        self.pending.extend_from_slice(&[0; 4]);
        self.pending.extend_from_slice(&offset.to_be_bytes());
        self.pending.extend_from_slice(&timestamp_ms.to_be_bytes());
        self.pending.push(flags);
        self.pending.extend_from_slice(&filter_len.to_be_bytes());
        self.pending.extend_from_slice(filter);
        self.pending.extend_from_slice(payload);
        let crc = crc32c::crc32c(&self.pending[start + FRAME..]);
        self.pending[start + 4..start + FRAME].copy_from_slice(&crc.to_be_bytes());
        self.next_offset += 1;
        Ok(offset)
    }

    /// Whether records are buffered (flush has work to do).
    pub fn buffered(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the buffer (one pwrite per segment touched; rolls segments as needed), and
    /// returns the files the group commit must fdatasync for those records to be durable: the
    /// segment file(s) written, and the directory when a segment file was created since the
    /// last flush (and the directory above it, when `open` created the stream's directory).
    /// The records written become readable; the next append is a CHUNK_START.
    pub fn flush(&mut self) -> io::Result<Vec<Arc<File>>> {
        let mut files: Vec<Arc<File>> = Vec::new();
        let mut written = 0;
        while written < self.pending.len() {
            let (end, roll) = self.next_run(written);
            if let Err(e) = self.write_run(written, end, roll) {
                // Keep what was not written for the next try.
                self.pending.drain(..written);
                return Err(e);
            }
            written = end;
            if let Some(active) = self.segments.back() {
                if !files.iter().any(|f| Arc::ptr_eq(f, &active.file)) {
                    files.push(Arc::clone(&active.file));
                }
            }
        }
        self.pending.clear();
        if self.dir_dirty {
            files.push(Arc::new(File::open(&self.dir)?));
            self.dir_dirty = false;
            if self.parent_dirty {
                if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    files.push(Arc::new(File::open(parent)?));
                }
                self.parent_dirty = false;
            }
        }
        Ok(files)
    }

    /// The buffered records from `start` that go to one segment: where they end, and whether
    /// they start a new segment.
    fn next_run(&self, start: usize) -> (usize, bool) {
        let mut at = start;
        let Some(first) = peek(&self.pending[at..]) else {
            return (self.pending.len(), false);
        };
        let roll = match self.segments.back() {
            None => true,
            // A gap in offsets (recovery skipped a damaged segment) starts a segment too.
            Some(active) if active.next_offset != first.offset => true,
            Some(active) => {
                active.has_records() && active.bytes + first.size as u64 > self.max_segment_bytes
            }
        };
        let mut size = if roll {
            MAGIC.len() as u64
        } else {
            self.segments.back().map_or(0, |s| s.bytes)
        };
        size += first.size as u64;
        at += first.size;
        while let Some(record) = peek(&self.pending[at..]) {
            if size + record.size as u64 > self.max_segment_bytes {
                break;
            }
            size += record.size as u64;
            at += record.size;
        }
        (at, roll)
    }

    /// Writes `pending[start..end]` with one pwrite, to a new segment if `roll`, and notes its
    /// records in the segment.
    fn write_run(&mut self, start: usize, end: usize, roll: bool) -> io::Result<()> {
        let run = &self.pending[start..end];
        if roll {
            let first = peek(run).map_or(self.readable_end, |r| r.offset);
            let path = self.dir.join(segment_name(first));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            self.dir_dirty = true;
            let mut data = Vec::with_capacity(MAGIC.len() + run.len());
            data.extend_from_slice(MAGIC);
            data.extend_from_slice(run);
            file.write_all_at(&data, 0)?;
            let mut segment = Segment::new(path, Arc::new(file), first);
            segment.end = MAGIC.len() as u64;
            segment.bytes = segment.end;
            self.bytes += segment.bytes;
            self.segments.push_back(segment);
        } else if let Some(active) = self.segments.back() {
            active.file.write_all_at(run, active.end)?;
        }
        let Some(active) = self.segments.back_mut() else {
            return Ok(());
        };
        let mut at = 0;
        while let Some(record) = peek(&run[at..]) {
            active.note(
                record.offset,
                record.timestamp,
                active.end,
                record.size as u64,
            );
            if record.chunk_start {
                self.last_chunk_start = Some(record.offset);
            }
            at += record.size;
        }
        self.bytes += active.end - active.bytes;
        active.bytes = active.end;
        self.readable_end = active.next_offset;
        Ok(())
    }

    /// The oldest offset still stored (== `next_offset` when empty).
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Every offset below it is flushed and readable.
    pub fn readable_end(&self) -> u64 {
        self.readable_end
    }

    /// The offset of the last CHUNK_START record flushed (`first_offset` if none, or if
    /// retention deleted it): where a consumer starting at "last" starts.
    pub fn last_chunk_start(&self) -> u64 {
        self.last_chunk_start
            .map_or(self.first_offset, |c| c.max(self.first_offset))
    }

    /// Messages stored (`next_offset - first_offset`).
    pub fn len(&self) -> u64 {
        self.next_offset - self.first_offset
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first offset whose record's timestamp is at least `timestamp_ms` (`readable_end`
    /// if none): the segment and the sparse-index entry, then a scan forward (about one index
    /// stride). Timestamps are taken as non-decreasing (the broker's clock).
    pub fn offset_at_timestamp(&self, timestamp_ms: u64) -> io::Result<u64> {
        let start = self
            .segments
            .partition_point(|s| !s.has_records() || s.newest < timestamp_ms);
        for (i, segment) in self.segments.iter().enumerate().skip(start) {
            let before = segment
                .index
                .partition_point(|e| e.timestamp < timestamp_ms);
            let Some(entry) = segment.index.get(before.saturating_sub(1)) else {
                continue;
            };
            let mut plan = segment.plan_at(entry, i + 1 < self.segments.len());
            let mut found = None;
            while found.is_none()
                && plan.read(0, INDEX_STRIDE as usize + 4096, |r| {
                    if r.timestamp >= timestamp_ms {
                        found = Some(r.offset);
                    }
                    found.is_none()
                })?
            {}
            if let Some(offset) = found {
                return Ok(offset);
            }
        }
        Ok(self.readable_end)
    }

    /// A snapshot for reading from `offset` outside the broker's lock: the segment holding
    /// `offset` (or the first segment if `offset < first_offset`, or the next one if `offset`
    /// falls in a gap), positioned at the sparse-index entry at or before it. None when
    /// `offset >= readable_end`.
    pub fn plan(&self, offset: u64) -> Option<ReadPlan> {
        if offset >= self.readable_end {
            return None;
        }
        let at = self.segments.partition_point(|s| s.next_offset <= offset);
        let segment = self.segments.get(at)?;
        let entry = segment
            .index
            .partition_point(|e| e.offset <= offset)
            .saturating_sub(1);
        let entry = segment.index.get(entry)?;
        Some(segment.plan_at(entry, at + 1 < self.segments.len()))
    }

    /// The plan to read on from `offset` with: `old` itself while it has records left to visit
    /// from `offset` (with the bytes it read ahead), `old` stretched to its segment's new end
    /// when it reached the old one, else a new [`StreamLog::plan`] that takes over `old`'s
    /// buffer. None when there is nothing to read from `offset` yet.
    pub fn replan(&self, offset: u64, old: Option<ReadPlan>) -> Option<ReadPlan> {
        let Some(mut old) = old else {
            return self.plan(offset);
        };
        if old.next == offset {
            if old.position < old.end {
                return Some(old);
            }
            let grown = self
                .segments
                .iter()
                .rposition(|s| Arc::ptr_eq(&s.file, &old.file));
            if let Some(at) = grown.filter(|_| !old.sealed) {
                old.end = self.segments[at].end;
                old.sealed = at + 1 < self.segments.len();
                if old.position < old.end {
                    return Some(old);
                }
            }
        }
        let mut plan = self.plan(offset)?;
        old.buf.clear();
        plan.buf = old.buf;
        Some(plan)
    }

    /// Deletes whole sealed segments, oldest first, never the active one: while the total bytes
    /// exceed `max_bytes`, and while the oldest's newest record is older than
    /// `now_ms - max_age_ms`. A reader holding a deleted segment's plan still reads it.
    pub fn retain(
        &mut self,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now_ms: u64,
    ) -> io::Result<Retained> {
        let mut retained = Retained::default();
        let old_first = self.first_offset;
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            let too_big = max_bytes.is_some_and(|max| self.bytes > max);
            let too_old =
                max_age_ms.is_some_and(|age| now_ms >= age && oldest.newest < now_ms - age);
            if !too_big && !too_old {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            retained.segments += 1;
            retained.bytes += oldest.bytes;
            self.bytes -= oldest.bytes;
            self.segments.pop_front();
            if let Some(next) = self.segments.front() {
                self.first_offset = next.first_offset;
            }
        }
        retained.messages = self.first_offset - old_first;
        Ok(retained)
    }

    /// Deletes the directory and everything in it (the queue was deleted).
    pub fn destroy(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl Segment {
    fn new(path: PathBuf, file: Arc<File>, first_offset: u64) -> Segment {
        Segment {
            path,
            file,
            first_offset,
            next_offset: first_offset,
            newest: 0,
            end: MAGIC.len() as u64,
            bytes: MAGIC.len() as u64,
            index: Vec::new(),
        }
    }

    fn has_records(&self) -> bool {
        !self.index.is_empty()
    }

    /// Takes in the record of `size` bytes at `position` (the segment's end).
    fn note(&mut self, offset: u64, timestamp: u64, position: u64, size: u64) {
        let due = self
            .index
            .last()
            .is_none_or(|e| position >= e.position + INDEX_STRIDE);
        if self.index.is_empty() {
            self.first_offset = offset;
        }
        if due {
            self.index.push(IndexEntry {
                offset,
                position,
                timestamp,
            });
        }
        self.newest = self.newest.max(timestamp);
        self.next_offset = offset + 1;
        self.end = position + size;
    }

    fn plan_at(&self, entry: &IndexEntry, sealed: bool) -> ReadPlan {
        ReadPlan {
            file: Arc::clone(&self.file),
            position: entry.position,
            next: entry.offset,
            end: self.end,
            sealed,
            buf: Vec::new(),
            at: 0,
        }
    }
}

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

/// A snapshot for reading one segment outside the broker's lock, from a position on.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    file: Arc<File>,
    position: u64,
    /// The offset of the record at `position`.
    next: u64,
    /// The segment's readable end when the plan was made.
    end: u64,
    /// The segment will not grow: the next records are in a later one.
    sealed: bool,
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
        let mut buf = Vec::new();
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
                && plan.read(0, INDEX_STRIDE as usize + 4096, &mut buf, |r| {
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
        }
    }
}

/// Reads one segment file, or sets it aside: its records up to the first torn or damaged one
/// (the last segment is cut there), and its last CHUNK_START. `after`: the previous segment's
/// next offset.
fn recover(
    path: PathBuf,
    name: u64,
    after: u64,
    last: bool,
) -> io::Result<Option<(Segment, Option<u64>)>> {
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    // The magic and, if there is a record, its length, CRC and offset.
    let mut head = [0u8; 24];
    let got = (len as usize).min(head.len());
    file.read_exact_at(&mut head[..got], 0)?;
    if got < MAGIC.len() || head[..MAGIC.len()] != MAGIC[..] {
        if last && len <= MAGIC.len() as u64 {
            // Created, not yet written when the process stopped: it held nothing synced.
            tracing::warn!(file = %path.display(), "stream segment: removing an empty last segment");
            fs::remove_file(&path)?;
        } else {
            tracing::warn!(file = %path.display(), "stream segment: bad magic; skipping it");
            set_aside(&path)?;
        }
        return Ok(None);
    }
    let first = if got == head.len() {
        u64::from_be_bytes([
            head[16], head[17], head[18], head[19], head[20], head[21], head[22], head[23],
        ])
    } else {
        name
    };
    let file = Arc::new(file);
    let mut segment = Segment::new(path, Arc::clone(&file), name.max(after));
    segment.bytes = len;
    let mut plan = ReadPlan {
        file,
        position: MAGIC.len() as u64,
        next: first,
        end: len,
        sealed: true,
    };
    let mut buf = Vec::new();
    let mut last_chunk_start = None;
    let damage = loop {
        let read = plan.walk(0, SCAN_BYTES, &mut buf, |record, position| {
            let size = (FRAME + HEADER) as u64
                + record.filter.map_or(0, |f| f.len() as u64)
                + record.payload.len() as u64;
            segment.note(record.offset, record.timestamp, position, size);
            if record.chunk_start {
                last_chunk_start = Some(record.offset);
            }
            true
        });
        match read {
            Ok(true) => {}
            Ok(false) => break None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => break Some(e),
            Err(e) => return Err(e),
        }
    };
    if let Some(damage) = damage {
        if last {
            tracing::warn!(file = %segment.path.display(), %damage, at = plan.position, len, "stream segment: cutting a torn tail");
            plan.file.set_len(plan.position)?;
            segment.bytes = plan.position;
        } else if segment.has_records() {
            tracing::warn!(file = %segment.path.display(), %damage, at = plan.position, len, "stream segment: keeping the records before a damaged one");
        }
    }
    if !segment.has_records() && !last {
        tracing::warn!(file = %segment.path.display(), "stream segment: no readable record; skipping it");
        set_aside(&segment.path)?;
        return Ok(None);
    }
    Ok(Some((segment, last_chunk_start)))
}

impl ReadPlan {
    /// Reads from the plan's position with one pread of up to `max_bytes` (more if a single
    /// record is larger, so that at least one whole record comes back), never past the
    /// snapshot's readable end, into `buf` (reused), and calls `visit` for each whole record in
    /// order, CRC checked, skipping records whose offset is below `from`. `visit` returns false
    /// to stop after that record. The plan moves past the records visited and skipped.
    ///
    /// Returns Ok(false) once the plan is exhausted (at the snapshot's readable end of its
    /// segment, possibly after visiting records in this call): the caller then asks
    /// [`StreamLog::plan`] again, under the lock, for [`ReadPlan::next_offset`]. A CRC failure
    /// or an out-of-bounds length is an `InvalidData` error.
    pub fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        mut visit: impl FnMut(RecordRef<'_>) -> bool,
    ) -> io::Result<bool> {
        self.walk(from, max_bytes, buf, |record, _| visit(record))
    }

    /// The offset of the next record the plan would visit.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Whether the segment was sealed when the plan was made: once exhausted, the next records
    /// are in a later segment (else, they are not written yet).
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    /// [`ReadPlan::read`], handing `visit` each record's position in the file as well.
    fn walk(
        &mut self,
        from: u64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        mut visit: impl FnMut(RecordRef<'_>, u64) -> bool,
    ) -> io::Result<bool> {
        if self.position >= self.end {
            return Ok(false);
        }
        let available = self.end - self.position;
        let want = (max_bytes.max(FRAME + HEADER) as u64).min(available) as usize;
        read_at(&self.file, buf, self.position, want)?;
        // A first record larger than `max_bytes`: read it whole.
        if buf.len() >= FRAME {
            let whole = FRAME + body_len(buf, self.position)?;
            if whole > buf.len() {
                if whole as u64 > available {
                    return Err(damaged(self.position, "record runs past the end"));
                }
                read_at(&self.file, buf, self.position, whole)?;
            }
        }
        let mut at = 0;
        while at < buf.len() {
            let Some((record, size)) = decode(&buf[at..], self.position)? else {
                // Cut by `max_bytes`; a record cut by the end is torn.
                if self.position + (buf.len() - at) as u64 >= self.end {
                    return Err(damaged(self.position, "record runs past the end"));
                }
                break;
            };
            if record.offset != self.next {
                return Err(damaged(self.position, "unexpected offset"));
            }
            let position = self.position;
            self.position += size as u64;
            self.next = record.offset + 1;
            at += size;
            if record.offset >= from && !visit(record, position) {
                break;
            }
        }
        Ok(self.position < self.end)
    }
}

/// A buffered record's header (the buffer is ours: no CRC check).
struct Peek {
    size: usize,
    offset: u64,
    timestamp: u64,
    chunk_start: bool,
}

fn peek(data: &[u8]) -> Option<Peek> {
    let head = data.get(..FRAME + HEADER)?;
    let size = FRAME + u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
    Some(Peek {
        size,
        offset: u64::from_be_bytes(head[8..16].try_into().ok()?),
        timestamp: u64::from_be_bytes(head[16..24].try_into().ok()?),
        chunk_start: head[24] & CHUNK_START != 0,
    })
}

/// The body length at the start of `data` (at least FRAME bytes), bound checked.
fn body_len(data: &[u8], position: u64) -> io::Result<usize> {
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if !(HEADER..=MAX_RECORD).contains(&len) {
        return Err(damaged(position, "record length out of bounds"));
    }
    Ok(len)
}

/// The record at the start of `data` and its size; None if `data` does not hold all of it.
fn decode(data: &[u8], position: u64) -> io::Result<Option<(RecordRef<'_>, usize)>> {
    if data.len() < FRAME {
        return Ok(None);
    }
    let len = body_len(data, position)?;
    let Some(body) = data.get(FRAME..FRAME + len) else {
        return Ok(None);
    };
    let crc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if crc32c::crc32c(body) != crc {
        return Err(damaged(position, "CRC mismatch"));
    }
    let be64 = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let filter_len = u16::from_be_bytes([body[17], body[18]]) as usize;
    if HEADER + filter_len > len {
        return Err(damaged(position, "filter length out of bounds"));
    }
    let record = RecordRef {
        offset: be64(0),
        timestamp: be64(8),
        chunk_start: body[16] & CHUNK_START != 0,
        filter: (filter_len > 0).then(|| &body[HEADER..HEADER + filter_len]),
        payload: &body[HEADER + filter_len..],
    };
    Ok(Some((record, FRAME + len)))
}

/// Reads `len` bytes at `position` into `buf` (cleared and resized).
fn read_at(file: &File, buf: &mut Vec<u8>, position: u64, len: usize) -> io::Result<()> {
    buf.clear();
    buf.resize(len, 0);
    file.read_exact_at(buf, position)
}

fn segment_name(first_offset: u64) -> String {
    format!("{first_offset:020}.seg")
}

/// The first offset in a segment file's name, if it is one.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Renames a segment that cannot be read out of the log's way (kept for inspection; its name
/// no longer parses, and a new segment may take the old one).
fn set_aside(path: &Path) -> io::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".bad");
    fs::rename(path, aside)
}

fn damaged(position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("stream record at byte {position}: {what}"),
    )
}

fn invalid_input(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-stream-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// The segment files of `dir`, oldest first.
    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    #[derive(Debug, PartialEq)]
    struct Owned {
        offset: u64,
        timestamp: u64,
        chunk_start: bool,
        filter: Option<Vec<u8>>,
        payload: Vec<u8>,
    }

    fn owned(r: RecordRef<'_>) -> Owned {
        Owned {
            offset: r.offset,
            timestamp: r.timestamp,
            chunk_start: r.chunk_start,
            filter: r.filter.map(<[u8]>::to_vec),
            payload: r.payload.to_vec(),
        }
    }

    /// Every readable record from `from` on, planning again at each segment's end, as a
    /// consumer does.
    fn read_all(log: &StreamLog, from: u64, max_bytes: usize) -> Vec<Owned> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut next = from;
        while let Some(mut plan) = log.plan(next) {
            while plan
                .read(next, max_bytes, &mut buf, |r| {
                    out.push(owned(r));
                    true
                })
                .unwrap()
            {}
            next = plan.next_offset();
        }
        out
    }

    /// Appends `n` records of `size` payload bytes with timestamps `ts(offset)`, then flushes.
    fn fill(log: &mut StreamLog, n: u64, size: usize, ts: impl Fn(u64) -> u64) {
        for _ in 0..n {
            let offset = log.next_offset();
            log.append(ts(offset), None, &vec![offset as u8; size])
                .unwrap();
        }
        log.flush().unwrap();
    }

    #[test]
    fn records_read_back_across_segments() {
        let dir = temp("roundtrip");
        let mut log = StreamLog::open(&dir, 300).unwrap();
        assert!(log.is_empty());
        assert!(log.plan(0).is_none());
        let mut expected = Vec::new();
        for batch in 0..5u64 {
            for i in 0..7u64 {
                let n = batch * 7 + i;
                let filter = (n % 2 == 0).then(|| format!("f{}", n % 3).into_bytes());
                let payload = vec![n as u8; 20 + n as usize];
                let offset = log.append(1000 + n, filter.as_deref(), &payload).unwrap();
                assert_eq!(offset, n);
                expected.push(Owned {
                    offset: n,
                    timestamp: 1000 + n,
                    chunk_start: i == 0,
                    filter,
                    payload,
                });
            }
            assert!(log.buffered());
            assert_eq!(log.readable_end(), batch * 7);
            assert!(!log.flush().unwrap().is_empty());
            assert!(!log.buffered());
            assert_eq!(log.readable_end(), (batch + 1) * 7);
        }
        assert!(segment_files(&dir).len() > 3);
        assert_eq!(read_all(&log, 0, 1 << 20), expected);
        assert_eq!(read_all(&log, 17, 100), expected[17..]);
        assert_eq!(log.len(), 35);
        assert_eq!(log.last_chunk_start(), 28);
        let on_disk: u64 = segment_files(&dir)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(log.bytes(), on_disk);
        log.destroy().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn flush_hands_over_the_directories_only_after_creating_a_segment() {
        let dir = temp("flush-files");
        let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
        assert!(log.flush().unwrap().is_empty());
        log.append(1, None, b"a").unwrap();
        // The segment, its directory, and the directory above (open created the stream's).
        assert_eq!(log.flush().unwrap().len(), 3);
        log.append(2, None, b"b").unwrap();
        assert_eq!(log.flush().unwrap().len(), 1);
        let too_long = vec![0u8; 70_000];
        let err = log.append(3, Some(&too_long), b"c").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(log.append(3, Some(b""), b"c").unwrap(), 2);
        log.flush().unwrap();
        assert_eq!(read_all(&log, 2, 100)[0].filter, None);
        log.destroy().unwrap();
    }

    #[test]
    fn a_small_read_stops_at_whole_records_and_resumes() {
        let dir = temp("small-read");
        let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
        fill(&mut log, 10, 100, |o| o);
        let record = (FRAME + HEADER + 100) as u64;
        let mut plan = log.plan(0).unwrap();
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let more = plan
            .read(0, 2 * record as usize + 50, &mut buf, |r| {
                seen.push(r.offset);
                true
            })
            .unwrap();
        assert!(more);
        assert_eq!(seen, [0, 1]);
        assert_eq!(plan.next_offset(), 2);
        // Smaller than one record: that one record, whole.
        plan.read(0, 10, &mut buf, |r| {
            seen.push(r.offset);
            assert_eq!(r.payload, &[2u8; 100][..]);
            true
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2]);
        // The visitor stops after a record.
        plan.read(0, 1 << 20, &mut buf, |r| {
            seen.push(r.offset);
            false
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(plan.next_offset(), 4);
        while plan
            .read(0, record as usize, &mut buf, |r| {
                seen.push(r.offset);
                true
            })
            .unwrap()
        {}
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(!plan.read(0, 100, &mut buf, |_| true).unwrap());
        log.destroy().unwrap();
    }

    #[test]
    fn reopen_recovers_offsets_and_chunks() {
        let dir = temp("reopen");
        let mut log = StreamLog::open(&dir, 400).unwrap();
        for n in [3, 4, 5] {
            fill(&mut log, n, 30, |o| o * 10);
        }
        let before = read_all(&log, 0, 1 << 20);
        assert_eq!(log.last_chunk_start(), 7);
        let bytes = log.bytes();
        drop(log);
        let mut log = StreamLog::open(&dir, 400).unwrap();
        assert_eq!(
            (log.first_offset(), log.next_offset(), log.readable_end()),
            (0, 12, 12)
        );
        assert_eq!(
            (log.len(), log.last_chunk_start(), log.bytes()),
            (12, 7, bytes)
        );
        assert_eq!(read_all(&log, 0, 1 << 20), before);
        assert_eq!(log.append(120, None, b"x").unwrap(), 12);
        log.flush().unwrap();
        assert_eq!(log.last_chunk_start(), 12);
        assert!(read_all(&log, 12, 100)[0].chunk_start);
        log.destroy().unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = temp("torn");
        let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
        fill(&mut log, 10, 40, |o| o);
        drop(log);
        let path = segment_files(&dir)[0].clone();
        let good = fs::metadata(&path).unwrap().len();
        // Half a record, then a length out of bounds.
        for garbage in [&[0u8, 0, 0, 40, 1, 2, 3][..], &[0xff; 40][..]] {
            let file = OpenOptions::new().append(true).open(&path).unwrap();
            io::Write::write_all(&mut &file, garbage).unwrap();
            let log = StreamLog::open(&dir, 1 << 20).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().len(), good);
            assert_eq!(log.next_offset(), 10);
        }
        // Cut inside the last record.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(good - 5)
            .unwrap();
        let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
        assert_eq!((log.next_offset(), log.len()), (9, 9));
        assert_eq!(log.append(9, None, b"again").unwrap(), 9);
        assert_eq!(log.append(10, None, b"more").unwrap(), 10);
        log.flush().unwrap();
        let all = read_all(&log, 0, 1 << 20);
        assert_eq!(all.len(), 11);
        assert_eq!(all[9].payload, b"again");
        drop(log);
        let log = StreamLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.next_offset(), 11);
        log.destroy().unwrap();
    }

    #[test]
    fn recovery_keeps_what_it_can_of_older_segments() {
        let dir = temp("older");
        let mut log = StreamLog::open(&dir, 300).unwrap();
        fill(&mut log, 20, 40, |o| o);
        drop(log);
        let files = segment_files(&dir);
        assert!(files.len() >= 4);
        // Damage the second record of the first segment, and the magic of the second one.
        let record = (FRAME + HEADER + 40) as u64;
        let first = OpenOptions::new().write(true).open(&files[0]).unwrap();
        first.write_all_at(b"!", 8 + record + 40).unwrap();
        let second = OpenOptions::new().write(true).open(&files[1]).unwrap();
        second.write_all_at(b"XXXX", 0).unwrap();
        // A last segment created, never written.
        let empty = dir.join(segment_name(20));
        fs::write(&empty, b"WRN").unwrap();
        let mut log = StreamLog::open(&dir, 300).unwrap();
        assert!(!empty.exists());
        assert!(!files[1].exists());
        assert!(Path::new(&format!("{}.bad", files[1].display())).exists());
        assert_eq!((log.first_offset(), log.next_offset()), (0, 20));
        let all: Vec<u64> = read_all(&log, 0, 1 << 20)
            .iter()
            .map(|r| r.offset)
            .collect();
        let third = parse_name(files[2].file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(all, [0].into_iter().chain(third..20).collect::<Vec<_>>());
        // A reader in a gap lands on the next record that exists.
        assert_eq!(read_all(&log, 1, 100)[0].offset, third);
        assert_eq!(log.append(20, None, b"x").unwrap(), 20);
        log.flush().unwrap();
        assert_eq!(read_all(&log, 20, 100).len(), 1);
        log.destroy().unwrap();
    }

    #[test]
    fn a_bad_last_segment_is_set_aside_and_appends_continue_after_its_offsets() {
        let dir = temp("bad-last");
        let mut log = StreamLog::open(&dir, 300).unwrap();
        fill(&mut log, 20, 40, |o| o);
        drop(log);
        let files = segment_files(&dir);
        let n = files.len();
        let last = parse_name(files[n - 1].file_name().unwrap().to_str().unwrap()).unwrap();
        let before = parse_name(files[n - 2].file_name().unwrap().to_str().unwrap()).unwrap();
        // The last one unreadable, the one before damaged at its second record.
        let record = (FRAME + HEADER + 40) as u64;
        let file = OpenOptions::new().write(true).open(&files[n - 1]).unwrap();
        file.write_all_at(b"XXXX", 0).unwrap();
        let file = OpenOptions::new().write(true).open(&files[n - 2]).unwrap();
        file.write_all_at(b"!", 8 + record + 40).unwrap();
        let mut log = StreamLog::open(&dir, 300).unwrap();
        assert_eq!(fs::metadata(&files[n - 2]).unwrap().len(), 8 + record);
        // Offsets once given out are not given again.
        assert_eq!(log.next_offset(), last);
        assert_eq!(log.append(0, None, b"x").unwrap(), last);
        log.flush().unwrap();
        let offsets: Vec<u64> = read_all(&log, before, 1 << 20)
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, [before, last]);
        drop(log);
        let log = StreamLog::open(&dir, 300).unwrap();
        assert_eq!(log.next_offset(), last + 1);
        log.destroy().unwrap();
    }

    #[test]
    fn retain_deletes_whole_oldest_sealed_segments() {
        let dir = temp("retain");
        // Every record its own segment.
        let mut log = StreamLog::open(&dir, 1).unwrap();
        fill(&mut log, 10, 50, |o| o * 1000);
        let segment = log.bytes() / 10;
        assert_eq!(segment_files(&dir).len(), 10);
        let retained = log.retain(Some(7 * segment), None, 0).unwrap();
        assert_eq!(
            retained,
            Retained {
                segments: 3,
                messages: 3,
                bytes: 3 * segment
            }
        );
        assert_eq!((log.first_offset(), log.len()), (3, 7));
        assert_eq!(segment_files(&dir).len(), 7);
        assert_eq!(read_all(&log, 0, 1 << 20)[0].offset, 3);
        // By age: newest records older than 10_000 - 5_000.
        let retained = log.retain(None, Some(5_000), 10_000).unwrap();
        assert_eq!((retained.segments, log.first_offset()), (2, 5));
        assert_eq!(
            log.retain(None, Some(5_000), 10_000).unwrap(),
            Retained::default()
        );
        // Never the active one.
        let retained = log.retain(Some(0), Some(0), u64::MAX).unwrap();
        assert_eq!(
            (retained.segments, log.first_offset(), log.len()),
            (4, 9, 1)
        );
        assert_eq!(segment_files(&dir).len(), 1);
        assert_eq!(log.bytes(), segment);
        drop(log);
        let log = StreamLog::open(&dir, 1).unwrap();
        assert_eq!((log.first_offset(), log.next_offset()), (9, 10));
        log.destroy().unwrap();
    }

    #[test]
    fn a_plan_outlives_the_retention_of_its_segment() {
        let dir = temp("unlinked");
        let mut log = StreamLog::open(&dir, 1).unwrap();
        fill(&mut log, 5, 10, |o| o);
        let mut plan = log.plan(0).unwrap();
        assert!(plan.sealed());
        assert_eq!(log.retain(Some(0), None, 0).unwrap().segments, 4);
        let mut seen = Vec::new();
        plan.read(0, 100, &mut Vec::new(), |r| {
            seen.push((r.offset, r.payload.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(seen, [(0, vec![0u8; 10])]);
        // Below first_offset: the first record that exists.
        let plan = log.plan(0).unwrap();
        assert_eq!(plan.next_offset(), 4);
        assert!(!plan.sealed());
        assert!(log.plan(5).is_none());
        log.destroy().unwrap();
    }

    #[test]
    fn a_plan_starts_exactly_at_its_offset_deep_in_a_segment() {
        let dir = temp("deep");
        let mut log = StreamLog::open(&dir, 64 << 20).unwrap();
        for _ in 0..30 {
            fill(&mut log, 100, 1000, |o| o * 10);
        }
        assert_eq!(segment_files(&dir).len(), 1);
        assert!(log.bytes() > 2 << 20);
        let plan = log.plan(2500).unwrap();
        assert!(plan.next_offset() > 2000 && plan.next_offset() <= 2500);
        for from in [0, 1, 253, 254, 1234, 2500, 2999] {
            let all = read_all(&log, from, 64 << 10);
            let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (from..3000).collect::<Vec<_>>());
            assert_eq!(all[0].payload, vec![from as u8; 1000]);
        }
        // offset_at_timestamp, timestamps offset * 10.
        for (ts, offset) in [(0, 0), (5, 1), (10, 1), (12_345, 1235), (29_990, 2999)] {
            assert_eq!(log.offset_at_timestamp(ts).unwrap(), offset, "at {ts}");
        }
        log.append(1 << 40, None, b"buffered").unwrap();
        assert_eq!(log.offset_at_timestamp(29_991).unwrap(), 3000);
        log.destroy().unwrap();
    }

    #[test]
    fn offset_at_timestamp_across_segments() {
        let dir = temp("timestamps");
        let mut log = StreamLog::open(&dir, 500).unwrap();
        fill(&mut log, 40, 30, |o| 100 + o * 2);
        assert!(segment_files(&dir).len() > 3);
        for offset in 0..40 {
            let ts = 100 + offset * 2;
            assert_eq!(log.offset_at_timestamp(ts).unwrap(), offset);
            assert_eq!(log.offset_at_timestamp(ts - 1).unwrap(), offset);
        }
        assert_eq!(log.offset_at_timestamp(0).unwrap(), 0);
        assert_eq!(log.offset_at_timestamp(1000).unwrap(), 40);
        log.retain(Some(0), None, 0).unwrap();
        let first = log.first_offset();
        assert_eq!(log.offset_at_timestamp(0).unwrap(), first);
        log.destroy().unwrap();
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_an_error_on_read() {
        let dir = temp("corrupt");
        let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
        fill(&mut log, 10, 50, |o| o);
        let record = (FRAME + HEADER + 50) as u64;
        let file = OpenOptions::new()
            .write(true)
            .open(&segment_files(&dir)[0])
            .unwrap();
        file.write_all_at(b"?", 8 + 5 * record + 30).unwrap();
        let mut plan = log.plan(0).unwrap();
        let mut seen = Vec::new();
        let err = plan
            .read(0, 1 << 20, &mut Vec::new(), |r| {
                seen.push(r.offset);
                true
            })
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(plan.next_offset(), 5);
        log.destroy().unwrap();
    }
}

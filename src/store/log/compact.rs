//! Compaction: giving back the disk space of settled records in sealed segments that something
//! still keeps alive, by punching holes over them in place (`fallocate(PUNCH_HOLE | KEEP_SIZE)`).
//! Positions stay valid, nothing is copied, and a live record's bytes are never touched.
//!
//! # When
//!
//! A sealed, undamaged segment is worth compacting once at least half of its bytes are settled
//! and, since it was last compacted, at least an eighth of its size (1 MiB of an 8 MiB segment;
//! never less than 16 KiB) more. So a segment is compacted a few times in its life at most.
//! `settle` only raises a flag; [`Log::compact`] (or the steps below) does the work when the owner
//! asks.
//!
//! # How
//!
//! In steps, so that an owner sharing the log behind a lock (the queue's mutex) holds it only for
//! bookkeeping, never across a walk, an fsync or a punch:
//!
//! 1. [`Log::start_compaction`] (locked, a few opens): picks a due segment and takes descriptors
//!    of its segment file, acks file and directory, and the acks file's length: the acks file is
//!    append-only, so that prefix reads the same later (a snapshot of the settled offsets).
//! 2. [`CompactionJob::plan`] (unlocked): reads the snapshot (the settled offsets and the ranges
//!    already punched) and walks the segment's records from offset 0 by their headers, jumping
//!    over punched ranges, to find the *runs*: maximal ranges of consecutive settled records
//!    (RAM: the settled offsets of one segment, for the duration of the job); shrinks each run
//!    inward to whole filesystem blocks (a run with no whole block is left alone).
//! 3. [`Log::record_punches`] (locked, one `pwrite`): appends a *punched* pair `(start, end)`
//!    (see `log/acks.rs`) for every run not already recorded as is, at the acks file's append
//!    position, ordered with the settles; unless the segment is gone.
//! 4. [`CompactionJob::sync_and_punch`] (unlocked): syncs the segment file, the acks file and
//!    the directory, then punches the holes (again for old runs: punching a hole is idempotent
//!    and cheap).
//!
//! Records settled after step 1 are just not punched this time (they count towards the next);
//! a segment deleted meanwhile (fully settled) gets no pair (step 3 checks that it is still
//! there), and its unlinked files are synced and punched through the descriptors, harmlessly.
//!
//! A crash before the pairs of 3 are durable leaves the data intact and no pair (or a torn one, which means
//! nothing); a crash after it leaves the pairs, with or without the holes: recovery jumps from a
//! run's start to its end either way, and the records in it are settled. Runs only grow (a
//! settled record stays settled), so a newer pair for the same start covers the older one.
//!
//! A filesystem without hole punching (`EOPNOTSUPP`/`ENOSYS`) is remembered: compaction stops
//! for this log, and the first log to meet one says so once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};

use super::acks::{self, Acks};
use super::record::{Header, HEADER_LEN};
use super::{acks_path, msgs_path, Dirty, Log, Segment};

/// Punches a hole of `len` bytes at `offset` (both block-aligned).
pub(super) type Punch = fn(&File, u64, u64) -> io::Result<()>;

/// The least newly settled bytes that make a segment worth compacting again.
const MIN_STEP: u64 = 16 << 10;

/// How much of a segment is read at once when walking its record headers.
const WALK_WINDOW: usize = 8 << 10;

/// The block size assumed when the filesystem reports an odd one.
const DEFAULT_BLOCK: u64 = 4096;

static UNSUPPORTED_LOGGED: AtomicBool = AtomicBool::new(false);

impl Segment {
    /// Sealed-segment test (the caller excludes the active one): at least half settled, and
    /// enough newly settled since the last compaction.
    pub(super) fn wants_compaction(&self) -> bool {
        !self.damaged
            && self.settled < self.records
            && self.settled_bytes.saturating_mul(2) >= self.size
            && self.settled_bytes.saturating_sub(self.compacted_bytes)
                >= (self.size / 8).max(MIN_STEP)
    }
}

/// The compaction of one sealed segment, taken from the log by [`Log::start_compaction`]: the
/// descriptors and the snapshot its unlocked steps need, so that they touch neither the [`Log`]
/// nor any path (the log may go on settling, delete the segment, or be destroyed meanwhile).
#[derive(Debug)]
pub struct CompactionJob {
    /// The [`Log`] it was taken from (its `instance`).
    log: u64,
    segment: u32,
    /// The segment's records end here (a sealed segment: final).
    size: u64,
    /// Read and written (punched).
    msgs: File,
    /// Read, and synced; only its first `acks_len` bytes are read.
    acks: File,
    acks_len: u64,
    dir: File,
    /// The segment's settled bytes as the log counted them at the snapshot.
    settled_bytes: u64,
    punch: Punch,
}

/// What a [`CompactionJob`] found to do, from [`CompactionJob::plan`].
#[derive(Debug, Default)]
pub struct Plan {
    /// The settled bytes the walk found, for the log's thresholds; `None` if the records did not
    /// chain up (nothing is done then).
    settled_bytes: Option<u64>,
    /// `(offset, len)`, whole blocks inside runs of settled records.
    holes: Vec<(u64, u64)>,
    /// The punched pairs not yet in the acks file, encoded.
    pairs: Vec<u8>,
    /// The ranges `(start, end)` with holes (readers jump over them).
    ranges: Vec<(u32, u32)>,
}

impl Plan {
    /// Whether there is a hole to punch.
    pub fn has_holes(&self) -> bool {
        !self.holes.is_empty()
    }
}

impl Log {
    /// Punches holes over the settled records of sealed segments worth it (see the module docs)
    /// and returns the bytes of disk freed: every step of the compaction of each due segment in
    /// turn, on `&mut self`. Cheap when nothing is due (a flag test). An owner that shares the
    /// log behind a lock runs the steps itself instead, holding the lock only for
    /// [`Log::start_compaction`] and [`Log::record_punches`].
    pub fn compact(&mut self) -> io::Result<u64> {
        let mut freed = 0;
        let mut segments = 0;
        while let Some(job) = self.start_compaction()? {
            segments += 1;
            let plan = job.plan()?;
            if self.record_punches(&job, &plan)? {
                freed += match job.sync_and_punch(&plan) {
                    Ok(bytes) => bytes,
                    Err(e) => self.punch_failed(e)?,
                };
            }
        }
        if freed > 0 {
            tracing::debug!(dir = %self.dir.display(), segments, freed, "queue log: compacted");
        }
        Ok(freed)
    }

    /// Step 1 (short; under the owner's lock): picks a sealed segment worth compacting, if any,
    /// and returns what the work needs: three descriptors (opened here) and the length of its
    /// acks file. The segment is not picked again before more of it is settled, whatever becomes
    /// of the job. Call again for the next due segment.
    pub fn start_compaction(&mut self) -> io::Result<Option<CompactionJob>> {
        if !self.compaction_due {
            return Ok(None);
        }
        // The job reads the acks file up to `acks_len`: every entry counted must be in it.
        self.flush()?;
        let Some(punch) = self.punch else {
            return Ok(None);
        };
        let active = self.active.as_ref().map(|(id, _)| *id);
        let mut due = self
            .segments
            .iter()
            .filter(|segment| Some(segment.id) != active && segment.wants_compaction())
            .map(|segment| segment.id);
        let Some(id) = due.next() else {
            self.compaction_due = false;
            return Ok(None);
        };
        self.compaction_due = due.next().is_some();
        let Some(segment) = self.segment_mut(id) else {
            return Ok(None);
        };
        segment.compacted_bytes = segment.settled_bytes;
        let (size, acks_len, settled_bytes) =
            (segment.size, segment.acks_len, segment.settled_bytes);
        let msgs = OpenOptions::new()
            .read(true)
            .write(true)
            .open(msgs_path(&self.dir, id))?;
        Ok(Some(CompactionJob {
            log: self.instance,
            segment: id,
            size,
            msgs,
            acks: File::open(acks_path(&self.dir, id))?,
            acks_len,
            dir: File::open(&self.dir)?,
            settled_bytes,
            punch,
        }))
    }

    /// Step 3 (short; under the owner's lock): appends the plan's punched pairs to the segment's
    /// acks file (one `pwrite`, ordered with the settles that also append to it; not synced) and
    /// updates the segment's settled bytes. Returns whether to go on to
    /// [`CompactionJob::sync_and_punch`]: false if there is nothing to punch, or if the job is
    /// not this log's or its segment is gone (fully settled and deleted since: nothing is
    /// written, no file is recreated).
    pub fn record_punches(&mut self, job: &CompactionJob, plan: &Plan) -> io::Result<bool> {
        let id = job.segment;
        if job.log != self.instance {
            return Ok(false);
        }
        // The pairs go after every entry counted in `acks_len`.
        self.flush()?;
        let Some(segment) = self.segment_mut(id) else {
            return Ok(false);
        };
        if let Some(found) = plan.settled_bytes {
            // Records settled since the snapshot count as not yet compacted.
            let since = segment.settled_bytes.saturating_sub(job.settled_bytes);
            segment.settled_bytes = found + since;
            segment.compacted_bytes = found;
        }
        if plan.holes.is_empty() {
            return Ok(false);
        }
        for range in &plan.ranges {
            if !segment.punched.contains(range) {
                segment.punched.push(*range);
            }
        }
        if !plan.pairs.is_empty() {
            let at = segment.acks_len;
            let file = std::sync::Arc::clone(&segment.acks);
            file.write_all_at(&plan.pairs, at)?;
            segment.acks_len = at + plan.pairs.len() as u64;
            self.mark_dirty(Dirty::Acks(id), file);
        }
        Ok(true)
    }

    /// Step 5, only if [`CompactionJob::sync_and_punch`] failed (under the owner's lock): a
    /// filesystem that cannot punch holes is remembered (compaction stops for this log; `Ok(0)`),
    /// any other error is returned.
    pub fn punch_failed(&mut self, e: io::Error) -> io::Result<u64> {
        if !is_unsupported(&e) {
            return Err(e);
        }
        self.punch = None;
        if !UNSUPPORTED_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "queue log: the filesystem cannot punch holes; settled records in kept \
                 segments keep their disk space");
        }
        Ok(0)
    }
}

impl CompactionJob {
    /// Step 2 (no lock): reads the acks snapshot and walks the segment's record headers (8 KiB
    /// reads, jumping over punched ranges) to find the runs of settled records and the holes
    /// inside them. Reads only: a sealed segment changes only by punching, and the acks file's
    /// snapshot prefix never changes.
    pub fn plan(&self) -> io::Result<Plan> {
        let acks = Acks::read_prefix(&self.acks, self.acks_len)?;
        let Some(runs) = settled_runs(&self.msgs, self.size, &acks)? else {
            tracing::warn!(
                segment = self.segment,
                "queue log: a sealed segment's records do not chain up; not compacting it"
            );
            return Ok(Plan::default());
        };
        let settled_bytes = runs.iter().map(|(s, e)| u64::from(e - s)).sum();
        let block = block_size(&self.msgs.metadata()?);
        let mut plan = Plan {
            settled_bytes: Some(settled_bytes),
            ..Plan::default()
        };
        for (start, end) in runs {
            let Some(hole) = inner_blocks((start, end), block) else {
                continue;
            };
            plan.holes.push(hole);
            plan.ranges.push((start, end));
            if acks.punched_end(start) != Some(end) {
                plan.pairs
                    .extend_from_slice(&acks::encode_punched(start, end));
            }
        }
        Ok(plan)
    }

    /// Step 4 (no lock; after [`Log::record_punches`] said so): makes the punched pairs durable
    /// (syncing the segment, the acks file and the directory: a sync covers every write before
    /// it), then punches the holes (again for old runs: punching is idempotent and cheap).
    /// Returns the bytes of disk freed. Harmless if the segment was deleted meanwhile (the
    /// descriptors still name its unlinked files).
    pub fn sync_and_punch(&self, plan: &Plan) -> io::Result<u64> {
        self.msgs.sync_data()?;
        self.acks.sync_data()?;
        self.dir.sync_all()?;
        let before = self.msgs.metadata()?.blocks();
        for (offset, len) in &plan.holes {
            (self.punch)(&self.msgs, *offset, *len)?;
        }
        let after = self.msgs.metadata()?.blocks();
        Ok(before.saturating_sub(after) * 512)
    }
}

/// The runs of consecutive settled records of a segment's first `size` bytes, as `(start, end)`
/// offsets; `None` if its headers do not chain up to `size` (nothing is punched then).
fn settled_runs(file: &File, size: u64, acks: &Acks) -> io::Result<Option<Vec<(u32, u32)>>> {
    let Ok(size32) = u32::try_from(size) else {
        return Ok(None);
    };
    let mut headers = Headers::new(file, size);
    let mut runs = Vec::new();
    let mut run_start = None;
    let mut offset = 0u32;
    while offset < size32 {
        let punched = acks.punched_end(offset).filter(|end| *end <= size32);
        let (next, settled) = match punched {
            Some(end) => (end, true),
            None => {
                let Some(header) = headers.at(offset)? else {
                    return Ok(None);
                };
                let available = u64::from(size32 - offset) - HEADER_LEN;
                let Some(len) = header.bounded_len(available) else {
                    return Ok(None);
                };
                // Bounded by `size32 - offset`, so this stays within u32.
                let next = offset + HEADER_LEN as u32 + len as u32;
                (next, acks.is_settled(offset))
            }
        };
        match (settled, run_start) {
            (true, None) => run_start = Some(offset),
            (false, Some(start)) => {
                runs.push((start, offset));
                run_start = None;
            }
            _ => {}
        }
        offset = next;
    }
    if let Some(start) = run_start {
        runs.push((start, size32));
    }
    Ok(Some(runs))
}

/// Record headers read through a small window (records are walked in order).
struct Headers<'a> {
    file: &'a File,
    size: u64,
    window: Vec<u8>,
    window_at: u64,
}

impl<'a> Headers<'a> {
    fn new(file: &'a File, size: u64) -> Headers<'a> {
        Headers {
            file,
            size,
            window: Vec::new(),
            window_at: 0,
        }
    }

    /// The header at `offset`, or `None` if fewer than its 8 bytes are left before `size`.
    fn at(&mut self, offset: u32) -> io::Result<Option<Header>> {
        let offset = u64::from(offset);
        let end = offset + HEADER_LEN;
        if end > self.size {
            return Ok(None);
        }
        let window_end = self.window_at + self.window.len() as u64;
        if offset < self.window_at || end > window_end {
            let len = (self.size - offset).min(WALK_WINDOW as u64) as usize;
            self.window.resize(len, 0);
            self.file.read_exact_at(&mut self.window, offset)?;
            self.window_at = offset;
        }
        let from = (offset - self.window_at) as usize;
        let mut header = [0; HEADER_LEN as usize];
        header.copy_from_slice(&self.window[from..from + HEADER_LEN as usize]);
        Ok(Some(Header::parse(header)))
    }
}

/// The filesystem block size holes are aligned to.
fn block_size(metadata: &std::fs::Metadata) -> u64 {
    let reported = metadata.blksize();
    if reported.is_power_of_two() && (512..=(1 << 20)).contains(&reported) {
        reported
    } else {
        DEFAULT_BLOCK
    }
}

/// The whole blocks inside `start..end`, as `(offset, len)`, if there is at least one.
fn inner_blocks((start, end): (u32, u32), block: u64) -> Option<(u64, u64)> {
    let first = u64::from(start).div_ceil(block) * block;
    let last = u64::from(end) / block * block;
    (last > first).then(|| (first, last - first))
}

fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(code) if code == libc::EOPNOTSUPP || code == libc::ENOSYS)
}

/// Frees the blocks of `offset..offset + len` (reads as zeros after), keeping the file's size.
#[cfg(target_os = "linux")]
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let out_of_range = || io::Error::other("queue log: hole out of range");
    let offset = libc::off_t::try_from(offset).map_err(|_| out_of_range())?;
    let len = libc::off_t::try_from(len).map_err(|_| out_of_range())?;
    // SAFETY: fallocate takes a descriptor, which `file` keeps open for the call, and integers;
    // no memory is shared with the kernel.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hole punching is Linux-only here.
#[cfg(not(target_os = "linux"))]
pub(super) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_whole_blocks_inside_the_run() {
        assert_eq!(inner_blocks((0, 4096), 4096), Some((0, 4096)));
        assert_eq!(inner_blocks((1, 8191), 4096), None);
        assert_eq!(inner_blocks((1, 8192), 4096), Some((4096, 4096)));
        assert_eq!(inner_blocks((100, 20000), 4096), Some((4096, 12288)));
        assert_eq!(inner_blocks((4096, 4096), 4096), None);
    }

    #[test]
    fn thresholds() {
        let files = crate::store::files::Files::unswept(16);
        let dir: std::sync::Arc<std::path::Path> = std::path::Path::new("/nonexistent").into();
        let segment = |records, settled, settled_bytes, compacted_bytes| Segment {
            records,
            settled,
            size: 8 << 20,
            settled_bytes,
            compacted_bytes,
            ..Segment::new(&files, &dir, 1, None)
        };
        assert!(!segment(10, 5, (4 << 20) - 1, 0).wants_compaction());
        assert!(segment(10, 5, 4 << 20, 0).wants_compaction());
        // An eighth more since the last time.
        assert!(!segment(10, 6, 5 << 20, (4 << 20) + 1).wants_compaction());
        assert!(segment(10, 6, 5 << 20, 4 << 20).wants_compaction());
        // Fully settled segments are deleted, not compacted; damaged ones are left alone.
        assert!(!segment(10, 10, 8 << 20, 0).wants_compaction());
        let damaged = Segment {
            damaged: true,
            ..segment(10, 5, 4 << 20, 0)
        };
        assert!(!damaged.wants_compaction());
    }
}

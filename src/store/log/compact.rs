//! Compaction: giving back the disk space of settled records in sealed segments that something
//! still keeps alive, by punching holes over them in place (`fallocate(PUNCH_HOLE | KEEP_SIZE)`).
//! Positions stay valid, nothing is copied, and a live record's bytes are never touched.
//!
//! # When
//!
//! A sealed, undamaged segment is worth compacting once at least half of its bytes are settled
//! and, since it was last compacted, at least an eighth of its size (1 MiB of an 8 MiB segment;
//! never less than 16 KiB) more. So a segment is compacted a few times in its life at most.
//! `settle` only raises a flag; [`Log::compact`] does the work when the owner calls it.
//!
//! # How
//!
//! 1. Read the segment's acks file (the settled offsets and the ranges already punched) and walk
//!    its records from offset 0 by their headers, jumping over punched ranges, to find the
//!    *runs*: maximal ranges of consecutive settled records (RAM: the settled offsets of one
//!    segment, for the duration of the call).
//! 2. Shrink each run inward to whole filesystem blocks; a run with no whole block is left alone.
//! 3. For every run not already recorded as is, append a *punched* pair `(start, end)` to the
//!    acks file (see `log/acks.rs`), then sync the segment file, the acks file and the directory.
//! 4. Punch the holes (again for old runs: punching a hole is idempotent and cheap).
//!
//! A crash before 3 is durable leaves the data intact and no pair (or a torn one, which means
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

impl Log {
    /// Punches holes over the settled records of sealed segments worth it (see the module docs)
    /// and returns the bytes of disk freed. Cheap when nothing is due (a flag test); otherwise,
    /// per segment compacted: a read of its acks file, a walk over its record headers (8 KiB
    /// reads, skipping punched ranges), three fsyncs (segment, acks file, directory) and one
    /// `fallocate` per run of settled records. Meant to be called from a background timer or
    /// after a batch of acks.
    pub fn compact(&mut self) -> io::Result<u64> {
        if !self.compaction_due || self.punch.is_none() {
            return Ok(0);
        }
        self.compaction_due = false;
        let active = self.active.as_ref().map(|(id, _)| *id);
        let due: Vec<u32> = self
            .segments
            .iter()
            .filter(|(id, segment)| Some(**id) != active && segment.wants_compaction())
            .map(|(id, _)| *id)
            .collect();
        let mut freed = 0;
        for (i, id) in due.iter().enumerate() {
            match self.compact_segment(*id) {
                Ok(bytes) => freed += bytes,
                Err(e) => {
                    // The others are tried at the next call.
                    self.compaction_due = i + 1 < due.len();
                    return Err(e);
                }
            }
        }
        if freed > 0 {
            tracing::debug!(dir = %self.dir.display(), segments = due.len(), freed, "queue log: compacted");
        }
        Ok(freed)
    }

    fn compact_segment(&mut self, id: u32) -> io::Result<u64> {
        let Some(segment) = self.segments.get_mut(&id) else {
            return Ok(0);
        };
        // Not retried before more is settled, whatever happens below.
        segment.compacted_bytes = segment.settled_bytes;
        let size = segment.size;
        let acks = Acks::read(&acks_path(&self.dir, id))?;
        let msgs = OpenOptions::new()
            .read(true)
            .write(true)
            .open(msgs_path(&self.dir, id))?;
        let Some(runs) = settled_runs(&msgs, size, &acks)? else {
            tracing::warn!(
                segment = id,
                "queue log: a sealed segment's records do not chain up; not compacting it"
            );
            return Ok(0);
        };
        let settled_bytes: u64 = runs.iter().map(|(s, e)| u64::from(e - s)).sum();
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.settled_bytes = settled_bytes;
            segment.compacted_bytes = settled_bytes;
        }
        let block = block_size(&msgs.metadata()?);
        let holes: Vec<((u32, u32), (u64, u64))> = runs
            .into_iter()
            .filter_map(|run| inner_blocks(run, block).map(|hole| (run, hole)))
            .collect();
        if holes.is_empty() {
            return Ok(0);
        }
        let pairs: Vec<u8> = holes
            .iter()
            .filter(|((start, end), _)| acks.punched_end(*start) != Some(*end))
            .flat_map(|((start, end), _)| acks::encode_punched(*start, *end))
            .collect();
        if !pairs.is_empty() {
            self.write_punched(id, &pairs, &msgs)?;
        }
        let before = msgs.metadata()?.blocks();
        for (_, (offset, len)) in holes {
            let Some(punch) = self.punch else {
                return Ok(0);
            };
            if let Err(e) = punch(&msgs, offset, len) {
                if !is_unsupported(&e) {
                    return Err(e);
                }
                self.punch = None;
                if !UNSUPPORTED_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "queue log: the filesystem cannot punch holes; settled records in kept \
                         segments keep their disk space");
                }
                return Ok(0);
            }
        }
        let after = msgs.metadata()?.blocks();
        Ok(before.saturating_sub(after) * 512)
    }

    /// Appends punched pairs to a segment's acks file and makes them durable (with the records
    /// they describe and the directory entry of the acks file) before any hole is punched.
    fn write_punched(&mut self, id: u32, pairs: &[u8], msgs: &File) -> io::Result<()> {
        let at = self.segments.get(&id).map_or(0, |s| s.acks_len);
        let file = self.acks_file(id)?;
        file.write_all_at(pairs, at)?;
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.acks_len = at + pairs.len() as u64;
        }
        self.mark_dirty(Dirty::Acks(id), file.clone());
        msgs.sync_data()?;
        file.sync_data()?;
        File::open(&self.dir)?.sync_all()
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
        let segment = |records, settled, settled_bytes, compacted_bytes| Segment {
            records,
            settled,
            size: 8 << 20,
            settled_bytes,
            compacted_bytes,
            acks_len: 0,
            damaged: false,
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

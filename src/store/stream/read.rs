//! Reading a stream's records back: a [`ReadPlan`] walks one segment file from a snapshot,
//! one `pread` per batch, each record's CRC checked; and the helpers the log shares with it.

use super::*;

impl ReadPlan {
    /// Calls `visit` for each whole record from the plan's position on, in order, CRC checked,
    /// skipping records whose offset is below `from`: first those its buffer still holds from
    /// an earlier call, then, when the buffer runs out, those of one pread of up to `max_bytes`
    /// (more if a single record is larger, so that at least one whole record comes back), never
    /// past the snapshot's readable end. `visit` returns false to stop after that record; the
    /// plan moves past the records visited and skipped, and keeps the rest buffered for the
    /// next call, so each byte of the file is read once.
    ///
    /// Returns Ok(false) once the plan is exhausted (at the snapshot's readable end of its
    /// segment, possibly after visiting records in this call): the caller then asks
    /// [`StreamLog::plan`] again, under the lock, for [`ReadPlan::next_offset`]. A CRC failure
    /// or an out-of-bounds length is an `InvalidData` error.
    pub fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        mut visit: impl FnMut(RecordRef<'_>) -> bool,
    ) -> io::Result<bool> {
        self.walk(from, max_bytes, |record, _| visit(record))
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
    pub(super) fn walk(
        &mut self,
        from: u64,
        max_bytes: usize,
        mut visit: impl FnMut(RecordRef<'_>, u64) -> bool,
    ) -> io::Result<bool> {
        let mut filled = false;
        loop {
            if self.position >= self.end {
                self.buf.clear();
                self.at = 0;
                return Ok(false);
            }
            let Some((record, size)) = decode(&self.buf[self.at..], self.position)? else {
                // No whole record left in the buffer: one read per call.
                if filled {
                    return Ok(true);
                }
                self.fill(max_bytes)?;
                filled = true;
                continue;
            };
            if record.offset != self.next {
                return Err(damaged(self.position, "unexpected offset"));
            }
            let position = self.position;
            self.position += size as u64;
            self.next = record.offset + 1;
            self.at += size;
            if record.offset >= from && !visit(record, position) {
                return Ok(self.position < self.end);
            }
        }
    }

    /// Reads on from the end of what is buffered: up to `max_bytes` in all (more if the next
    /// record is larger, so that it comes back whole), never past the snapshot's end. What was
    /// left unvisited moves to the front of the buffer first, and is never read again.
    fn fill(&mut self, max_bytes: usize) -> io::Result<()> {
        let mut kept = self.buf.len() - self.at;
        self.buf.copy_within(self.at.., 0);
        self.buf.truncate(kept);
        self.at = 0;
        let available = usize::try_from(self.end - self.position).unwrap_or(usize::MAX);
        let mut want = max_bytes.max(FRAME + HEADER).min(available);
        loop {
            if want > kept {
                self.buf.resize(want, 0);
                let at = self.position + kept as u64;
                self.file.read_exact_at(&mut self.buf[kept..], at)?;
                kept = want;
            }
            if kept < FRAME {
                return Err(damaged(self.position, "record runs past the end"));
            }
            let whole = FRAME + body_len(&self.buf, self.position)?;
            if whole <= kept {
                return Ok(());
            }
            if whole > available {
                return Err(damaged(self.position, "record runs past the end"));
            }
            // A record larger than `max_bytes`: read it whole.
            want = whole;
        }
    }
}

/// A buffered record's header (the buffer is ours: no CRC check).
pub(super) struct Peek {
    pub(super) size: usize,
    pub(super) offset: u64,
    pub(super) timestamp: u64,
    pub(super) chunk_start: bool,
}

pub(super) fn peek(data: &[u8]) -> Option<Peek> {
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
pub(super) fn body_len(data: &[u8], position: u64) -> io::Result<usize> {
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if !(HEADER..=MAX_RECORD).contains(&len) {
        return Err(damaged(position, "record length out of bounds"));
    }
    Ok(len)
}

/// The record at the start of `data` and its size; None if `data` does not hold all of it.
pub(super) fn decode(data: &[u8], position: u64) -> io::Result<Option<(RecordRef<'_>, usize)>> {
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

pub(super) fn segment_name(first_offset: u64) -> String {
    format!("{first_offset:020}.seg")
}

/// The first offset in a segment file's name, if it is one.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Renames a segment that cannot be read out of the log's way (kept for inspection; its name
/// no longer parses, and a new segment may take the old one).
pub(super) fn set_aside(path: &Path) -> io::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".bad");
    fs::rename(path, aside)
}

pub(super) fn damaged(position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("stream record at byte {position}: {what}"),
    )
}

pub(super) fn invalid_input(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

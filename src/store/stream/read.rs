//! Reading a stream's records back: a [`ReadPlan`] walks one segment file from a snapshot,
//! one `pread` per batch, each record's CRC checked; and the helpers the log shares with it.

use super::*;

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
    pub(super) fn walk(
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

/// Reads `len` bytes at `position` into `buf` (cleared and resized).
pub(super) fn read_at(file: &File, buf: &mut Vec<u8>, position: u64, len: usize) -> io::Result<()> {
    buf.clear();
    buf.resize(len, 0);
    file.read_exact_at(buf, position)
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

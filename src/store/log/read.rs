//! Reading records back: [`Log::read`] (one record; `reader.rs` reads the live records that
//! follow one another, for a reader going through the log in order), a record still in
//! the write buffer served from it, and the header of a settled record read for its length (the
//! segment's settled bytes, which decide compaction). Every record read is checked (length bound,
//! checksum); a bad one is an error, never a wrong payload.
//!
//! Files are read through their segments' handles (`store/files.rs`: opened on demand, closed
//! when idle). Never writes a file.

use std::io;

use bytes::Bytes;

use super::record::{Header, HEADER_LEN};
use super::{invalid, Log, Position};

impl Log {
    /// Reads a record back.
    pub fn read(&self, position: Position) -> io::Result<Bytes> {
        let segment = self
            .segment(position.segment)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "queue log: no such segment"))?;
        let offset = u64::from(position.offset);
        let available = segment
            .size
            .checked_sub(offset)
            .and_then(|rest| rest.checked_sub(HEADER_LEN))
            .ok_or_else(|| invalid("queue log: position beyond the segment's records"))?;
        let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "queue log: corrupt record");
        if let Some(buffered) = self.buffered(position) {
            let header = buffered
                .get(..HEADER_LEN as usize)
                .and_then(|h| <[u8; HEADER_LEN as usize]>::try_from(h).ok())
                .map(Header::parse)
                .ok_or_else(corrupt)?;
            let len = header.bounded_len(available).ok_or_else(corrupt)?;
            let payload = buffered
                .get(HEADER_LEN as usize..HEADER_LEN as usize + len)
                .ok_or_else(corrupt)?;
            return Ok(Bytes::copy_from_slice(payload));
        }
        let file = &segment.msgs;
        let mut header = [0; HEADER_LEN as usize];
        file.read_exact_at(&mut header, offset)?;
        let header = Header::parse(header);
        let len = header.bounded_len(available).ok_or_else(corrupt)?;
        let mut payload = vec![0; len];
        file.read_exact_at(&mut payload, offset + HEADER_LEN)?;
        if !header.matches(&payload) {
            return Err(corrupt());
        }
        Ok(Bytes::from(payload))
    }

    /// The buffered bytes from `position` on, if its record has not been written yet.
    pub(super) fn buffered(&self, position: Position) -> Option<&[u8]> {
        let active = self.active.as_ref().map(|(id, _)| *id);
        let offset = u64::from(position.offset);
        let writes = self.writes.as_deref()?;
        if active != Some(position.segment)
            || writes.pending.is_empty()
            || offset < writes.pending_at
        {
            return None;
        }
        let start = usize::try_from(offset - writes.pending_at).ok()?;
        writes.pending.get(start..)
    }

    /// The length (header included) of the record at `position`, read from its header, for the
    /// settled bytes of its segment; 0 if it cannot be read or is implausible (the count only
    /// decides when to compact, which finds the true lengths itself).
    pub(super) fn record_len(&mut self, position: Position) -> u64 {
        let Some(segment) = self.segment(position.segment) else {
            return 0;
        };
        let offset = u64::from(position.offset);
        let Some(available) = segment
            .size
            .checked_sub(offset)
            .and_then(|rest| rest.checked_sub(HEADER_LEN))
            .filter(|_| !segment.damaged)
        else {
            return 0;
        };
        let mut header = [0; HEADER_LEN as usize];
        let read = match self.buffered(position) {
            Some(buffered) => buffered
                .get(..HEADER_LEN as usize)
                .map(|h| header.copy_from_slice(h))
                .ok_or_else(|| invalid("queue log: short buffered record")),
            None => segment.msgs.read_exact_at(&mut header, offset),
        };
        match read {
            Ok(()) => Header::parse(header)
                .bounded_len(available)
                .map_or(0, |len| HEADER_LEN + len as u64),
            Err(e) => {
                tracing::debug!(segment = position.segment, error = %e, "queue log: reading a settled record's header failed");
                0
            }
        }
    }
}

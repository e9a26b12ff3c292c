//! Reading the log in order as a queue's ready list ([`Log::read_live`]): from a cursor, the
//! live records that follow, a read of up to `max_bytes` at a time, crossing into the next
//! segment at the end of a sealed one. A record recovery found settled (acked out of order
//! before a restart, or dropped) is skipped, and so is everything before a segment's first
//! live record; one it found delivered is flagged; a range that
//! compaction punched (zeros now) is jumped over. Nothing is kept per record: the cursor is the
//! caller's, and what is skipped is known per segment (`Marks`, `punched`), bounded by what was
//! out of order at a crash, not by the backlog.
//!
//! Never writes a record; flushes the write buffer first when the cursor reaches it.

use std::io;

use bytes::Bytes;

use super::record::{Header, HEADER_LEN};
use super::{Log, Position, Segment};

/// A live record read by [`Log::read_live`].
#[derive(Debug, Clone)]
pub struct LiveRecord {
    pub position: Position,
    pub payload: Bytes,
    /// Recovery found a delivery of it recorded before the restart.
    pub delivered: bool,
}

/// What one [`Log::read_live`] found.
#[derive(Debug, Default)]
pub struct Live {
    /// In log order.
    pub records: Vec<LiveRecord>,
    /// Where the next read starts: after the last record looked at.
    pub next: Position,
    /// Nothing more is written after `next` (the end of the log, for now).
    pub end: bool,
    /// Records that could not be read (a damaged segment): skipped, with an error logged.
    pub unreadable: bool,
}

/// How a record in a read buffer looks.
enum Parsed {
    /// A whole record: its payload and where the next one starts.
    Record(Bytes, u64),
    /// It goes past the buffer: read again from its start.
    Incomplete,
    /// Not a record (corruption, or zeros where compaction punched).
    Bad,
}

impl Segment {
    fn settled_mark(&self, offset: u32) -> bool {
        self.marks
            .as_ref()
            .is_some_and(|m| m.settled.binary_search(&offset).is_ok())
    }

    fn delivered_mark(&self, offset: u32) -> bool {
        self.marks
            .as_ref()
            .is_some_and(|m| m.delivered.binary_search(&offset).is_ok())
    }

    /// Where the punched range holding `offset` ends, if one does.
    fn punched_over(&self, offset: u32) -> Option<u32> {
        self.punched
            .iter()
            .filter(|(start, end)| *start <= offset && offset < *end)
            .map(|(_, end)| *end)
            .max()
    }
}

impl Log {
    /// The live records from `from` on, in log order: at least one if any is left (a record
    /// larger than `max_bytes` is read whole), else none with `end` set. Records the caller
    /// does not want (another priority's) it filters itself and reads on from
    /// [`Live::next`]. A cursor in a segment deleted meanwhile (all its records settled)
    /// moves to the next one.
    pub fn read_live(&mut self, from: Position, max_bytes: usize) -> io::Result<Live> {
        let mut at = from;
        loop {
            let first = self.segments.partition_point(|s| s.id < at.segment);
            let Some(segment) = self.segments.get(first) else {
                return Ok(Live {
                    next: at,
                    end: true,
                    ..Live::default()
                });
            };
            if segment.id != at.segment {
                at = Position {
                    segment: segment.id,
                    offset: 0,
                };
            }
            // Recovery found every record before the first live one settled or dropped.
            if let Some(first) = segment.marks.as_ref().map(|m| m.first_live) {
                at.offset = at.offset.max(first);
            }
            let active = self.active.as_ref().is_some_and(|(a, _)| *a == at.segment);
            if u64::from(at.offset) >= segment.size {
                if active {
                    return Ok(Live {
                        next: at,
                        end: true,
                        ..Live::default()
                    });
                }
                at = Position {
                    segment: at.segment.saturating_add(1),
                    offset: 0,
                };
                if at.segment == 0 {
                    return Ok(Live::default());
                }
                continue;
            }
            if active && !self.pending().is_empty() {
                self.flush_records()?;
            }
            let live = self.read_segment(at, max_bytes)?;
            if !live.records.is_empty() || live.end || live.next != at {
                return Ok(live);
            }
            // Only skipped records so far (settled ones): go on from where it stopped.
            at = live.next;
        }
    }

    /// One read of the segment of `at` (which has records from `at` on).
    fn read_segment(&self, at: Position, max_bytes: usize) -> io::Result<Live> {
        let Some(segment) = self.segment(at.segment) else {
            return Ok(Live {
                next: at,
                ..Live::default()
            });
        };
        let start = u64::from(at.offset);
        let end = segment.size.min(start.saturating_add(max_bytes as u64));
        let mut buf = vec![0; (end - start) as usize];
        segment.msgs.read_exact_at(&mut buf, start)?;
        let buf = Bytes::from(buf);
        let mut live = Live {
            next: at,
            ..Live::default()
        };
        let mut offset = start;
        while offset < end {
            let offset32 = offset as u32; // below the segment's size, itself below 4 GiB
            let rel = (offset - start) as usize;
            match parse(&buf, rel, segment.size - offset) {
                Parsed::Record(payload, len) => {
                    if !segment.settled_mark(offset32) {
                        live.records.push(LiveRecord {
                            position: Position {
                                segment: at.segment,
                                offset: offset32,
                            },
                            payload,
                            delivered: segment.delivered_mark(offset32),
                        });
                    }
                    offset += len;
                }
                Parsed::Incomplete if offset > start => break,
                Parsed::Incomplete => {
                    // One record larger than the read: read it alone.
                    let position = Position {
                        segment: at.segment,
                        offset: offset32,
                    };
                    let payload = self.read(position)?;
                    let len = HEADER_LEN + payload.len() as u64;
                    if !segment.settled_mark(offset32) {
                        live.records.push(LiveRecord {
                            position,
                            delivered: segment.delivered_mark(offset32),
                            payload,
                        });
                    }
                    offset += len;
                    break;
                }
                Parsed::Bad => match segment.punched_over(offset32) {
                    Some(past) => offset = u64::from(past),
                    None => {
                        tracing::error!(
                            dir = %self.dir.display(),
                            segment = at.segment,
                            offset,
                            "queue log: a record cannot be read; the rest of its segment is skipped"
                        );
                        live.unreadable = true;
                        offset = segment.size;
                        break;
                    }
                },
            }
        }
        live.next = Position {
            segment: at.segment,
            offset: offset.min(u64::from(u32::MAX)) as u32,
        };
        Ok(live)
    }
}

/// The record at `rel` in `buf`, which must end within `available` bytes of the segment.
fn parse(buf: &Bytes, rel: usize, available: u64) -> Parsed {
    let Some(header) = buf
        .get(rel..rel + HEADER_LEN as usize)
        .and_then(|h| <[u8; HEADER_LEN as usize]>::try_from(h).ok())
        .map(Header::parse)
    else {
        return Parsed::Incomplete;
    };
    let Some(len) = header.bounded_len(available.saturating_sub(HEADER_LEN)) else {
        return Parsed::Bad;
    };
    let body = rel + HEADER_LEN as usize;
    let Some(payload) = buf
        .get(body..body + len)
        .map(|_| buf.slice(body..body + len))
    else {
        return Parsed::Incomplete;
    };
    match header.matches(&payload) {
        true => Parsed::Record(payload, HEADER_LEN + len as u64),
        false => Parsed::Bad,
    }
}

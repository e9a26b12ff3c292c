//! The message body layout and the clock its timestamps come from.
//!
//! Body: bytes 0..8 = producer id (top 16 bits) | sequence (low 48 bits), big-endian; bytes 8..16 =
//! send time in ns on the [`Clock`]; the rest is zeros. Producers and consumers run in one process,
//! so the clock is shared and end-to-end latency is `receive time - send time`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The smallest body the tool can send.
pub const STAMP_LEN: usize = 16;
const SEQUENCE_BITS: u32 = 48;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;

/// A monotonic clock in ns whose zero is the Unix epoch at process start. A message stamped
/// before this process started (a leftover in a durable queue) reads as earlier than
/// [`Clock::origin`] and is recognised as foreign.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    origin: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            origin,
        }
    }

    /// Now, in ns.
    pub fn now(&self) -> u64 {
        self.origin + self.start.elapsed().as_nanos() as u64
    }

    /// The value of [`Clock::now`] when the process started.
    pub fn origin(&self) -> u64 {
        self.origin
    }
}

/// Writes producer id, sequence and timestamp into the first 16 bytes of `body`.
pub fn stamp(body: &mut [u8], producer: u16, sequence: u64, sent_at: u64) {
    let id = (u64::from(producer) << SEQUENCE_BITS) | (sequence & SEQUENCE_MASK);
    body[0..8].copy_from_slice(&id.to_be_bytes());
    body[8..16].copy_from_slice(&sent_at.to_be_bytes());
}

/// What a received body says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub producer: usize,
    pub sequence: u64,
    pub sent_at: u64,
}

/// Reads the stamp; `None` for a body too short to carry one.
pub fn read(body: &[u8]) -> Option<Stamp> {
    let id = u64::from_be_bytes(body.get(0..8)?.try_into().ok()?);
    let sent_at = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    Some(Stamp {
        producer: (id >> SEQUENCE_BITS) as usize,
        sequence: id & SEQUENCE_MASK,
        sent_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut body = vec![0u8; 20];
        stamp(&mut body, 7, 123_456, 99);
        assert_eq!(
            read(&body),
            Some(Stamp {
                producer: 7,
                sequence: 123_456,
                sent_at: 99
            })
        );
        assert_eq!(read(&body[..15]), None);
    }
}

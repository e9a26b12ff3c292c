//! The companion file of a segment (`acks.NNNNNNNNNN`): what happened to its records, as
//! fixed-size entries appended one per event:
//!
//! ```text
//! u32 offset (big endian) | u8 kind (1 settled, 2 delivered) | u24 low bits of crc32c(first 5 bytes)
//! ```
//!
//! Eight bytes, so an entry never straddles a disk sector. An entry that is partial (a torn last
//! write), zero-filled, fails its check, has an unknown kind, or names an offset that is not a
//! record start is ignored. Duplicates are harmless (recovery reads the file as two sets).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

pub(super) const ENTRY_LEN: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Settled = 1,
    Delivered = 2,
}

pub(super) fn encode(kind: Kind, offset: u32) -> [u8; ENTRY_LEN as usize] {
    let mut entry = [0; ENTRY_LEN as usize];
    entry[..4].copy_from_slice(&offset.to_be_bytes());
    entry[4] = kind as u8;
    let check = check(&entry).to_be_bytes();
    entry[5..].copy_from_slice(&check[1..]);
    entry
}

pub(super) fn decode(entry: [u8; ENTRY_LEN as usize]) -> Option<(Kind, u32)> {
    let check = check(&entry).to_be_bytes();
    if entry[5..] != check[1..] {
        return None;
    }
    let kind = match entry[4] {
        1 => Kind::Settled,
        2 => Kind::Delivered,
        _ => return None,
    };
    let [a, b, c, d, ..] = entry;
    Some((kind, u32::from_be_bytes([a, b, c, d])))
}

fn check(entry: &[u8; ENTRY_LEN as usize]) -> u32 {
    crc32c::crc32c(&entry[..5]) & 0x00ff_ffff
}

/// An acks file as read at recovery: sorted, deduplicated offsets.
#[derive(Debug, Default)]
pub(super) struct Acks {
    pub settled: Vec<u32>,
    pub delivered: Vec<u32>,
    /// Where the next entry goes: the file's length rounded down to whole entries (so a torn last
    /// entry is overwritten).
    pub append_at: u64,
}

impl Acks {
    pub(super) fn read(path: &Path) -> io::Result<Acks> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Acks::default()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut acks = Acks {
            append_at: len - len % ENTRY_LEN,
            ..Acks::default()
        };
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut entry = [0; ENTRY_LEN as usize];
        for _ in 0..len / ENTRY_LEN {
            reader.read_exact(&mut entry)?;
            match decode(entry) {
                Some((Kind::Settled, offset)) => acks.settled.push(offset),
                Some((Kind::Delivered, offset)) => acks.delivered.push(offset),
                None => {}
            }
        }
        for set in [&mut acks.settled, &mut acks.delivered] {
            set.sort_unstable();
            set.dedup();
        }
        Ok(acks)
    }

    pub(super) fn is_settled(&self, offset: u32) -> bool {
        self.settled.binary_search(&offset).is_ok()
    }

    pub(super) fn is_delivered(&self, offset: u32) -> bool {
        self.delivered.binary_search(&offset).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_zeros_are_ignored() {
        for kind in [Kind::Settled, Kind::Delivered] {
            for offset in [0, 1, 4096, u32::MAX] {
                assert_eq!(decode(encode(kind, offset)), Some((kind, offset)));
            }
        }
        assert_eq!(decode([0; 8]), None);
        let mut bad = encode(Kind::Settled, 8);
        bad[3] ^= 1;
        assert_eq!(decode(bad), None);
    }
}

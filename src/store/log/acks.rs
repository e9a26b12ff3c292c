//! The companion file of a segment (`acks.NNNNNNNNNN`): what happened to its records, as
//! fixed-size entries appended one per event:
//!
//! ```text
//! u32 offset (big endian) | u8 kind | u24 low bits of crc32c(first 5 bytes)
//! ```
//!
//! Kinds: 1 settled, 2 delivered, and the pair 3 (punch start) immediately followed by 4 (punch
//! end): the records from the start offset up to (not including) the end offset are all settled
//! and compaction may have punched holes in them (see `log/compact.rs`), so recovery jumps from
//! the start to the end without reading them. A 3 not directly followed by a 4 with a greater
//! offset (a torn pair), or a lone 4, means nothing.
//!
//! Eight bytes, so an entry never straddles a disk sector. An entry that is partial (a torn last
//! write), zero-filled, fails its check, has an unknown kind, or names an offset that is not a
//! record start is ignored. Duplicates are harmless (recovery reads the file as sets).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(super) const ENTRY_LEN: u64 = 8;

/// How much of an acks file is read at once (a whole number of entries).
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Settled = 1,
    Delivered = 2,
    PunchStart = 3,
    PunchEnd = 4,
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
        3 => Kind::PunchStart,
        4 => Kind::PunchEnd,
        _ => return None,
    };
    let [a, b, c, d, ..] = entry;
    Some((kind, u32::from_be_bytes([a, b, c, d])))
}

/// The two entries saying that the records in `start..end` are settled and may be punched.
pub(super) fn encode_punched(start: u32, end: u32) -> [u8; 2 * ENTRY_LEN as usize] {
    let mut pair = [0; 2 * ENTRY_LEN as usize];
    pair[..ENTRY_LEN as usize].copy_from_slice(&encode(Kind::PunchStart, start));
    pair[ENTRY_LEN as usize..].copy_from_slice(&encode(Kind::PunchEnd, end));
    pair
}

fn check(entry: &[u8; ENTRY_LEN as usize]) -> u32 {
    crc32c::crc32c(&entry[..5]) & 0x00ff_ffff
}

/// An acks file as read at recovery (or by compaction): sorted, deduplicated offsets.
#[derive(Debug, Default)]
pub(super) struct Acks {
    pub settled: Vec<u32>,
    pub delivered: Vec<u32>,
    /// Punched ranges `(start, end)`, sorted; for one start, the greatest end is the one that
    /// counts (a range only ever grows: its records stay settled).
    pub punched: Vec<(u32, u32)>,
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
        Acks::read_prefix(&file, len)
    }

    /// The entries in the first `len` bytes of an acks file (positioned reads: the file's offset
    /// is not used). Entries are only ever appended, so a prefix that was completely written
    /// before the call reads the same whatever is appended during it.
    pub(super) fn read_prefix(file: &File, len: u64) -> io::Result<Acks> {
        let mut acks = Acks {
            append_at: len - len % ENTRY_LEN,
            ..Acks::default()
        };
        let mut chunk = vec![0; READ_CHUNK.min(acks.append_at as usize)];
        let mut at = 0;
        let mut punch_start = None;
        while at < acks.append_at {
            let n = chunk.len().min((acks.append_at - at) as usize);
            file.read_exact_at(&mut chunk[..n], at)?;
            at += n as u64;
            for entry in chunk[..n].chunks_exact(ENTRY_LEN as usize) {
                let mut bytes = [0; ENTRY_LEN as usize];
                bytes.copy_from_slice(entry);
                let decoded = decode(bytes);
                match decoded {
                    Some((Kind::Settled, offset)) => acks.settled.push(offset),
                    Some((Kind::Delivered, offset)) => acks.delivered.push(offset),
                    Some((Kind::PunchEnd, end)) => {
                        if let Some(start) = punch_start.filter(|start| *start < end) {
                            acks.punched.push((start, end));
                        }
                    }
                    Some((Kind::PunchStart, _)) | None => {}
                }
                punch_start = match decoded {
                    Some((Kind::PunchStart, start)) => Some(start),
                    _ => None,
                };
            }
        }
        for set in [&mut acks.settled, &mut acks.delivered] {
            set.sort_unstable();
            set.dedup();
        }
        acks.punched.sort_unstable();
        acks.punched.dedup();
        Ok(acks)
    }

    /// Where the punched range starting at `offset` ends, if one does.
    pub(super) fn punched_end(&self, offset: u32) -> Option<u32> {
        let after = self.punched.partition_point(|(start, _)| *start <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.punched.get(i))
            .filter(|(start, _)| *start == offset)
            .map(|(_, end)| *end)
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

    #[test]
    fn punched_pairs_need_both_halves_in_order() {
        let dir = std::env::temp_dir().join(format!("warren-acks-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acks.0000000001");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_punched(100, 9000));
        bytes.extend_from_slice(&encode(Kind::Settled, 5));
        bytes.extend_from_slice(&encode_punched(100, 20000)); // grown later
        bytes.extend_from_slice(&encode(Kind::PunchStart, 30000)); // torn pair
        bytes.extend_from_slice(&encode(Kind::Settled, 6));
        bytes.extend_from_slice(&encode(Kind::PunchEnd, 40000)); // lone end
        bytes.extend_from_slice(&encode_punched(50000, 50000)); // empty
        bytes.extend_from_slice(&encode_punched(60000, 50000)); // backwards
        let mut bad = encode_punched(70000, 80000);
        bad[12] ^= 1;
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&encode(Kind::PunchStart, 90000)); // torn at the end
        std::fs::write(&path, &bytes).unwrap();
        let acks = Acks::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(acks.punched, [(100, 9000), (100, 20000)]);
        assert_eq!(acks.settled, [5, 6]);
        assert_eq!(acks.punched_end(100), Some(20000));
        for offset in [0, 99, 101, 30000, 50000, 60000, 70000, 90000] {
            assert_eq!(acks.punched_end(offset), None, "{offset}");
        }
    }
}

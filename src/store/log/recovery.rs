//! Recovery: rebuilding a log's in-memory state (per segment: record count, settled count and
//! bytes, valid size) from its directory, and the records still live.
//!
//! A range that the acks file says was punched (compaction, `log/compact.rs`) is jumped over when
//! the scan reaches its exact start: its records are all settled, and its bytes may be zeros.
//! Nowhere else is anything skipped, so torn tails and corruption are found as before.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::acks::Acks;
use super::record::{Header, HEADER_LEN};
use super::{acks_path, msgs_path, Files, Keep, Marks, Position, Recovered, Segment};

/// What recovery rebuilt.
pub(super) struct State {
    /// Sorted by id.
    pub segments: VecDeque<Segment>,
    /// The directory was there (a log never appended to has none).
    pub dir_exists: bool,
    pub records: Vec<Recovered>,
    /// Live records the caller chose to drop ([`Keep::Drop`]), to be settled.
    pub dropped: Vec<Position>,
    pub truncated_bytes: u64,
    /// The highest segment id seen in a file name (0 if none).
    pub max_id: u32,
}

/// The files of one segment id found in the directory.
#[derive(Default, Clone, Copy)]
struct Found {
    msgs: bool,
    acks: bool,
}

/// `msgs.0000000001` -> (true, 1); anything else (including id 0) is not ours.
fn parse_name(name: &str) -> Option<(bool, u32)> {
    let (is_msgs, digits) = if let Some(d) = name.strip_prefix("msgs.") {
        (true, d)
    } else {
        (false, name.strip_prefix("acks.")?)
    };
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = digits.parse::<u32>().ok().filter(|id| *id > 0)?;
    Some((is_msgs, id))
}

pub(super) fn recover(
    dir: &Arc<Path>,
    files: &Files,
    decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
) -> io::Result<State> {
    let mut state = State {
        segments: VecDeque::new(),
        dir_exists: true,
        records: Vec::new(),
        dropped: Vec::new(),
        truncated_bytes: 0,
        max_id: 0,
    };
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            state.dir_exists = false;
            return Ok(state);
        }
        other => other?,
    };
    let mut found: BTreeMap<u32, Found> = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let parsed = name.to_str().and_then(parse_name);
        match parsed {
            Some((is_msgs, id)) if entry.file_type()?.is_file() => {
                let f = found.entry(id).or_default();
                if is_msgs {
                    f.msgs = true;
                } else {
                    f.acks = true;
                }
            }
            _ => {
                tracing::debug!(dir = %dir.display(), file = ?name, "ignoring unknown file in queue log")
            }
        }
    }
    state.max_id = found.keys().next_back().copied().unwrap_or(0);
    let last_msgs = found.iter().rev().find(|(_, f)| f.msgs).map(|(id, _)| *id);
    for (&id, f) in &found {
        if !f.msgs {
            // The segment was deleted and only its acks file remains.
            remove_if_present(&acks_path(dir, id))?;
            continue;
        }
        let is_last = Some(id) == last_msgs;
        recover_segment(dir, files, id, is_last, &mut state, decide)?;
    }
    Ok(state)
}

fn recover_segment(
    dir: &Arc<Path>,
    files: &Files,
    id: u32,
    is_last: bool,
    state: &mut State,
    decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
) -> io::Result<()> {
    let acks = Acks::read(&acks_path(dir, id))?;
    let path = msgs_path(dir, id);
    let first_live = state.records.len();
    let first_dropped = state.dropped.len();
    let scan = scan(&path, id, &acks, state, decide)?;
    let mut damaged = false;
    if scan.end < scan.file_len {
        if is_last {
            tracing::info!(
                segment = id,
                offset = scan.end,
                bytes = scan.file_len - scan.end,
                "queue log: cutting the torn tail of the last segment"
            );
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(scan.end)?;
            state.truncated_bytes += scan.file_len - scan.end;
        } else if zeros_from(&path, scan.end)? {
            tracing::warn!(segment = id, offset = scan.end,
                "queue log: sealed segment ends in zeros (a write lost in a crash); reading stops there");
        } else {
            damaged = true;
            tracing::warn!(dir = %dir.display(), segment = id, offset = scan.end,
                "queue log: bad record in a sealed segment; its later records are unreadable and \
                 its files are kept (remove msgs/acks of this segment once inspected)");
        }
    }
    if scan.settled == scan.records && !damaged {
        // Fully settled (or empty): nothing in it is needed.
        remove_if_present(&path)?;
        remove_if_present(&acks_path(dir, id))?;
        state.records.truncate(first_live);
        state.dropped.truncate(first_dropped);
        return Ok(());
    }
    state.segments.push_back(Segment {
        records: scan.records,
        settled: scan.settled,
        size: scan.end,
        settled_bytes: scan.settled_bytes + scan.punched_bytes,
        compacted_bytes: scan.punched_bytes,
        acks_len: acks.append_at,
        damaged,
        marks: marks(&acks, &scan),
        punched: acks.punched.clone(),
        ..Segment::new(files, dir, id, None)
    });
    Ok(())
}

struct Scan {
    /// The first live record's offset (neither settled nor dropped).
    first_live: Option<u32>,
    /// Live records the caller dropped ([`Keep::Drop`]), settled after the scan.
    dropped: Vec<u32>,
    /// Records read (those in punched ranges are not counted, neither here nor in `settled`).
    records: u32,
    settled: u32,
    /// Bytes (headers included) of the settled records read.
    settled_bytes: u64,
    /// Bytes of the punched ranges jumped over.
    punched_bytes: u64,
    /// Where the valid data ends (the first bad or incomplete record, or the file's end).
    end: u64,
    file_len: u64,
}

/// Reads a segment record by record, pushing its unsettled records (with their payload, or only
/// their position, as `decide` says), until its end or the first record that is incomplete,
/// implausible or fails its checksum. A punched range is jumped over from its start.
fn scan(
    path: &Path,
    id: u32,
    acks: &Acks,
    state: &mut State,
    decide: &mut dyn FnMut(Position, &[u8]) -> Keep,
) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut scan = Scan {
        first_live: None,
        dropped: Vec::new(),
        records: 0,
        settled: 0,
        settled_bytes: 0,
        punched_bytes: 0,
        end: 0,
        file_len,
    };
    let mut scratch = Vec::new();
    loop {
        let offset = scan.end;
        let Ok(offset32) = u32::try_from(offset) else {
            break; // positions are u32; nothing we wrote lies beyond
        };
        let punched = acks
            .punched_end(offset32)
            .filter(|end| u64::from(*end) <= file_len);
        if let Some(end) = punched {
            // All settled; perhaps zeros now.
            reader.seek_relative(i64::from(end - offset32))?;
            scan.end = u64::from(end);
            scan.punched_bytes += u64::from(end - offset32);
            continue;
        }
        if file_len - offset < HEADER_LEN {
            break;
        }
        let mut header = [0; HEADER_LEN as usize];
        reader.read_exact(&mut header)?;
        let header = Header::parse(header);
        let Some(len) = header.bounded_len(file_len - offset - HEADER_LEN) else {
            break;
        };
        let settled = acks.is_settled(offset32);
        scratch.resize(len, 0);
        reader.read_exact(&mut scratch)?;
        if !header.matches(&scratch) {
            break;
        }
        scan.records += 1;
        scan.end = offset + HEADER_LEN + len as u64;
        if settled {
            scan.settled += 1;
            scan.settled_bytes += HEADER_LEN + len as u64;
            continue;
        }
        let position = Position {
            segment: id,
            offset: offset32,
        };
        let (payload, meta) = match decide(position, &scratch) {
            Keep::Payload(meta) => (Bytes::copy_from_slice(&scratch), meta),
            Keep::Leave => {
                scan.first_live.get_or_insert(offset32);
                continue;
            }
            Keep::Drop => {
                state.dropped.push(position);
                scan.dropped.push(offset32);
                continue;
            }
        };
        scan.first_live.get_or_insert(offset32);
        state.records.push(Recovered {
            position,
            payload,
            delivered: acks.is_delivered(offset32),
            meta,
        });
    }
    Ok(scan)
}

/// What a reader of the segment's live records must know: where the first is (the records
/// before it are settled or dropped: a reader entering the segment skips them), which of those
/// after it were settled (acked out of order before the restart, or dropped now) and which
/// delivered. `None` if nothing (the usual case: a backlog nobody consumed, or consumed in order).
fn marks(acks: &Acks, scan: &Scan) -> Option<Box<Marks>> {
    // No live record in a kept segment (a damaged one): everything readable is skipped.
    let first = scan
        .first_live
        .unwrap_or_else(|| u32::try_from(scan.end).unwrap_or(u32::MAX));
    let mut settled: Vec<u32> = acks
        .settled
        .iter()
        .copied()
        .filter(|offset| *offset > first)
        .chain(
            scan.dropped
                .iter()
                .copied()
                .filter(|offset| *offset > first),
        )
        .collect();
    settled.sort_unstable();
    settled.dedup();
    let delivered: Vec<u32> = acks
        .delivered
        .iter()
        .copied()
        .filter(|offset| *offset >= first && settled.binary_search(offset).is_err())
        .collect();
    if first == 0 && settled.is_empty() && delivered.is_empty() {
        return None;
    }
    Some(Box::new(Marks {
        first_live: first,
        settled,
        delivered,
    }))
}

/// Whether the file holds only zero bytes from `offset` on.
fn zeros_from(path: &Path, offset: u64) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

pub(super) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn names() {
        assert_eq!(parse_name("msgs.0000000001"), Some((true, 1)));
        assert_eq!(parse_name("acks.4294967295"), Some((false, u32::MAX)));
        for bad in [
            "msgs.0000000000",
            "msgs.1",
            "msgs.00000000001",
            "msgs.4294967296",
            "msgs.000000000a",
            "msgs.+000000001",
            "other",
            "msgs.0000000001.tmp",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("warren-log-unit-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn payloads(recovery: &Recovery) -> Vec<Vec<u8>> {
    recovery
        .records
        .iter()
        .map(|r| r.payload.to_vec())
        .collect()
}

#[test]
fn append_read_round_trip() {
    let tmp = TempDir::new("round-trip");
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(recovery.records.is_empty());
    let a = log.append(b"hello").unwrap();
    let b = log.append(b"world!").unwrap();
    assert_eq!(
        a,
        Position {
            segment: 1,
            offset: 0
        }
    );
    assert_eq!(
        b,
        Position {
            segment: 1,
            offset: 13
        }
    );
    assert_eq!(&log.read(a).unwrap()[..], b"hello");
    assert_eq!(&log.read(b).unwrap()[..], b"world!");
    // A position that is not a record start is refused, never panics.
    assert!(log
        .read(Position {
            segment: 1,
            offset: 3
        })
        .is_err());
    assert!(log
        .read(Position {
            segment: 1,
            offset: 1000
        })
        .is_err());
    assert!(log
        .read(Position {
            segment: 9,
            offset: 0
        })
        .is_err());
}

#[test]
fn empty_and_large_payloads() {
    let tmp = TempDir::new("sizes");
    let (mut log, _) = Log::open(&tmp.0, 4096).unwrap();
    let large: Vec<u8> = (0..3 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let e = log.append(b"").unwrap();
    let l = log.append(&large).unwrap();
    let e2 = log.append(b"").unwrap();
    assert_eq!(
        l,
        Position {
            segment: 2,
            offset: 0
        },
        "a large record gets its own segment"
    );
    assert_eq!(e2.segment, 3);
    assert_eq!(&log.read(e).unwrap()[..], b"");
    assert_eq!(log.read(l).unwrap().to_vec(), large);
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 4096).unwrap();
    assert_eq!(payloads(&recovery), vec![Vec::new(), large, Vec::new()]);
}

#[test]
fn segments_roll_over_at_segment_size() {
    let tmp = TempDir::new("roll");
    // Records of 8 + 92 = 100 bytes: ten fit in 1000.
    let (mut log, _) = Log::open(&tmp.0, 1000).unwrap();
    let positions: Vec<Position> = (0..25).map(|_| log.append(&[7; 92]).unwrap()).collect();
    assert_eq!(
        positions[9],
        Position {
            segment: 1,
            offset: 900
        }
    );
    assert_eq!(
        positions[10],
        Position {
            segment: 2,
            offset: 0
        }
    );
    assert_eq!(
        positions[24],
        Position {
            segment: 3,
            offset: 400
        }
    );
    assert_eq!(
        files(&tmp.0),
        ["msgs.0000000001", "msgs.0000000002", "msgs.0000000003"]
    );
    assert_eq!(
        std::fs::metadata(tmp.0.join("msgs.0000000001"))
            .unwrap()
            .len(),
        1000
    );
}

#[test]
fn settling_everything_deletes_sealed_segments() {
    let tmp = TempDir::new("settle");
    let (mut log, _) = Log::open(&tmp.0, 1000).unwrap();
    let positions: Vec<Position> = (0..25).map(|_| log.append(&[1; 92]).unwrap()).collect();
    // Settle out of order, partly.
    for p in positions.iter().rev().take(20) {
        log.settle(*p).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(
        files(&tmp.0),
        [
            "acks.0000000001",
            "acks.0000000003",
            "msgs.0000000001",
            "msgs.0000000003"
        ]
    );
    for p in &positions[..5] {
        log.settle(*p).unwrap();
    }
    // The active segment stays, even when fully settled.
    assert_eq!(files(&tmp.0), ["acks.0000000003", "msgs.0000000003"]);
    // ... until it is sealed.
    let next = log.append(&[2; 992]).unwrap();
    assert_eq!(next.segment, 4);
    assert_eq!(files(&tmp.0), ["msgs.0000000004"]);
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1000).unwrap();
    assert_eq!(recovery.records.len(), 1);
    assert_eq!(recovery.records[0].position, next);
}

#[test]
fn reopen_recovers_unsettled_records_in_order_with_delivered_flags() {
    let tmp = TempDir::new("reopen");
    let (mut log, _) = Log::open(&tmp.0, 300).unwrap();
    let positions: Vec<Position> = (0..20u8).map(|i| log.append(&[i; 40]).unwrap()).collect();
    for (i, p) in positions.iter().enumerate() {
        match i % 4 {
            0 => log.settle(*p).unwrap(),
            1 => log.mark_delivered(*p).unwrap(),
            2 => {
                log.mark_delivered(*p).unwrap();
                log.settle(*p).unwrap();
            }
            _ => {}
        }
    }
    drop(log);
    let (mut log, recovery) = Log::open(&tmp.0, 300).unwrap();
    assert_eq!(recovery.truncated_bytes, 0);
    let expected: Vec<(Position, u8, bool)> = positions
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 1 || i % 4 == 3)
        .map(|(i, p)| (*p, i as u8, i % 4 == 1))
        .collect();
    let got: Vec<(Position, u8, bool)> = recovery
        .records
        .iter()
        .map(|r| (r.position, r.payload[0], r.delivered))
        .collect();
    assert_eq!(got, expected);
    for r in &recovery.records {
        assert_eq!(log.read(r.position).unwrap(), r.payload);
    }
    // New appends go to a fresh segment; settling the recovered ones still frees segments.
    let fresh = log.append(b"after").unwrap();
    assert!(fresh.segment > positions[19].segment);
    for r in &recovery.records {
        log.settle(r.position).unwrap();
    }
    let mut left = files(&tmp.0);
    left.retain(|f| f.starts_with("msgs"));
    assert_eq!(left, [format!("msgs.{:010}", fresh.segment)]);
}

#[test]
fn unknown_files_in_the_dir_are_ignored() {
    let tmp = TempDir::new("unknown");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let p = log.append(b"kept").unwrap();
    drop(log);
    for name in [
        "notes.txt",
        "msgs.1",
        "msgs.0000000000",
        "acks.x",
        "msgs.0000000001.bak",
    ] {
        std::fs::write(tmp.0.join(name), b"\xff\xff\xff\xffgarbage").unwrap();
    }
    std::fs::create_dir(tmp.0.join("msgs.0000000007")).unwrap();
    let (log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.records.len(), 1);
    assert_eq!(recovery.records[0].position, p);
    assert!(files(&tmp.0).contains(&"notes.txt".to_string()));
    log.destroy().unwrap();
    assert!(!tmp.0.exists());
}

#[test]
fn take_dirty_hands_each_file_once() {
    let tmp = TempDir::new("dirty");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let take = |log: &mut Log| {
        let (files, flushed) = log.take_dirty();
        flushed.unwrap();
        files
    };
    // Nothing was created yet.
    assert!(take(&mut log).is_empty());
    let a = log.append(b"a").unwrap();
    log.append(b"b").unwrap();
    // The parent directory (the log's directory was created), the directory (the first segment
    // was created) and the segment.
    assert_eq!(take(&mut log).len(), 3);
    assert!(take(&mut log).is_empty());
    log.append(b"b").unwrap();
    assert_eq!(take(&mut log).len(), 1);
    log.append(b"c").unwrap();
    assert_eq!(take(&mut log).len(), 1);
    log.mark_delivered(a).unwrap();
    log.settle(a).unwrap();
    // The acks file and the directory.
    let dirty = take(&mut log);
    assert_eq!(dirty.len(), 2);
    for file in dirty {
        file.sync().unwrap();
    }
    assert!(take(&mut log).is_empty());
}

#[test]
fn appends_and_acks_are_buffered_until_flushed_and_read_back_from_the_buffer() {
    let tmp = TempDir::new("buffered");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let a = log.append(b"first").unwrap();
    let b = log.append(b"second").unwrap();
    let segment = tmp.0.join(format!("msgs.{:010}", a.segment));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        0,
        "nothing written yet"
    );
    assert_eq!(&log.read(b).unwrap()[..], b"second", "read from the buffer");
    log.mark_delivered(a).unwrap();
    log.flush().unwrap();
    assert!(
        std::fs::metadata(&segment).unwrap().len() > 0,
        "written by flush"
    );
    assert_eq!(&log.read(a).unwrap()[..], b"first", "read from the file");
    // A log dropped with buffered writes writes them: the next open sees them.
    log.append(b"third").unwrap();
    log.settle(b).unwrap();
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    let payloads: Vec<_> = recovery
        .records
        .iter()
        .map(|r| (r.payload.to_vec(), r.delivered))
        .collect();
    assert_eq!(
        payloads,
        vec![(b"first".to_vec(), true), (b"third".to_vec(), false)]
    );
}

#[test]
fn acks_file_only_and_orphans_are_cleaned() {
    let tmp = TempDir::new("orphans");
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::fs::write(tmp.0.join("acks.0000000005"), [1, 2, 3]).unwrap();
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(recovery.records.is_empty());
    assert!(files(&tmp.0).is_empty());
    // Ids are never reused.
    assert_eq!(log.append(b"x").unwrap().segment, 6);
    assert_eq!(files(&tmp.0), ["msgs.0000000006"]);
}

#[test]
fn an_empty_log_recovers_without_creating_files() {
    let tmp = TempDir::new("empty");
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(recovery.records.is_empty());
    assert_eq!(recovery.segments, 0);
    assert!(!tmp.0.exists(), "no directory before the first append");
    let (dirty, flushed) = log.take_dirty();
    flushed.unwrap();
    assert!(dirty.is_empty());
    drop(log);
    let (log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(!tmp.0.exists());
    log.destroy().unwrap();
    // A directory left empty (its segments settled and deleted) stays as it is.
    std::fs::create_dir_all(&tmp.0).unwrap();
    let (log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.segments, 0);
    assert!(files(&tmp.0).is_empty());
    drop(log);
    assert!(files(&tmp.0).is_empty());
}

#[test]
fn the_first_append_starts_a_segment_that_survives_a_restart() {
    let tmp = TempDir::new("lazy");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let a = log.append(b"first").unwrap();
    assert_eq!(a.segment, 1);
    assert_eq!(files(&tmp.0), ["msgs.0000000001"]);
    let (dirty, flushed) = log.take_dirty();
    flushed.unwrap();
    for file in dirty {
        file.sync().unwrap();
    }
    drop(log);
    // Reopened without appending: nothing new on disk, the record still there.
    for _ in 0..2 {
        let (log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovery), vec![b"first".to_vec()]);
        assert_eq!(recovery.segments, 1);
        drop(log);
        assert_eq!(files(&tmp.0), ["msgs.0000000001"]);
    }
    // An append after recovery never goes after recovered data: a new segment.
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let b = log.append(b"second").unwrap();
    assert_eq!(b.segment, 2);
    log.settle(a).unwrap();
    assert_eq!(
        files(&tmp.0),
        ["msgs.0000000002"],
        "the sealed, settled one went"
    );
    drop(log);
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(payloads(&recovery), vec![b"second".to_vec()]);
    // A recovered segment is sealed: settled whole, it goes at once.
    log.settle(b).unwrap();
    assert!(files(&tmp.0).is_empty());
    drop(log);
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(recovery.records.is_empty());
    assert!(files(&tmp.0).is_empty());
    let c = log.append(b"third").unwrap();
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(payloads(&recovery), vec![b"third".to_vec()]);
    assert_eq!(recovery.records[0].position, c);
}

/// Whether the filesystem holding the temp dir can punch holes (notes it when not).
fn punching_works(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&[1; 16384], 0).unwrap();
    let works = compact::punch_hole(&file, 4096, 8192).is_ok();
    std::fs::remove_file(&path).unwrap();
    if !works {
        eprintln!("NOTE: this filesystem cannot punch holes; the hole checks pass vacuously");
    }
    works
}

fn allocated(dir: &Path, id: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(msgs_path(dir, id)).unwrap().blocks() * 512
}

/// Fills segment 1 (of 1 MiB) with 4 KiB-ish records, seals it (with one record in segment 2),
/// settles all but every tenth (marking the kept ones delivered); returns the live records with
/// their payloads, in order.
fn mostly_settled_segment(log: &mut Log) -> Vec<(Position, Vec<u8>)> {
    let mut positions = Vec::new();
    let mut next = None;
    for i in 0u32.. {
        let payload: Vec<u8> = (0..4000 + i % 97).map(|j| (i * 7 + j) as u8).collect();
        let position = log.append(&payload).unwrap();
        if position.segment != 1 {
            next = Some((position, payload));
            break;
        }
        positions.push((position, payload));
    }
    let mut kept = Vec::new();
    for (i, (position, payload)) in positions.into_iter().enumerate() {
        if i % 10 == 3 {
            log.mark_delivered(position).unwrap();
            kept.push((position, payload));
        } else {
            log.settle(position).unwrap();
        }
    }
    kept.extend(next);
    kept
}

#[test]
fn compaction_frees_settled_blocks_and_keeps_live_records() {
    let tmp = TempDir::new("compact");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = mostly_settled_segment(&mut log);
    let before = allocated(&tmp.0, 1);
    let freed = log.compact().unwrap();
    let after = allocated(&tmp.0, 1);
    eprintln!("segment of 1 MiB, 90% settled: {before} -> {after} bytes allocated, {freed} freed");
    if punching_works(&tmp.0.join("probe-dir")) {
        assert_eq!(freed, before - after);
        assert!(after < before / 4, "{before} -> {after}");
    }
    // Nothing more to do until more is settled.
    assert_eq!(log.compact().unwrap(), 0);
    for (position, payload) in &kept {
        assert_eq!(&log.read(*position).unwrap()[..], &payload[..]);
    }
    let appended = log.append(b"later").unwrap();
    drop(log);
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    let got: Vec<(Position, Vec<u8>, bool)> = recovery
        .records
        .iter()
        .map(|r| (r.position, r.payload.to_vec(), r.delivered))
        .collect();
    let mut want: Vec<(Position, Vec<u8>, bool)> = kept
        .iter()
        .map(|(p, d)| (*p, d.clone(), p.segment == 1))
        .collect();
    want.push((appended, b"later".to_vec(), false));
    assert_eq!(got, want);
    assert_eq!(recovery.truncated_bytes, 0);
    // The recovered counts still delete the segment when its last records are settled.
    let next = log.append(b"after reopen").unwrap();
    assert_eq!(&log.read(next).unwrap()[..], b"after reopen");
    for (position, _) in &kept {
        log.settle(*position).unwrap();
    }
    assert!(!msgs_path(&tmp.0, 1).exists());
    assert!(!acks_path(&tmp.0, 1).exists());
}

/// Only settled records are ever punched, so a crash between writing the punched pairs and
/// punching (pairs, no holes) recovers the same.
#[test]
fn punched_pairs_without_holes_recover_the_same() {
    fn no_punch(_: &File, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    let tmp = TempDir::new("no-hole");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    log.punch = Some(no_punch);
    let kept = mostly_settled_segment(&mut log);
    log.flush().unwrap();
    let acks_before = std::fs::metadata(acks_path(&tmp.0, 1)).unwrap().len();
    assert_eq!(log.compact().unwrap(), 0);
    let acks_after = std::fs::metadata(acks_path(&tmp.0, 1)).unwrap().len();
    assert!(acks_after > acks_before, "punched pairs were written");
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    let got: Vec<Position> = recovery.records.iter().map(|r| r.position).collect();
    let want: Vec<Position> = kept.iter().map(|(p, _)| *p).collect();
    assert_eq!(got, want);
    assert!(recovery
        .records
        .iter()
        .all(|r| r.delivered == (r.position.segment == 1)));
}

#[test]
fn a_filesystem_without_hole_punching_stops_compaction() {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    fn unsupported(_: &File, _: u64, _: u64) -> io::Result<()> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    let tmp = TempDir::new("unsupported");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    log.punch = Some(unsupported);
    let kept = mostly_settled_segment(&mut log);
    assert_eq!(log.compact().unwrap(), 0);
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert!(log.punch.is_none());
    // A later segment is not tried.
    let second = mostly_settled_segment_at(&mut log, 2);
    assert_eq!(log.compact().unwrap(), 0);
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.records.len(), kept.len() + second + 1);
    assert_eq!(
        recovery
            .records
            .iter()
            .filter(|r| r.position.segment == 2)
            .count(),
        1 + second
    );
}

/// Like [`mostly_settled_segment`] for the active segment `id` (with 1 KiB records); returns how
/// many records are left live (one more, in the next segment, seals it).
fn mostly_settled_segment_at(log: &mut Log, id: u32) -> usize {
    let mut positions = Vec::new();
    loop {
        let position = log.append(&[5; 1024]).unwrap();
        if position.segment != id {
            break;
        }
        positions.push(position);
    }
    let mut live = 0;
    for (i, position) in positions.into_iter().enumerate() {
        if i % 10 == 0 {
            live += 1;
        } else {
            log.settle(position).unwrap();
        }
    }
    live
}

#[test]
fn read_live_reads_consecutive_records_in_one_go_and_skips_damage() {
    let tmp = TempDir::new("read-live");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let positions: Vec<Position> = (0..10u8)
        .map(|i| log.append(&vec![i; 100 + usize::from(i)]).unwrap())
        .collect();
    let offsets =
        |live: &Live| -> Vec<u32> { live.records.iter().map(|r| r.position.offset).collect() };
    // Not yet written: flushed first, then read from the file.
    let live = log.read_live(positions[2], 1 << 20).unwrap();
    let expected: Vec<u32> = positions[2..].iter().map(|p| p.offset).collect();
    assert_eq!(offsets(&live), expected);
    for (i, record) in live.records.iter().enumerate() {
        assert_eq!(&record.payload[..], &vec![i as u8 + 2; 102 + i][..]);
    }
    let after = log.read_live(live.next, 1 << 20).unwrap();
    assert!(after.records.is_empty() && after.end);
    // A small budget still returns the first record, whole.
    let live = log.read_live(positions[4], 10).unwrap();
    assert_eq!(live.records.len(), 1);
    assert_eq!(&live.records[0].payload[..], &[4; 104][..]);
    // A flipped byte in record 6 ends what is read before it (the rest of its segment is
    // skipped, said).
    log.roll().unwrap();
    let path = tmp.0.join(format!("msgs.{:010}", positions[6].segment));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[positions[6].offset as usize + 20] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let live = log.read_live(positions[3], 1 << 20).unwrap();
    let expected: Vec<u32> = positions[3..6].iter().map(|p| p.offset).collect();
    assert_eq!(offsets(&live), expected);
    assert!(live.unreadable);
}

/// Reads every live record from `from` to the log's end, as `read_live` hands them to a run:
/// the first byte of each.
fn read_all_live(log: &mut Log, from: Position) -> Vec<u8> {
    let mut at = from;
    let mut seen = Vec::new();
    loop {
        let live = log.read_live(at, 1 << 20).unwrap();
        seen.extend(live.records.iter().map(|r| r.payload[0]));
        if live.end {
            return seen;
        }
        at = live.next;
    }
}

#[test]
fn a_recovered_run_skips_the_settled_records_heading_a_later_segment() {
    let tmp = TempDir::new("run-head-settled");
    // Four 100-byte records per segment.
    let (mut log, _) = Log::open(&tmp.0, 4 * 108).unwrap();
    let positions: Vec<Position> = (0..12u8).map(|i| log.append(&[i; 100]).unwrap()).collect();
    assert_eq!(positions[4].segment, positions[0].segment + 1);
    // A consumer acked the head of the second segment while holding the end of the first (out
    // of order), and a transient record (dropped at recovery) heads the third.
    log.settle(positions[4]).unwrap();
    log.settle(positions[5]).unwrap();
    log.settle(positions[1]).unwrap();
    log.flush().unwrap();
    drop(log);
    // Recovery leaves every live record in the log (a run from the first), dropping record 8.
    let (mut log, recovery) = Log::open_with(&tmp.0, 4 * 108, &mut |position, _| match position
        == positions[8]
    {
        true => Keep::Drop,
        false => Keep::Leave,
    })
    .unwrap();
    assert!(recovery.records.is_empty());
    // Before the fix, 4 and 5 (acked) and 8 (dropped) were read back as live: acked messages
    // delivered again, and their second settle deleted the segment under its live records.
    assert_eq!(
        read_all_live(&mut log, positions[0]),
        [0, 2, 3, 6, 7, 9, 10, 11]
    );
    assert_eq!(read_all_live(&mut log, positions[3]), [3, 6, 7, 9, 10, 11]);
}

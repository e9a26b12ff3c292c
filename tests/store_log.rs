//! Crash and corruption tests for the per-queue log (`warren::store::log`): torn writes at every
//! cut point, flipped bytes, zero tails, garbage files, compaction (punched holes, crashes around
//! it, damage next to it), and a model-based property test.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use warren::store::log::{Log, Position, Recovery};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "warren-store-log-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("msgs.{id:010}"))
}

fn acks_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("acks.{id:010}"))
}

/// Deterministic payloads of varied sizes (some empty).
fn payload(i: usize) -> Vec<u8> {
    let len = (i * 37) % 90;
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

fn payloads(recovery: &Recovery) -> Vec<Vec<u8>> {
    recovery
        .records
        .iter()
        .map(|r| r.payload.to_vec())
        .collect()
}

/// A small xorshift generator (no dependency, reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Writes `n` records into one segment; returns the segment's bytes and each record's end offset.
fn write_one_segment(n: usize) -> (Vec<u8>, Vec<u64>) {
    let tmp = TempDir::new("source");
    let (mut log, _) = Log::open(&tmp.0, 1 << 30).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        let p = log.append(&payload(i)).unwrap();
        assert_eq!(p.segment, 1);
        ends.push(u64::from(p.offset) + 8 + payload(i).len() as u64);
    }
    drop(log);
    (fs::read(segment_path(&tmp.0, 1)).unwrap(), ends)
}

/// Reopens, appends one more record, reopens again: the new record follows `expected`.
fn append_after_recovery_works(dir: &Path, expected: &[Vec<u8>]) {
    let (mut log, _) = Log::open(dir, 1 << 30).unwrap();
    let p = log.append(b"after the crash").unwrap();
    assert_eq!(&log.read(p).unwrap()[..], b"after the crash");
    drop(log);
    let (_, recovery) = Log::open(dir, 1 << 30).unwrap();
    let mut want = expected.to_vec();
    want.push(b"after the crash".to_vec());
    assert_eq!(payloads(&recovery), want);
    assert_eq!(recovery.truncated_bytes, 0);
}

#[test]
fn torn_tail_at_every_cut_point_of_the_last_records() {
    let n = 40;
    let (bytes, ends) = write_one_segment(n);
    let tail_start = ends[n - 5];
    let mut cuts: Vec<u64> = (tail_start..=bytes.len() as u64).collect();
    cuts.extend((0..tail_start).step_by(7));
    for cut in cuts {
        let tmp = TempDir::new("torn");
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(segment_path(&tmp.0, 1), &bytes[..cut as usize]).unwrap();
        let (log, recovery) = Log::open(&tmp.0, 1 << 30).unwrap();
        let complete = ends.iter().filter(|end| **end <= cut).count();
        let expected: Vec<Vec<u8>> = (0..complete).map(payload).collect();
        assert_eq!(payloads(&recovery), expected, "cut at {cut}");
        let last_end = if complete == 0 { 0 } else { ends[complete - 1] };
        assert_eq!(recovery.truncated_bytes, cut - last_end, "cut at {cut}");
        drop(log);
        append_after_recovery_works(&tmp.0, &expected);
    }
}

#[test]
fn torn_tail_of_the_last_of_several_segments() {
    let tmp = TempDir::new("torn-multi");
    let (mut log, _) = Log::open(&tmp.0, 400).unwrap();
    let positions: Vec<Position> = (0..30).map(|i| log.append(&payload(i)).unwrap()).collect();
    drop(log);
    let last = positions[29].segment;
    assert!(last >= 3);
    let first_in_last = positions.iter().position(|p| p.segment == last).unwrap();
    let len = fs::metadata(segment_path(&tmp.0, last)).unwrap().len();
    let original = fs::read(segment_path(&tmp.0, last)).unwrap();
    for cut in 0..len {
        fs::write(segment_path(&tmp.0, last), &original[..cut as usize]).unwrap();
        let (_, recovery) = Log::open(&tmp.0, 400).unwrap();
        let kept = recovery.records.len();
        assert!(
            kept >= first_in_last,
            "earlier segments are intact (cut {cut})"
        );
        let expected: Vec<Vec<u8>> = (0..kept).map(payload).collect();
        assert_eq!(payloads(&recovery), expected);
        let complete = positions[first_in_last..]
            .iter()
            .enumerate()
            .filter(|(k, p)| {
                u64::from(p.offset) + 8 + payload(first_in_last + k).len() as u64 <= cut
            })
            .count();
        assert_eq!(kept, first_in_last + complete, "cut at {cut}");
        // The recovery removed an emptied last segment, or cut it; put the bytes back.
        let _ = fs::remove_file(segment_path(&tmp.0, last));
        for entry in fs::read_dir(&tmp.0).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let id: u32 = name[5..].parse().unwrap();
            if id > last {
                fs::remove_file(path).unwrap();
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_the_last_segment_ends_the_data_at_that_record() {
    let n = 25;
    let (bytes, ends) = write_one_segment(n);
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let tmp = TempDir::new("flip");
            fs::create_dir_all(&tmp.0).unwrap();
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            fs::write(segment_path(&tmp.0, 1), &damaged).unwrap();
            let (_, recovery) = Log::open(&tmp.0, 1 << 30).unwrap();
            let hit = ends.iter().filter(|end| **end <= at as u64).count();
            let expected: Vec<Vec<u8>> = (0..hit).map(payload).collect();
            assert_eq!(payloads(&recovery), expected, "byte {at} ^ {flip:#x}");
            let start = if hit == 0 { 0 } else { ends[hit - 1] };
            assert_eq!(recovery.truncated_bytes, bytes.len() as u64 - start);
            append_after_recovery_works(&tmp.0, &expected);
        }
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_keeps_it_and_later_segments() {
    let tmp = TempDir::new("flip-sealed");
    let (mut log, _) = Log::open(&tmp.0, 300).unwrap();
    let positions: Vec<Position> = (0..20).map(|i| log.append(&payload(i)).unwrap()).collect();
    drop(log);
    let in_first = positions.iter().filter(|p| p.segment == 1).count();
    assert!(in_first > 3 && positions[19].segment > 1);
    // Damage the third record of segment 1.
    let path = segment_path(&tmp.0, 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[positions[2].offset as usize + 9] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let (mut log, recovery) = Log::open(&tmp.0, 300).unwrap();
    let expected: Vec<Vec<u8>> = (0..2).chain(in_first..20).map(payload).collect();
    assert_eq!(payloads(&recovery), expected);
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "a sealed segment is never cut"
    );
    // Settling its readable records does not delete the damaged segment's data.
    for r in &recovery.records {
        log.settle(r.position).unwrap();
    }
    assert!(path.exists());
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 300).unwrap();
    assert!(recovery.records.is_empty());
    assert!(path.exists());
}

#[test]
fn zero_filled_tails_are_the_end() {
    let tmp = TempDir::new("zeros");
    let (mut log, _) = Log::open(&tmp.0, 300).unwrap();
    let positions: Vec<Position> = (0..20).map(|i| log.append(&payload(i)).unwrap()).collect();
    drop(log);
    let last = positions[19].segment;
    for id in [1, last] {
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&tmp.0, id))
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + 4096).unwrap();
    }
    let (mut log, recovery) = Log::open(&tmp.0, 300).unwrap();
    assert_eq!(
        payloads(&recovery),
        (0..20).map(payload).collect::<Vec<_>>()
    );
    assert_eq!(recovery.truncated_bytes, 4096);
    // A zero tail in a sealed segment is a lost write, not damage: the segment still goes.
    for r in &recovery.records {
        log.settle(r.position).unwrap();
    }
    assert!(!segment_path(&tmp.0, 1).exists());
}

#[test]
fn garbage_files_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let tmp = TempDir::new("garbage");
        fs::create_dir_all(&tmp.0).unwrap();
        let segments = 1 + rng.next() % 3;
        for id in 1..=segments as u32 {
            let len = (rng.next() % 5000) as usize;
            let mut bytes = rng.bytes(len);
            if round % 3 == 0 && len >= 8 {
                // A plausible-looking huge length.
                bytes[..4].copy_from_slice(&(rng.next() as u32 | 0x1000_0000).to_be_bytes());
            }
            fs::write(segment_path(&tmp.0, id), bytes).unwrap();
            let acks_len = (rng.next() % 300) as usize;
            fs::write(acks_path(&tmp.0, id), rng.bytes(acks_len)).unwrap();
        }
        let (mut log, recovery) = Log::open(&tmp.0, 1024).unwrap();
        for r in &recovery.records {
            assert_eq!(log.read(r.position).unwrap(), r.payload);
            log.mark_delivered(r.position).unwrap();
        }
        // Reads of arbitrary positions fail cleanly or succeed; never panic.
        for _ in 0..20 {
            let _ = log.read(Position {
                segment: 1 + (rng.next() % 4) as u32,
                offset: (rng.next() % 6000) as u32,
            });
        }
        let p = log.append(b"still works").unwrap();
        assert_eq!(&log.read(p).unwrap()[..], b"still works");
        drop(log);
        let (_, again) = Log::open(&tmp.0, 1024).unwrap();
        assert_eq!(again.records.len(), recovery.records.len() + 1);
        assert!(again
            .records
            .iter()
            .take(recovery.records.len())
            .all(|r| r.delivered));
    }
}

#[test]
fn huge_length_fields_are_bounded() {
    for len in [u32::MAX, 512 << 20, (512 << 20) + 1, 1 << 31, 100] {
        let tmp = TempDir::new("huge");
        fs::create_dir_all(&tmp.0).unwrap();
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xab; 60]);
        fs::write(segment_path(&tmp.0, 1), bytes).unwrap();
        let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
        assert!(recovery.records.is_empty());
        assert_eq!(recovery.truncated_bytes, 64);
    }
}

#[test]
fn torn_and_junk_acks_entries_are_ignored() {
    let tmp = TempDir::new("acks");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let positions: Vec<Position> = (0..10).map(|i| log.append(&payload(i)).unwrap()).collect();
    log.settle(positions[0]).unwrap();
    log.mark_delivered(positions[1]).unwrap();
    drop(log);
    let acks = acks_path(&tmp.0, 1);
    // A torn last entry (3 of 8 bytes).
    let mut bytes = fs::read(&acks).unwrap();
    bytes.extend_from_slice(&[0, 0, 0]);
    fs::write(&acks, &bytes).unwrap();
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.records.len(), 9);
    assert!(recovery.records[0].delivered);
    // New entries overwrite the torn one.
    log.settle(positions[2]).unwrap();
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.records.len(), 8);
    assert_eq!(recovery.records[0].position, positions[1]);
    // Junk entries, including well-formed ones naming offsets that are no record start.
    let mut bytes = fs::read(&acks).unwrap();
    bytes.extend_from_slice(&[0xff; 24]);
    bytes.extend_from_slice(&[0; 16]);
    fs::write(&acks, &bytes).unwrap();
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    log.settle(Position {
        segment: 1,
        offset: positions[3].offset + 1,
    })
    .unwrap();
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(recovery.records.len(), 8);
}

#[test]
fn an_ack_that_outlived_its_record_never_settles_a_new_one() {
    let tmp = TempDir::new("stale-ack");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let a = log.append(b"first").unwrap();
    let b = log.append(b"second").unwrap();
    log.settle(b).unwrap();
    drop(log);
    // The crash lost the record but not its ack.
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(&tmp.0, 1))
        .unwrap();
    file.set_len(u64::from(b.offset) + 3).unwrap();
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(payloads(&recovery), [b"first".to_vec()]);
    let c = log.append(b"third").unwrap();
    assert_ne!(c, b);
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    let positions: Vec<Position> = recovery.records.iter().map(|r| r.position).collect();
    assert_eq!(positions, [a, c]);
}

/// Whether the filesystem of the temp dir can punch holes; says so when it cannot (the hole
/// checks then pass vacuously).
fn punching_works() -> bool {
    use std::os::fd::AsRawFd;
    let tmp = TempDir::new("probe");
    fs::create_dir_all(&tmp.0).unwrap();
    let path = tmp.0.join("probe");
    fs::write(&path, [1u8; 16384]).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // SAFETY: a plain syscall on an open descriptor.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            8192,
        )
    };
    if result != 0 {
        eprintln!(
            "NOTE: the temp dir's filesystem cannot punch holes ({}); hole checks pass vacuously",
            std::io::Error::last_os_error()
        );
    }
    result == 0
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// A live record: where, what, and whether its delivery was recorded.
type Kept = (Position, Vec<u8>, bool);

fn kept_of(recovery: &Recovery) -> Vec<Kept> {
    recovery
        .records
        .iter()
        .map(|r| (r.position, r.payload.to_vec(), r.delivered))
        .collect()
}

/// Fills segment 1 of a log of `segment_size` with records of `record_len` bytes (payload
/// varies), then seals it with a record in segment 2. Records `i` with `live(i)` stay live (odd
/// ones marked delivered); the others are settled. Returns the live records in order (the one
/// in segment 2 last).
fn fill_and_settle(log: &mut Log, record_len: usize, live: &dyn Fn(usize) -> bool) -> Vec<Kept> {
    let mut kept = Vec::new();
    for i in 0.. {
        let payload: Vec<u8> = (0..record_len - 8 - i % 5)
            .map(|j| (i * 13 + j) as u8)
            .collect();
        let position = log.append(&payload).unwrap();
        if position.segment != 1 {
            kept.push((position, payload, false));
            break;
        }
        if live(i) {
            let delivered = i % 2 == 1;
            if delivered {
                log.mark_delivered(position).unwrap();
            }
            kept.push((position, payload, delivered));
        } else {
            log.settle(position).unwrap();
        }
    }
    // Written to the files, as a queue's flush after each batch does.
    log.flush().unwrap();
    kept
}

/// Record size, which records stay live, what that is, the most of the segment that may stay
/// allocated after compaction.
type Case<'a> = (usize, &'a dyn Fn(usize) -> bool, &'a str, f64);

#[test]
fn compaction_frees_blocks_and_reopen_jumps_the_holes() {
    let works = punching_works();
    let segment_size = 8 << 20;
    let cases: [Case; 4] = [
        (
            1024,
            &|i| i % 10 == 0,
            "1 KiB records, every 10th live",
            0.9,
        ),
        (
            4096,
            &|i| i % 10 == 0,
            "4 KiB records, every 10th live",
            0.25,
        ),
        (
            1024,
            &|i| i < 820,
            "1 KiB records, the oldest 10% live",
            0.11,
        ),
        (1024, &|i| i == 5000, "1 KiB records, one live", 0.01),
    ];
    for (record_len, live, what, most) in cases {
        let tmp = TempDir::new("compact");
        let (mut log, _) = Log::open(&tmp.0, segment_size).unwrap();
        let kept = fill_and_settle(&mut log, record_len, live);
        let path = segment_path(&tmp.0, 1);
        // As the group commit would have by then.
        for file in log.take_dirty().0 {
            file.sync().unwrap();
        }
        let before = allocated(&path);
        let started = std::time::Instant::now();
        let freed = log.compact().unwrap();
        let elapsed = started.elapsed();
        let after = allocated(&path);
        eprintln!(
            "8 MiB segment, {what}: {} -> {} KiB allocated ({} KiB freed) in {elapsed:?}",
            before >> 10,
            after >> 10,
            freed >> 10
        );
        if works {
            assert_eq!(freed, before - after, "{what}");
            assert!((after as f64) < before as f64 * most, "{what}");
        }
        for (position, payload, _) in &kept {
            assert_eq!(&log.read(*position).unwrap()[..], &payload[..], "{what}");
        }
        drop(log);
        let (mut log, recovery) = Log::open(&tmp.0, segment_size).unwrap();
        assert_eq!(kept_of(&recovery), kept, "{what}");
        assert_eq!(recovery.truncated_bytes, 0);
        let p = log.append(b"after").unwrap();
        assert_eq!(&log.read(p).unwrap()[..], b"after");
        // Nothing to compact again right after recovery.
        assert_eq!(log.compact().unwrap(), 0);
        for (position, _, _) in &kept {
            log.settle(*position).unwrap();
        }
        assert!(!path.exists(), "{what}: settled at last, the segment goes");
    }
}

#[test]
fn compaction_happens_again_as_more_is_settled() {
    let works = punching_works();
    let tmp = TempDir::new("compact-again");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    // Every 10th of 4 KiB records live, and every 3rd of the first half's others at first.
    let extra = |i: usize| i < 128 && i % 3 == 1 && !i.is_multiple_of(10);
    let kept = fill_and_settle(&mut log, 4096, &|i| i % 10 == 0 || extra(i));
    let path = segment_path(&tmp.0, 1);
    let first = log.compact().unwrap();
    let after_first = allocated(&path);
    // Then the extra ones are settled: their runs grow over the punched ones.
    let extra_offsets: Vec<u32> = (0..256usize)
        .filter(|i| extra(*i))
        .map(|i| (0..i).map(|k| 4096 - k as u32 % 5).sum())
        .collect();
    let (settle, kept): (Vec<Kept>, Vec<Kept>) = kept
        .into_iter()
        .partition(|(p, _, _)| p.segment == 1 && extra_offsets.contains(&p.offset));
    assert_eq!(settle.len(), extra_offsets.len());
    assert_eq!(log.compact().unwrap(), 0, "nothing new settled");
    for (position, _, _) in &settle {
        log.settle(*position).unwrap();
    }
    let second = log.compact().unwrap();
    let after_second = allocated(&path);
    eprintln!(
        "1 MiB segment compacted twice: freed {first} then {second} bytes, {after_second} left"
    );
    if works {
        assert!(first > 0 && second > 0);
        assert!(after_second < after_first);
    }
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
}

/// A crash after the punched pairs were synced but before (some of) the holes were made: the
/// segment still holds the settled records' bytes, and recovery is the same.
#[test]
fn a_crash_between_recording_a_punch_and_punching_recovers() {
    let tmp = TempDir::new("punch-crash");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let path = segment_path(&tmp.0, 1);
    let original = fs::read(&path).unwrap();
    let acks_before = fs::metadata(acks_path(&tmp.0, 1)).unwrap().len();
    log.compact().unwrap();
    assert!(fs::metadata(acks_path(&tmp.0, 1)).unwrap().len() > acks_before);
    drop(log);
    // Undo the holes: the pairs are there, the punch never happened.
    fs::write(&path, &original).unwrap();
    let (log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
    drop(log);
    // Only half of the holes made: the same.
    let punched = fs::read(&path).unwrap();
    let mut half = punched.clone();
    half[original.len() / 2..].copy_from_slice(&original[original.len() / 2..]);
    fs::write(&path, &half).unwrap();
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
}

/// A torn pair (the start written, not the end) means nothing: the records it would have named
/// are read (and found settled) as before.
#[test]
fn a_torn_punch_record_is_ignored() {
    let tmp = TempDir::new("torn-pair");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let acks = acks_path(&tmp.0, 1);
    let acks_before = fs::read(&acks).unwrap();
    let path = segment_path(&tmp.0, 1);
    let original = fs::read(&path).unwrap();
    log.compact().unwrap();
    drop(log);
    let acks_after = fs::read(&acks).unwrap();
    assert!(acks_after.len() >= acks_before.len() + 16);
    for keep in [
        acks_before.len() + 3,
        acks_before.len() + 8,
        acks_before.len() + 12,
    ] {
        // The pairs never fully reached the disk, so neither did the holes.
        fs::write(&acks, &acks_after[..keep]).unwrap();
        fs::write(&path, &original).unwrap();
        let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
        assert_eq!(kept_of(&recovery), kept, "acks cut at {keep}");
    }
}

/// Damage outside the punched ranges of a compacted sealed segment is found as in any sealed
/// segment; damage inside them (bytes of settled records) is never read.
#[test]
fn damage_next_to_holes_is_still_found() {
    let tmp = TempDir::new("compact-damage");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    log.compact().unwrap();
    drop(log);
    let path = segment_path(&tmp.0, 1);
    let compacted = fs::read(&path).unwrap();
    // Inside a settled record between two live ones: skipped.
    let mut bytes = compacted.clone();
    let in_settled = kept[3].0.offset as usize + 3000 + 1500;
    bytes[in_settled] ^= 0x5a;
    fs::write(&path, &bytes).unwrap();
    let (log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
    drop(log);
    // In a live record: it and the rest of its segment are unreadable, the files kept.
    let mut bytes = compacted.clone();
    bytes[kept[3].0.offset as usize + 20] ^= 0x5a;
    fs::write(&path, &bytes).unwrap();
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    let mut want = kept[..3].to_vec();
    want.push(kept[kept.len() - 1].clone());
    assert_eq!(kept_of(&recovery), want);
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "a sealed segment is never cut"
    );
}

/// A compacted segment that ends up the last one (the next segment's file was lost) still has
/// its holes jumped over, and a torn tail after them is cut as usual.
#[test]
fn a_compacted_last_segment_with_a_torn_tail() {
    let tmp = TempDir::new("compact-last");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let mut kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let spilled = kept.pop().unwrap();
    log.compact().unwrap();
    drop(log);
    fs::remove_file(segment_path(&tmp.0, spilled.0.segment)).unwrap();
    let path = segment_path(&tmp.0, 1);
    let len = fs::metadata(&path).unwrap().len();
    let last = kept.last().unwrap().0.offset as u64;
    // Cut the last live record in half.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(last + 1000)
        .unwrap();
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    kept.pop();
    assert_eq!(kept_of(&recovery), kept);
    assert!(recovery.truncated_bytes > 0 && recovery.truncated_bytes < len - last);
}

/// The compaction steps one by one, as the queue runs them: only `start_compaction` and
/// `record_punches` would hold the queue's lock. Prints their time against the whole.
#[test]
fn compaction_steps_hold_the_lock_briefly() {
    let works = punching_works();
    let tmp = TempDir::new("compact-steps");
    let (mut log, _) = Log::open(&tmp.0, 8 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 1024, &|i| i % 10 == 0);
    for file in log.take_dirty().0 {
        file.sync().unwrap();
    }
    let path = segment_path(&tmp.0, 1);
    let before = allocated(&path);
    let started = std::time::Instant::now();
    let job = log.start_compaction().unwrap().expect("segment 1 is due");
    let start = started.elapsed();
    let plan = job.plan().unwrap();
    let planned = started.elapsed();
    assert!(plan.has_holes());
    assert!(log.record_punches(&job, &plan).unwrap());
    let recorded = started.elapsed();
    let freed = job.sync_and_punch(&plan).unwrap();
    let total = started.elapsed();
    let locked = start + (recorded - planned);
    eprintln!(
        "8 MiB segment, 1 KiB records, every 10th live: locked {locked:?} (start {start:?}, \
         record {:?}) of {total:?} (plan {:?}, sync and punch {:?}); {} KiB freed",
        recorded - planned,
        planned - start,
        total - recorded,
        freed >> 10
    );
    assert!(log.start_compaction().unwrap().is_none(), "not due again");
    if works {
        assert_eq!(freed, before - allocated(&path));
        assert!(allocated(&path) < before);
    }
    for (position, payload, _) in &kept {
        assert_eq!(&log.read(*position).unwrap()[..], &payload[..]);
    }
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 8 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
}

/// Between the steps, the log goes on: more records of the segment are settled (not punched this
/// time, punched by the next compaction).
#[test]
fn the_log_moves_on_between_compaction_steps() {
    let works = punching_works();
    let tmp = TempDir::new("compact-between");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2 || i % 7 == 5);
    let path = segment_path(&tmp.0, 1);
    let job = log.start_compaction().unwrap().expect("due");
    let plan = job.plan().unwrap();
    // Settle every other live record of segment 1 (joining the runs around them): more than an
    // eighth of the segment, so that it is due again.
    let (mut settle, mut rest) = (Vec::new(), Vec::new());
    for (i, live) in kept.into_iter().enumerate() {
        match live.0.segment == 1 && i % 2 == 1 {
            true => settle.push(live),
            false => rest.push(live),
        }
    }
    let kept = rest;
    for (position, _, _) in &settle {
        log.settle(*position).unwrap();
    }
    assert!(log.record_punches(&job, &plan).unwrap());
    job.sync_and_punch(&plan).unwrap();
    let after_first = allocated(&path);
    for (position, payload, _) in &kept {
        assert_eq!(&log.read(*position).unwrap()[..], &payload[..]);
    }
    // The records settled meanwhile count towards the next compaction.
    assert!(log.compact().unwrap() > 0 || !works);
    if works {
        assert!(allocated(&path) < after_first);
    }
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
}

/// Between the steps, every record of the segment is settled: it is deleted, and the job writes
/// nothing and recreates no file.
#[test]
fn a_segment_deleted_between_compaction_steps_stays_deleted() {
    let tmp = TempDir::new("compact-deleted");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let path = segment_path(&tmp.0, 1);
    let job = log.start_compaction().unwrap().expect("due");
    let plan = job.plan().unwrap();
    assert!(plan.has_holes());
    let (in_one, rest): (Vec<Kept>, Vec<Kept>) = kept.into_iter().partition(|k| k.0.segment == 1);
    for (position, _, _) in &in_one {
        log.settle(*position).unwrap();
    }
    assert!(!path.exists() && !acks_path(&tmp.0, 1).exists());
    assert!(!log.record_punches(&job, &plan).unwrap());
    assert!(!acks_path(&tmp.0, 1).exists(), "no acks file recreated");
    job.sync_and_punch(&plan).unwrap(); // harmless through the unlinked files
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), rest);
}

/// A job outliving its log (the queue was deleted, and maybe declared again in the same
/// directory) changes nothing in the log that follows.
#[test]
fn a_compaction_job_outliving_its_log_does_nothing() {
    let tmp = TempDir::new("compact-destroyed");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let job = log.start_compaction().unwrap().expect("due");
    log.destroy().unwrap();
    let plan = job.plan().unwrap();
    assert!(plan.has_holes(), "planned through the unlinked files");
    let (mut log, _) = Log::open(&tmp.0, 1 << 20).unwrap();
    let kept = fill_and_settle(&mut log, 3000, &|i| i % 7 == 2);
    let acks = fs::read(acks_path(&tmp.0, 1)).unwrap();
    assert!(!log.record_punches(&job, &plan).unwrap());
    assert_eq!(fs::read(acks_path(&tmp.0, 1)).unwrap(), acks);
    job.sync_and_punch(&plan).unwrap();
    drop(log);
    let (_, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert_eq!(kept_of(&recovery), kept);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Settle(usize),
    Deliver(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300).prop_map(Op::Append),
        3 => any::<usize>().prop_map(Op::Settle),
        1 => any::<usize>().prop_map(Op::Deliver),
        1 => Just(Op::Reopen),
    ]
}

/// A live record in the model.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    position: Position,
    payload: Vec<u8>,
    delivered: bool,
}

fn check_recovery(model: &[Live], recovery: &Recovery) {
    let got: Vec<Live> = recovery
        .records
        .iter()
        .map(|r| Live {
            position: r.position,
            payload: r.payload.to_vec(),
            delivered: r.delivered,
        })
        .collect();
    assert_eq!(got, model);
    assert_eq!(recovery.truncated_bytes, 0);
    let mut live_segments: Vec<u32> = model.iter().map(|l| l.position.segment).collect();
    live_segments.dedup();
    assert_eq!(
        recovery.segments,
        live_segments.len(),
        "settled segments are deleted"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn log_matches_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let tmp = TempDir::new("model");
        let segment_size = 700;
        let (mut log, _) = Log::open(&tmp.0, segment_size).unwrap();
        let mut model: Vec<Live> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(len) => {
                    let payload: Vec<u8> = (0..len).map(|j| (step * 13 + j) as u8).collect();
                    let position = log.append(&payload).unwrap();
                    if let Some(last) = model.last() {
                        prop_assert!(position > last.position);
                    }
                    model.push(Live { position, payload, delivered: false });
                }
                Op::Settle(i) if !model.is_empty() => {
                    let live = model.remove(i % model.len());
                    log.settle(live.position).unwrap();
                }
                Op::Deliver(i) if !model.is_empty() => {
                    let n = model.len();
                    let live = &mut model[i % n];
                    live.delivered = true;
                    log.mark_delivered(live.position).unwrap();
                }
                Op::Reopen => {
                    for file in log.take_dirty().0 {
                        file.sync().unwrap();
                    }
                    drop(log);
                    let (reopened, recovery) = Log::open(&tmp.0, segment_size).unwrap();
                    check_recovery(&model, &recovery);
                    log = reopened;
                }
                _ => {}
            }
        }
        for live in &model {
            prop_assert_eq!(&log.read(live.position).unwrap()[..], &live.payload[..]);
        }
        drop(log);
        let (_, recovery) = Log::open(&tmp.0, segment_size).unwrap();
        check_recovery(&model, &recovery);
    }
}

/// Operations of the model with compaction: larger records (holes need whole blocks of settled
/// records), and compactions.
#[derive(Debug, Clone)]
enum CompactOp {
    Append(usize),
    Settle(usize),
    Deliver(usize),
    Compact,
    /// The unlocked half of a compaction started, the rest left for `Finish`.
    Begin,
    Finish,
    Reopen,
}

fn compact_op() -> impl Strategy<Value = CompactOp> {
    prop_oneof![
        4 => (0usize..9000).prop_map(CompactOp::Append),
        4 => any::<usize>().prop_map(CompactOp::Settle),
        1 => any::<usize>().prop_map(CompactOp::Deliver),
        2 => Just(CompactOp::Compact),
        1 => Just(CompactOp::Begin),
        1 => Just(CompactOp::Finish),
        1 => Just(CompactOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn log_with_compaction_matches_a_model(
        ops in proptest::collection::vec(compact_op(), 1..200),
    ) {
        let tmp = TempDir::new("compact-model");
        let segment_size = 64 << 10;
        let (mut log, _) = Log::open(&tmp.0, segment_size).unwrap();
        let mut model: Vec<Live> = Vec::new();
        // A job begun and not finished (it may outlive the log it came from, across a reopen).
        let mut pending = None;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                CompactOp::Begin if pending.is_none() => {
                    if let Some(job) = log.start_compaction().unwrap() {
                        let plan = job.plan().unwrap();
                        pending = Some((job, plan));
                    }
                }
                CompactOp::Finish => {
                    if let Some((job, plan)) = pending.take() {
                        if log.record_punches(&job, &plan).unwrap() {
                            job.sync_and_punch(&plan).unwrap();
                        }
                    }
                    for live in &model {
                        prop_assert_eq!(&log.read(live.position).unwrap()[..], &live.payload[..]);
                    }
                }
                CompactOp::Append(len) => {
                    let payload: Vec<u8> = (0..len).map(|j| (step * 13 + j) as u8).collect();
                    let position = log.append(&payload).unwrap();
                    model.push(Live { position, payload, delivered: false });
                }
                CompactOp::Settle(i) if !model.is_empty() => {
                    let live = model.remove(i % model.len());
                    log.settle(live.position).unwrap();
                }
                CompactOp::Deliver(i) if !model.is_empty() => {
                    let n = model.len();
                    let live = &mut model[i % n];
                    live.delivered = true;
                    log.mark_delivered(live.position).unwrap();
                }
                CompactOp::Compact => {
                    log.compact().unwrap();
                    for live in &model {
                        prop_assert_eq!(&log.read(live.position).unwrap()[..], &live.payload[..]);
                    }
                }
                CompactOp::Reopen => {
                    for file in log.take_dirty().0 {
                        file.sync().unwrap();
                    }
                    drop(log);
                    let (reopened, recovery) = Log::open(&tmp.0, segment_size).unwrap();
                    check_recovery(&model, &recovery);
                    log = reopened;
                }
                _ => {}
            }
        }
        for live in &model {
            prop_assert_eq!(&log.read(live.position).unwrap()[..], &live.payload[..]);
        }
        drop(log);
        let (_, recovery) = Log::open(&tmp.0, segment_size).unwrap();
        check_recovery(&model, &recovery);
    }
}

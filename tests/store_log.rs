//! Crash and corruption tests for the per-queue log (`warren::store::log`): torn writes at every
//! cut point, flipped bytes, zero tails, garbage files, and a model-based property test.

use std::fs::{self, OpenOptions};
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
                    for file in log.take_dirty() {
                        file.sync_data().unwrap();
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

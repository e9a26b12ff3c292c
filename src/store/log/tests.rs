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
    // The parent directory (the queue's directory was created) and the directory (the first
    // segment was created).
    assert_eq!(log.take_dirty().len(), 2);
    assert!(log.take_dirty().is_empty());
    let a = log.append(b"a").unwrap();
    log.append(b"b").unwrap();
    assert_eq!(log.take_dirty().len(), 1);
    log.append(b"c").unwrap();
    assert_eq!(log.take_dirty().len(), 1);
    log.mark_delivered(a).unwrap();
    log.settle(a).unwrap();
    // The acks file and the directory.
    let dirty = log.take_dirty();
    assert_eq!(dirty.len(), 2);
    for file in dirty {
        file.sync_data().unwrap();
    }
    assert!(log.take_dirty().is_empty());
}

#[test]
fn acks_file_only_and_orphans_are_cleaned() {
    let tmp = TempDir::new("orphans");
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::fs::write(tmp.0.join("acks.0000000005"), [1, 2, 3]).unwrap();
    let (mut log, recovery) = Log::open(&tmp.0, 1 << 20).unwrap();
    assert!(recovery.records.is_empty());
    // Ids are never reused.
    assert_eq!(files(&tmp.0), ["msgs.0000000006"]);
    assert_eq!(log.append(b"x").unwrap().segment, 6);
}

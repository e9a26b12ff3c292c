use super::*;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-stream-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// The segment files of `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[derive(Debug, PartialEq)]
struct Owned {
    offset: u64,
    timestamp: u64,
    chunk_start: bool,
    filter: Option<Vec<u8>>,
    payload: Vec<u8>,
}

fn owned(r: RecordRef<'_>) -> Owned {
    Owned {
        offset: r.offset,
        timestamp: r.timestamp,
        chunk_start: r.chunk_start,
        filter: r.filter.map(<[u8]>::to_vec),
        payload: r.payload.to_vec(),
    }
}

/// Every readable record from `from` on, planning again at each segment's end, as a
/// consumer does.
fn read_all(log: &StreamLog, from: u64, max_bytes: usize) -> Vec<Owned> {
    let mut out = Vec::new();
    let mut next = from;
    let mut kept = None;
    while let Some(mut plan) = log.replan(next, kept.take()) {
        while plan
            .read(next, max_bytes, |r| {
                out.push(owned(r));
                true
            })
            .unwrap()
        {}
        next = plan.next_offset();
        kept = Some(plan);
    }
    out
}

/// Appends `n` records of `size` payload bytes with timestamps `ts(offset)`, then flushes.
fn fill(log: &mut StreamLog, n: u64, size: usize, ts: impl Fn(u64) -> u64) {
    for _ in 0..n {
        let offset = log.next_offset();
        log.append(ts(offset), None, &vec![offset as u8; size])
            .unwrap();
    }
    log.flush().unwrap();
}

#[test]
fn records_read_back_across_segments() {
    let dir = temp("roundtrip");
    let mut log = StreamLog::open(&dir, 300).unwrap();
    assert!(log.is_empty());
    assert!(log.plan(0).is_none());
    let mut expected = Vec::new();
    for batch in 0..5u64 {
        for i in 0..7u64 {
            let n = batch * 7 + i;
            let filter = (n % 2 == 0).then(|| format!("f{}", n % 3).into_bytes());
            let payload = vec![n as u8; 20 + n as usize];
            let offset = log.append(1000 + n, filter.as_deref(), &payload).unwrap();
            assert_eq!(offset, n);
            expected.push(Owned {
                offset: n,
                timestamp: 1000 + n,
                chunk_start: i == 0,
                filter,
                payload,
            });
        }
        assert!(log.buffered());
        assert_eq!(log.readable_end(), batch * 7);
        assert!(!log.flush().unwrap().is_empty());
        assert!(!log.buffered());
        assert_eq!(log.readable_end(), (batch + 1) * 7);
    }
    assert!(segment_files(&dir).len() > 3);
    assert_eq!(read_all(&log, 0, 1 << 20), expected);
    assert_eq!(read_all(&log, 17, 100), expected[17..]);
    assert_eq!(log.len(), 35);
    assert_eq!(log.last_chunk_start(), 28);
    let on_disk: u64 = segment_files(&dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(log.bytes(), on_disk);
    log.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn flush_hands_over_the_directories_only_after_creating_a_segment() {
    let dir = temp("flush-files");
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    assert!(log.flush().unwrap().is_empty());
    log.append(1, None, b"a").unwrap();
    // The segment, its directory, and the directory above (open created the stream's).
    assert_eq!(log.flush().unwrap().len(), 3);
    log.append(2, None, b"b").unwrap();
    assert_eq!(log.flush().unwrap().len(), 1);
    let too_long = vec![0u8; 70_000];
    let err = log.append(3, Some(&too_long), b"c").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(log.append(3, Some(b""), b"c").unwrap(), 2);
    log.flush().unwrap();
    assert_eq!(read_all(&log, 2, 100)[0].filter, None);
    log.destroy().unwrap();
}

#[test]
fn a_small_read_stops_at_whole_records_and_resumes() {
    let dir = temp("small-read");
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    fill(&mut log, 10, 100, |o| o);
    let record = (FRAME + HEADER + 100) as u64;
    let mut plan = log.plan(0).unwrap();
    let mut seen = Vec::new();
    let more = plan
        .read(0, 2 * record as usize + 50, |r| {
            seen.push(r.offset);
            true
        })
        .unwrap();
    assert!(more);
    assert_eq!(seen, [0, 1]);
    assert_eq!(plan.next_offset(), 2);
    // Smaller than one record: that one record, whole.
    plan.read(0, 10, |r| {
        seen.push(r.offset);
        assert_eq!(r.payload, &[2u8; 100][..]);
        true
    })
    .unwrap();
    assert_eq!(seen, [0, 1, 2]);
    // The visitor stops after a record.
    plan.read(0, 1 << 20, |r| {
        seen.push(r.offset);
        false
    })
    .unwrap();
    assert_eq!(seen, [0, 1, 2, 3]);
    assert_eq!(plan.next_offset(), 4);
    while plan
        .read(0, record as usize, |r| {
            seen.push(r.offset);
            true
        })
        .unwrap()
    {}
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert!(!plan.read(0, 100, |_| true).unwrap());
    log.destroy().unwrap();
}

#[test]
fn reopen_recovers_offsets_and_chunks() {
    let dir = temp("reopen");
    let mut log = StreamLog::open(&dir, 400).unwrap();
    for n in [3, 4, 5] {
        fill(&mut log, n, 30, |o| o * 10);
    }
    let before = read_all(&log, 0, 1 << 20);
    assert_eq!(log.last_chunk_start(), 7);
    let bytes = log.bytes();
    drop(log);
    let mut log = StreamLog::open(&dir, 400).unwrap();
    assert_eq!(
        (log.first_offset(), log.next_offset(), log.readable_end()),
        (0, 12, 12)
    );
    assert_eq!(
        (log.len(), log.last_chunk_start(), log.bytes()),
        (12, 7, bytes)
    );
    assert_eq!(read_all(&log, 0, 1 << 20), before);
    assert_eq!(log.append(120, None, b"x").unwrap(), 12);
    log.flush().unwrap();
    assert_eq!(log.last_chunk_start(), 12);
    assert!(read_all(&log, 12, 100)[0].chunk_start);
    log.destroy().unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue() {
    let dir = temp("torn");
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    fill(&mut log, 10, 40, |o| o);
    drop(log);
    let path = segment_files(&dir)[0].clone();
    let good = fs::metadata(&path).unwrap().len();
    // Half a record, then a length out of bounds.
    for garbage in [&[0u8, 0, 0, 40, 1, 2, 3][..], &[0xff; 40][..]] {
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut &file, garbage).unwrap();
        let log = StreamLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        assert_eq!(log.next_offset(), 10);
    }
    // Cut inside the last record.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(good - 5)
        .unwrap();
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    assert_eq!((log.next_offset(), log.len()), (9, 9));
    assert_eq!(log.append(9, None, b"again").unwrap(), 9);
    assert_eq!(log.append(10, None, b"more").unwrap(), 10);
    log.flush().unwrap();
    let all = read_all(&log, 0, 1 << 20);
    assert_eq!(all.len(), 11);
    assert_eq!(all[9].payload, b"again");
    drop(log);
    let log = StreamLog::open(&dir, 1 << 20).unwrap();
    assert_eq!(log.next_offset(), 11);
    log.destroy().unwrap();
}

#[test]
fn recovery_keeps_what_it_can_of_older_segments() {
    let dir = temp("older");
    let mut log = StreamLog::open(&dir, 300).unwrap();
    fill(&mut log, 20, 40, |o| o);
    drop(log);
    let files = segment_files(&dir);
    assert!(files.len() >= 4);
    // Damage the second record of the first segment, and the magic of the second one.
    let record = (FRAME + HEADER + 40) as u64;
    let first = OpenOptions::new().write(true).open(&files[0]).unwrap();
    first.write_all_at(b"!", 8 + record + 40).unwrap();
    let second = OpenOptions::new().write(true).open(&files[1]).unwrap();
    second.write_all_at(b"XXXX", 0).unwrap();
    // A last segment created, never written.
    let empty = dir.join(segment_name(20));
    fs::write(&empty, b"WRN").unwrap();
    let mut log = StreamLog::open(&dir, 300).unwrap();
    assert!(!empty.exists());
    assert!(!files[1].exists());
    assert!(Path::new(&format!("{}.bad", files[1].display())).exists());
    assert_eq!((log.first_offset(), log.next_offset()), (0, 20));
    let all: Vec<u64> = read_all(&log, 0, 1 << 20)
        .iter()
        .map(|r| r.offset)
        .collect();
    let third = parse_name(files[2].file_name().unwrap().to_str().unwrap()).unwrap();
    assert_eq!(all, [0].into_iter().chain(third..20).collect::<Vec<_>>());
    // A reader in a gap lands on the next record that exists.
    assert_eq!(read_all(&log, 1, 100)[0].offset, third);
    assert_eq!(log.append(20, None, b"x").unwrap(), 20);
    log.flush().unwrap();
    assert_eq!(read_all(&log, 20, 100).len(), 1);
    log.destroy().unwrap();
}

#[test]
fn a_bad_last_segment_is_set_aside_and_appends_continue_after_its_offsets() {
    let dir = temp("bad-last");
    let mut log = StreamLog::open(&dir, 300).unwrap();
    fill(&mut log, 20, 40, |o| o);
    drop(log);
    let files = segment_files(&dir);
    let n = files.len();
    let last = parse_name(files[n - 1].file_name().unwrap().to_str().unwrap()).unwrap();
    let before = parse_name(files[n - 2].file_name().unwrap().to_str().unwrap()).unwrap();
    // The last one unreadable, the one before damaged at its second record.
    let record = (FRAME + HEADER + 40) as u64;
    let file = OpenOptions::new().write(true).open(&files[n - 1]).unwrap();
    file.write_all_at(b"XXXX", 0).unwrap();
    let file = OpenOptions::new().write(true).open(&files[n - 2]).unwrap();
    file.write_all_at(b"!", 8 + record + 40).unwrap();
    let mut log = StreamLog::open(&dir, 300).unwrap();
    assert_eq!(fs::metadata(&files[n - 2]).unwrap().len(), 8 + record);
    // Offsets once given out are not given again.
    assert_eq!(log.next_offset(), last);
    assert_eq!(log.append(0, None, b"x").unwrap(), last);
    log.flush().unwrap();
    let offsets: Vec<u64> = read_all(&log, before, 1 << 20)
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [before, last]);
    drop(log);
    let log = StreamLog::open(&dir, 300).unwrap();
    assert_eq!(log.next_offset(), last + 1);
    log.destroy().unwrap();
}

#[test]
fn retain_deletes_whole_oldest_sealed_segments() {
    let dir = temp("retain");
    // Every record its own segment.
    let mut log = StreamLog::open(&dir, 1).unwrap();
    fill(&mut log, 10, 50, |o| o * 1000);
    let segment = log.bytes() / 10;
    assert_eq!(segment_files(&dir).len(), 10);
    let retained = log.retain(Some(7 * segment), None, 0).unwrap();
    assert_eq!(
        retained,
        Retained {
            segments: 3,
            messages: 3,
            bytes: 3 * segment
        }
    );
    assert_eq!((log.first_offset(), log.len()), (3, 7));
    assert_eq!(segment_files(&dir).len(), 7);
    assert_eq!(read_all(&log, 0, 1 << 20)[0].offset, 3);
    // By age: newest records older than 10_000 - 5_000.
    let retained = log.retain(None, Some(5_000), 10_000).unwrap();
    assert_eq!((retained.segments, log.first_offset()), (2, 5));
    assert_eq!(
        log.retain(None, Some(5_000), 10_000).unwrap(),
        Retained::default()
    );
    // Never the active one.
    let retained = log.retain(Some(0), Some(0), u64::MAX).unwrap();
    assert_eq!(
        (retained.segments, log.first_offset(), log.len()),
        (4, 9, 1)
    );
    assert_eq!(segment_files(&dir).len(), 1);
    assert_eq!(log.bytes(), segment);
    drop(log);
    let log = StreamLog::open(&dir, 1).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (9, 10));
    log.destroy().unwrap();
}

#[test]
fn a_plan_outlives_the_retention_of_its_segment() {
    let dir = temp("unlinked");
    let mut log = StreamLog::open(&dir, 1).unwrap();
    fill(&mut log, 5, 10, |o| o);
    let mut plan = log.plan(0).unwrap();
    assert!(plan.sealed());
    assert_eq!(log.retain(Some(0), None, 0).unwrap().segments, 4);
    let mut seen = Vec::new();
    plan.read(0, 100, |r| {
        seen.push((r.offset, r.payload.to_vec()));
        true
    })
    .unwrap();
    assert_eq!(seen, [(0, vec![0u8; 10])]);
    // Below first_offset: the first record that exists.
    let plan = log.plan(0).unwrap();
    assert_eq!(plan.next_offset(), 4);
    assert!(!plan.sealed());
    assert!(log.plan(5).is_none());
    log.destroy().unwrap();
}

#[test]
fn a_plan_starts_exactly_at_its_offset_deep_in_a_segment() {
    let dir = temp("deep");
    let mut log = StreamLog::open(&dir, 64 << 20).unwrap();
    for _ in 0..30 {
        fill(&mut log, 100, 1000, |o| o * 10);
    }
    assert_eq!(segment_files(&dir).len(), 1);
    assert!(log.bytes() > 2 << 20);
    let plan = log.plan(2500).unwrap();
    assert!(plan.next_offset() > 2000 && plan.next_offset() <= 2500);
    for from in [0, 1, 253, 254, 1234, 2500, 2999] {
        let all = read_all(&log, from, 64 << 10);
        let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (from..3000).collect::<Vec<_>>());
        assert_eq!(all[0].payload, vec![from as u8; 1000]);
    }
    // offset_at_timestamp, timestamps offset * 10.
    for (ts, offset) in [(0, 0), (5, 1), (10, 1), (12_345, 1235), (29_990, 2999)] {
        assert_eq!(log.offset_at_timestamp(ts).unwrap(), offset, "at {ts}");
    }
    log.append(1 << 40, None, b"buffered").unwrap();
    assert_eq!(log.offset_at_timestamp(29_991).unwrap(), 3000);
    log.destroy().unwrap();
}

#[test]
fn offset_at_timestamp_across_segments() {
    let dir = temp("timestamps");
    let mut log = StreamLog::open(&dir, 500).unwrap();
    fill(&mut log, 40, 30, |o| 100 + o * 2);
    assert!(segment_files(&dir).len() > 3);
    for offset in 0..40 {
        let ts = 100 + offset * 2;
        assert_eq!(log.offset_at_timestamp(ts).unwrap(), offset);
        assert_eq!(log.offset_at_timestamp(ts - 1).unwrap(), offset);
    }
    assert_eq!(log.offset_at_timestamp(0).unwrap(), 0);
    assert_eq!(log.offset_at_timestamp(1000).unwrap(), 40);
    log.retain(Some(0), None, 0).unwrap();
    let first = log.first_offset();
    assert_eq!(log.offset_at_timestamp(0).unwrap(), first);
    log.destroy().unwrap();
}

#[test]
fn a_corrupt_record_in_the_middle_is_an_error_on_read() {
    let dir = temp("corrupt");
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    fill(&mut log, 10, 50, |o| o);
    let record = (FRAME + HEADER + 50) as u64;
    let file = OpenOptions::new()
        .write(true)
        .open(&segment_files(&dir)[0])
        .unwrap();
    file.write_all_at(b"?", 8 + 5 * record + 30).unwrap();
    let mut plan = log.plan(0).unwrap();
    let mut seen = Vec::new();
    let err = plan
        .read(0, 1 << 20, |r| {
            seen.push(r.offset);
            true
        })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    assert_eq!(plan.next_offset(), 5);
    log.destroy().unwrap();
}

#[test]
fn a_kept_plan_reads_each_byte_once_and_grows_with_its_segment() {
    let dir = temp("read-ahead");
    let mut log = StreamLog::open(&dir, 1 << 20).unwrap();
    fill(&mut log, 10, 50, |o| o);
    let record = (FRAME + HEADER + 50) as u64;
    let mut plan = log.plan(0).unwrap();
    let mut seen = Vec::new();
    // One read of all ten; the visitor stops after the third.
    assert!(plan
        .read(0, 1 << 20, |r| {
            seen.push(r.offset);
            r.offset < 2
        })
        .unwrap());
    // Records 3 to 9 are damaged on disk now: the plan hands them over from what it read.
    let file = OpenOptions::new()
        .write(true)
        .open(&segment_files(&dir)[0])
        .unwrap();
    file.write_all_at(b"?", 8 + 5 * record + 30).unwrap();
    let mut plan = log.replan(3, Some(plan)).unwrap();
    while plan
        .read(0, 1 << 20, |r| {
            assert_eq!(r.payload, &[r.offset as u8; 50][..]);
            seen.push(r.offset);
            true
        })
        .unwrap()
    {}
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // A new plan reads the file again, and finds the damage.
    assert!(log.plan(3).unwrap().read(0, 1 << 20, |_| true).is_err());
    // Nothing new to read yet; then the segment grows, and the kept plan reads on.
    assert!(log.plan(10).is_none());
    fill(&mut log, 2, 50, |o| o);
    let mut plan = log.replan(10, Some(plan)).unwrap();
    let mut grown = Vec::new();
    while plan
        .read(0, 1 << 20, |r| {
            grown.push(r.offset);
            true
        })
        .unwrap()
    {}
    assert_eq!(grown, [10, 11]);
    log.destroy().unwrap();
}

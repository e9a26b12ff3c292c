//! The definitions log: round trips, torn and corrupt tails, compaction, the upgrade.

use std::fs;
use std::path::PathBuf;

use super::*;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-deflog-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn no_legacy(_: &[u8]) -> Option<Vec<u8>> {
    None
}

/// Live records as owned bytes, to compare.
type Live = Vec<(Vec<u8>, Vec<u8>)>;

fn open(dir: &std::path::Path) -> (DefinitionLog, Live) {
    let (log, live) = DefinitionLog::open(dir, &no_legacy).expect("open");
    let live = live
        .into_iter()
        .map(|(k, r)| (k.to_vec(), r.to_vec()))
        .collect();
    (log, live)
}

fn pair(key: &str, record: &str) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), record.as_bytes().to_vec())
}

#[test]
fn puts_and_deletes_replay_in_order() {
    let dir = dir("round-trip");
    let syncer = Syncer::start().expect("syncer");
    let (log, live) = open(&dir);
    assert!(live.is_empty());
    log.put(b"q:a", b"A").expect("put");
    log.put(b"q:b", b"B").expect("put");
    log.delete(b"q:a").expect("delete");
    log.put(b"q:c", b"").expect("put");
    log.put(b"q:b", b"B2").expect("put");
    log.commit(&syncer).expect("commit");
    drop(log);
    let (log, live) = open(&dir);
    assert_eq!(live, [pair("q:b", "B2"), pair("q:c", "")]);
    assert_eq!(log.stats().0, 5);
    assert_eq!(log.stats().1, 2);
    log.put(b"q:a", b"again").expect("put");
    log.commit(&syncer).expect("commit");
    drop(log);
    let (_, live) = open(&dir);
    assert_eq!(
        live,
        [pair("q:b", "B2"), pair("q:c", ""), pair("q:a", "again")]
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A log with three committed entries; the file's bytes and where each entry ends.
fn three_entries(dir: &std::path::Path) -> (Vec<u8>, [usize; 3]) {
    let syncer = Syncer::start().expect("syncer");
    let (log, _) = open(dir);
    let mut ends = [0; 3];
    for (i, (key, record)) in [("e:x", "exchange"), ("q:y", "queue"), ("b:x-y", "bind")]
        .into_iter()
        .enumerate()
    {
        log.put(key.as_bytes(), record.as_bytes()).expect("put");
        log.commit(&syncer).expect("commit");
        ends[i] = log.stats().2 as usize;
    }
    (fs::read(dir.join(FILE)).expect("read"), ends)
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = dir("torn");
    let (good, ends) = three_entries(&dir);
    for cut in ends[1]..ends[2] {
        fs::write(dir.join(FILE), &good[..cut]).expect("write");
        let (log, live) = open(&dir);
        assert_eq!(
            live,
            [pair("e:x", "exchange"), pair("q:y", "queue")],
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(dir.join(FILE)).expect("meta").len(),
            ends[1] as u64
        );
        assert_eq!(log.stats().2, ends[1] as u64);
    }
    let syncer = Syncer::start().expect("syncer");
    let (log, _) = open(&dir);
    log.delete(b"e:x").expect("delete");
    log.commit(&syncer).expect("commit");
    drop(log);
    assert_eq!(open(&dir).1, [pair("q:y", "queue")]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_entry_cuts_the_log_there_and_a_bad_header_is_refused() {
    let dir = dir("corrupt");
    let (good, ends) = three_entries(&dir);
    for at in MAGIC.len()..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        fs::write(dir.join(FILE), &bad).expect("write");
        let (_, live) = open(&dir);
        let whole = ends.iter().filter(|&&end| end <= at).count();
        assert_eq!(live.len(), whole, "flipped byte {at}");
        assert_eq!(
            fs::read(dir.join(FILE)).expect("read"),
            good[..live_end(&ends, whole)]
        );
    }
    for at in 0..MAGIC.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        fs::write(dir.join(FILE), &bad).expect("write");
        assert!(
            DefinitionLog::open(&dir, &no_legacy).is_err(),
            "header byte {at}"
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

fn live_end(ends: &[usize; 3], whole: usize) -> usize {
    match whole {
        0 => MAGIC.len(),
        n => ends[n - 1],
    }
}

#[test]
fn a_length_out_of_bounds_is_cut_before_anything_is_read() {
    let dir = dir("bounds");
    let (mut good, ends) = three_entries(&dir);
    good[ends[1]..ends[1] + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(dir.join(FILE), &good).expect("write");
    assert_eq!(open(&dir).1.len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn compaction_keeps_exactly_the_live_set_and_what_came_meanwhile() {
    let dir = dir("compact");
    let syncer = Syncer::start().expect("syncer");
    let (log, _) = open(&dir);
    let record = vec![7u8; 2048];
    for i in 0..1000 {
        log.put(format!("q:{i}").as_bytes(), &record).expect("put");
    }
    for i in 100..1000 {
        log.delete(format!("q:{i}").as_bytes()).expect("delete");
    }
    log.commit(&syncer).expect("commit");
    assert!(log.wants_compaction());
    let before = log.stats().2;
    log.begin_compaction().expect("begin");
    let mut snapshot = Snapshot::new();
    for i in 0..100 {
        snapshot
            .put(format!("q:{i}").as_bytes(), &record)
            .expect("put");
    }
    // Changes made after the snapshot, one written before the swap and one after.
    log.put(b"q:new", b"N").expect("put");
    log.commit(&syncer).expect("commit");
    log.delete(b"q:0").expect("delete");
    let saved = log.finish_compaction(&snapshot).expect("finish");
    log.put(b"q:late", b"L").expect("put");
    log.commit(&syncer).expect("commit");
    assert!(saved > before / 2, "saved {saved} of {before}");
    assert!(!log.wants_compaction());
    assert_eq!(log.stats().1, 101);
    drop(log);
    let (log, live) = open(&dir);
    let mut want: Vec<_> = (1..100)
        .map(|i| (format!("q:{i}").into_bytes(), record.clone()))
        .collect();
    want.push(pair("q:new", "N"));
    want.push(pair("q:late", "L"));
    assert_eq!(live, want);
    assert_eq!(log.stats().0, 103);
    assert!(!dir.join(TEMP).exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_old_definitions_file_is_upgraded_once() {
    let dir = dir("upgrade");
    legacy::save(&dir, &[b"xone".to_vec(), b"?".to_vec(), b"xtwo".to_vec()]).expect("save");
    let key = |record: &[u8]| record.starts_with(b"x").then(|| record[1..].to_vec());
    let (log, live) = DefinitionLog::open(&dir, &key).expect("upgrade");
    let live: Vec<_> = live
        .into_iter()
        .map(|(k, r)| (k.to_vec(), r.to_vec()))
        .collect();
    assert_eq!(live, [pair("one", "xone"), pair("two", "xtwo")]);
    assert!(!dir.join(legacy::FILE).exists());
    let syncer = Syncer::start().expect("syncer");
    log.delete(b"one").expect("delete");
    log.commit(&syncer).expect("commit");
    drop(log);
    assert_eq!(open(&dir).1, [pair("two", "xtwo")]);
    let _ = fs::remove_dir_all(&dir);
}

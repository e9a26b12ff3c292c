//! The three storages through the trait, as a queue drives them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::store::sync::Syncer;

/// A data directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "warren-storage-unit-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(dir: &TempDir, memory_window: usize) -> Arc<Store> {
    Arc::new(Store {
        data_dir: dir.0.clone(),
        segment_size: 1 << 20,
        memory_window,
        syncer: Syncer::start().unwrap(),
        files: crate::store::files::Files::unswept(64),
        next_spill: Default::default(),
    })
}

fn message(body: &str) -> Message {
    Message::new(
        b"x",
        b"key",
        &[0, 0],
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.body()).into_owned())
        .collect()
}

#[test]
fn memory_keeps_everything_in_memory_and_writes_nothing() {
    let mut memory: Box<dyn MessageStore> = Box::new(Memory);
    let stored = memory.put(&message("a"), true, 0, usize::MAX).unwrap();
    assert_eq!(stored, Stored::IN_MEMORY);
    assert!(!memory.buffers());
    assert!(memory.group_commit().is_none());
    assert!(memory.flush().is_ok());
    assert!(memory.destroy().is_ok());
}

#[test]
fn spill_pages_out_past_the_window_and_reads_back_in_runs() {
    let dir = TempDir::new("spill");
    let mut spill: Box<dyn MessageStore> = Box::new(Spill::new(store(&dir, 100), "q"));
    // Within the window: memory only, no log opened.
    assert_eq!(
        spill.put(&message("in"), true, 0, 100).unwrap(),
        Stored::IN_MEMORY
    );
    assert!(!spill.buffers());
    // Past it: paged out, never durable (even if persistent).
    let positions: Vec<Position> = ["one", "two", "three"]
        .iter()
        .map(|body| {
            let stored = spill.put(&message(body), true, 0, 101).unwrap();
            assert!(!stored.in_memory && !stored.durable);
            stored.position.unwrap()
        })
        .collect();
    assert!(spill.buffers());
    assert!(spill.group_commit().is_none());
    spill.flush().unwrap();
    let read = spill.read_next(positions[0], None, 10).unwrap();
    let read_bodies: Vec<Message> = read.messages.into_iter().map(|l| l.message).collect();
    assert_eq!(bodies(&read_bodies), ["one", "two", "three"]);
    let after = spill.read_next(read.next, None, 10).unwrap();
    assert!(
        after.messages.is_empty() && after.end,
        "nothing after the third"
    );
    // `max` stops early and says where to go on.
    let read = spill.read_next(positions[0], None, 2).unwrap();
    assert_eq!(read.messages.len(), 2);
    assert_eq!(read.next, positions[2]);
    assert!(!read.end);
    let read = spill.read_next(read.next, None, 2).unwrap();
    let read_bodies: Vec<Message> = read.messages.into_iter().map(|l| l.message).collect();
    assert_eq!(bodies(&read_bodies), ["three"]);
    // Only the priorities asked for.
    let none = spill
        .read_next(positions[0], Some(LaneFilter { lane: 1, levels: 9 }), 10)
        .unwrap();
    assert!(none.messages.is_empty() && none.next > positions[2]);
    assert!(spill.destroy().is_ok());
}

#[test]
fn a_durable_log_recovers_persistent_messages_only() {
    let dir = TempDir::new("durable");
    let store = store(&dir, 1 << 20);
    let queue_dir = dir.0.join("queue");
    {
        let (log, backlog) = LogStore::recover(Arc::clone(&store), &queue_dir, "q").unwrap();
        assert!(backlog.messages.is_empty());
        let mut log: Box<dyn MessageStore> = Box::new(log);
        assert!(log.group_commit().is_some());
        let kept = log.put(&message("kept"), true, 0, 10).unwrap();
        assert!(kept.in_memory && kept.durable && kept.position.is_some());
        // Transient, within the window: not written.
        assert_eq!(
            log.put(&message("transient"), false, 0, 10).unwrap(),
            Stored::IN_MEMORY
        );
        // Transient past the window: paged out, not to be recovered.
        let paged = log.put(&message("paged"), false, 0, 2 << 20).unwrap();
        assert!(!paged.in_memory && !paged.durable);
        let acked = log.put(&message("acked"), true, 7, 10).unwrap();
        let delivered = log.put(&message("delivered"), true, 0, 10).unwrap();
        log.settle(acked.position.unwrap(), Some((&message("acked"), 7)));
        let at = delivered.position.unwrap();
        log.delivered(at, &message("delivered"), 0, false, false);
        log.flush().unwrap();
    }
    let (_, backlog) = LogStore::recover(store, &queue_dir, "q").unwrap();
    let recovered: Vec<(String, bool)> = backlog
        .messages
        .iter()
        .map(|r| {
            let body = r.message.body().to_vec();
            (String::from_utf8(body).unwrap(), r.redelivered)
        })
        .collect();
    assert_eq!(
        recovered,
        [("kept".to_owned(), false), ("delivered".to_owned(), true)]
    );
    assert_eq!(backlog.bytes, 4 + 9);
}

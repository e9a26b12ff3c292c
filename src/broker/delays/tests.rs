//! Unit tests of the delayed messages: bucket choice, and the whole path on a real store with the
//! clock given (holding, re-filing coarse buckets, firing, deleting the files).

use std::sync::Arc;

use bytes::Bytes;
use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable, LongString};

use super::*;

/// fire.rs's re-filing batch.
const REFILE_BATCH_FOR_TESTS: usize = 4096;
use crate::broker::exchange::Destination;
use crate::broker::vhost::{ExchangeDeclare, PublishScratch, QueueDeclare, Vhost};
use crate::store::sync::Syncer;

#[test]
fn buckets_are_coarser_further_ahead() {
    let now = 1_700_000_000_000;
    let near = Key::for_due(now + 1_500, now, true, u32::MAX);
    assert_eq!((near.start, near.width), (1_700_000_001, 1));
    assert_eq!(near.wake, 1_700_000_001_000);
    let minutes = Key::for_due(now + 10 * 60_000, now, true, u32::MAX);
    assert_eq!((minutes.width, minutes.start % 60), (60, 0));
    assert!(minutes.wake > now && minutes.wake <= now + 10 * 60_000);
    let hours = Key::for_due(now + 2 * 3_600_000, now, true, u32::MAX);
    assert_eq!((hours.width, hours.start % 3600), (3600, 0));
    assert!(hours.wake > now);
    let days = Key::for_due(now + 3 * 86_400_000, now, false, u32::MAX);
    assert_eq!(days.width, 86_400);
    assert!(days.wake > now);
    // Re-filed at its wake, a coarse bucket's records go to finer buckets, never to one as
    // wide: a record 61 s ahead in a 60 s bucket goes to a 1 s one.
    let refiled = Key::for_due(now + 61_000, now, true, finer(60));
    assert_eq!(refiled.width, 1);
    assert_eq!(finer(86_400), 3_600);
    assert_eq!(finer(1), 1);
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("warren-delays-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A vhost on a store in `dir`, with a durable delayed exchange `later` (direct) bound to a
/// durable queue `q` with key `k`.
fn vhost(dir: &TempDir) -> Vhost {
    let store = Arc::new(Store {
        data_dir: dir.0.clone(),
        segment_size: 1 << 20,
        memory_window: 1 << 20,
        syncer: Syncer::start().unwrap(),
        files: crate::store::files::Files::unswept(64),
        next_spill: Default::default(),
    });
    let vhost = Vhost::open("/", store).unwrap();
    let mut arguments = FieldTable::default();
    let direct = AMQPValue::LongString(LongString::from("direct"));
    arguments.insert("x-delayed-type".into(), direct);
    vhost
        .declare_exchange(ExchangeDeclare {
            name: ShortStr::copy_from_str("later"),
            kind: "x-delayed-message".into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments,
        })
        .unwrap();
    let queue = QueueDeclare {
        name: ShortStr::copy_from_str("q"),
        server_named: false,
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
    };
    vhost.declare_queue(queue, 0).unwrap();
    let destination = Destination::Queue(ShortStr::copy_from_str("q"));
    let (source, key) = (
        ShortStr::copy_from_str("later"),
        ShortStr::copy_from_str("k"),
    );
    vhost
        .bind(&source, destination, key, &FieldTable::default(), 0)
        .unwrap();
    vhost
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

#[test]
fn far_future_buckets_are_refiled_then_fired_and_their_files_deleted() {
    let dir = TempDir::new("refile");
    let vhost = vhost(&dir);
    let delays = vhost.delays();
    let buckets = crate::store::vhost_dir(&dir.0, "/").join("delayed");
    let now = now_ms();
    let mut due = Vec::new();
    let mut hold = |i: usize, delay: u64| {
        let properties = [0u8, 0]; // no properties
        let message = Message::new(b"later", b"k", &properties, Bytes::from(format!("{i}")));
        let store = delays
            .hold(&message, &properties, delay, true, None)
            .unwrap();
        assert!(store.is_some(), "a durable hold waits for the group commit");
        due.push((now + delay, i));
    };
    for (i, delay) in [2 * 86_400_000u64, 3 * 3_600_000, 20 * 60_000, 1_500, 30_000]
        .into_iter()
        .enumerate()
    {
        hold(i, delay);
    }
    assert_eq!(files_in(&buckets), 5, "one bucket each");
    // Enough in one minute's bucket to be re-filed over several passes.
    for i in 5..(5 + 2 * REFILE_BATCH_FOR_TESTS + 100) {
        hold(i, 25 * 60_000 + i as u64 % 50_000);
    }
    let queue = vhost.queue(&ShortStr::copy_from_str("q"), 0).unwrap();
    let mut scratch = PublishScratch::default();
    due.sort();
    let due_of: std::collections::HashMap<usize, u64> = due.iter().map(|(d, i)| (*i, *d)).collect();
    let mut fired = Vec::new();
    // Walk the clock forward through every wake the delays ask for.
    let mut clock = now;
    let mut steps = 0;
    while fired.len() < due.len() {
        steps += 1;
        assert!(steps < 100_000, "the delays never fired: {}", fired.len());
        let next = vhost.fire_delayed(clock, &mut scratch);
        while let Some((entry, _)) = queue.get(true, &Arc::default()) {
            let body = String::from_utf8_lossy(entry.message.body()).into_owned();
            let i = body.parse::<usize>().unwrap();
            let when = due_of[&i];
            assert!(clock >= when, "{i} fired at {clock}, before {when}");
            fired.push(i);
        }
        // A wake at or before the clock: more to do now (a bucket half re-filed).
        clock = next.max(clock);
    }
    let order: Vec<usize> = due.iter().map(|(_, i)| *i).collect();
    assert_eq!(fired, order, "in due order");
    // Fired buckets are deleted by the group commit's thread once their messages are synced:
    // give it up to 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files_in(&buckets) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        files_in(&buckets),
        0,
        "every bucket file deleted once fired"
    );
    assert_eq!(delays.stats().1, due.len() as u64);
}

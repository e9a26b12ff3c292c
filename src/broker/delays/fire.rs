//! Firing: the one thread that wakes when the earliest held message of any vhost is due, and
//! each vhost's pass over what is due (re-file coarse buckets, index fine ones, publish what
//! is due in due order, delete the files that are done).
//!
//! The thread sleeps on a condition variable until the earliest wake any vhost asked for
//! ([`wake`], called when a hold moves a vhost's next wake earlier) or at most a second. It is
//! process-wide: brokers in one process (tests) share it, which costs them only wake-ups.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use tracing::{debug, error, warn};
use warren_protocol::content::publish_checks;

use super::{record, Delays, Due, Key, Source};
use crate::broker::arguments::parse_expiration;
use crate::broker::message::{now_ms, Message, Stamp};
use crate::broker::vhost::{PublishScratch, Vhost};
use crate::store::delayed as files;

/// Messages published per pass before the logs they went to are flushed.
const BATCH: usize = 1024;
/// The longest the thread sleeps without looking.
const IDLE: u64 = 1_000;

/// The earliest wake asked for since the thread last looked, and its signal.
static PLANNED: Mutex<u64> = Mutex::new(u64::MAX);
static SIGNAL: Condvar = Condvar::new();

/// Asks the firing thread to look again by `at` (ms since the epoch).
pub(super) fn wake(at: u64) {
    let mut planned = PLANNED.lock();
    if at < *planned {
        *planned = at;
        SIGNAL.notify_all();
    }
}

/// The firing thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Vhosts = Arc<RwLock<HashMap<String, Arc<Vhost>>>>;

impl Scheduler {
    pub fn start(vhosts: Vhosts) -> std::io::Result<Scheduler> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("warren-delays".into())
            .spawn(move || run(&vhosts, &stopping))?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        {
            let _planned = PLANNED.lock();
            SIGNAL.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(vhosts: &Vhosts, stop: &AtomicBool) {
    let mut scratch = PublishScratch::default();
    while !stop.load(Ordering::Acquire) {
        *PLANNED.lock() = u64::MAX;
        let now = now_ms();
        let mut next = now + IDLE;
        let all: Vec<Arc<Vhost>> = vhosts.read().values().cloned().collect();
        for vhost in &all {
            next = next.min(vhost.delays().fire_due(vhost, now_ms(), &mut scratch));
        }
        drop(all);
        let mut planned = PLANNED.lock();
        loop {
            let until = next.min(*planned);
            let now = now_ms();
            if until <= now || stop.load(Ordering::Acquire) {
                break;
            }
            let timeout = Duration::from_millis(until - now);
            if SIGNAL.wait_for(&mut planned, timeout).timed_out() {
                break;
            }
        }
    }
}

impl Delays {
    /// Does what is due at `now` for `vhost`; returns when it must look again.
    pub(super) fn fire_due(&self, vhost: &Vhost, now: u64, scratch: &mut PublishScratch) -> u64 {
        if self.next_wake.load(Ordering::Acquire) > now {
            return self.next_wake.load(Ordering::Acquire);
        }
        self.take_due_buckets(now);
        loop {
            let batch = self.pop_due(now);
            if batch.is_empty() {
                break;
            }
            self.publish_batch(vhost, batch, scratch);
        }
        let state = self.state.lock();
        let heap = state.firing.peek().map_or(u64::MAX, |Reverse(d)| d.due);
        let buckets = state.buckets.keys().next().map_or(u64::MAX, |key| key.wake);
        let next = heap.min(buckets);
        self.next_wake.store(next, Ordering::Release);
        drop(state);
        next
    }

    /// Moves the buckets whose wake came out of the map: fine ones into the firing heap,
    /// coarse ones re-filed into finer buckets.
    fn take_due_buckets(&self, now: u64) {
        let Some(dirs) = &self.dirs else {
            return;
        };
        let mut taken = Vec::new();
        {
            let mut state = self.state.lock();
            while let Some(entry) = state.buckets.first_entry() {
                if entry.key().wake > now {
                    break;
                }
                let (key, bucket) = entry.remove_entry();
                state.open.retain(|k| *k != key);
                taken.push((key, bucket.name));
            }
        }
        for (key, name) in taken {
            let dir = match key.durable {
                true => &dirs.durable,
                false => &dirs.transient,
            };
            let path = dir.join(name.file_name());
            if key.width == 1 {
                self.state.lock().firing_file(name, path, key.durable);
            } else {
                self.refile(&path, key.durable, super::finer(key.width), now);
            }
        }
    }

    /// Re-files a coarse bucket's records into the buckets their due times now call for, then
    /// deletes it (once the new files are synced, if durable).
    fn refile(&self, path: &std::path::Path, durable: bool, widest: u32, now: u64) {
        let Some(dirs) = &self.dirs else {
            return;
        };
        let mut failed = false;
        let mut moved = 0usize;
        let scanned = files::scan(path, |_, _, payload| {
            let Some((due, _)) = record::due_of(payload) else {
                return;
            };
            let key = Key::for_due(due, now, durable, widest);
            let mut state = self.state.lock();
            match state.append(dirs, key, payload) {
                Ok(()) => moved += 1,
                Err(e) => {
                    failed = true;
                    error!(file = %path.display(), error = %e, "re-filing delayed messages failed");
                }
            }
        });
        if let Err(e) = scanned {
            warn!(file = %path.display(), error = %e, "cannot read a delayed-message bucket");
            return;
        }
        if failed {
            return; // Kept: read again at the next start.
        }
        if durable && !sync(&dirs.store) {
            return;
        }
        remove(path);
        debug!(file = %path.display(), moved, "re-filed delayed messages");
        let state = self.state.lock();
        let next = state.buckets.keys().next().map_or(u64::MAX, |key| key.wake);
        drop(state);
        self.next_wake.fetch_min(next, Ordering::AcqRel);
    }

    /// Up to a batch of the held messages due at `now`, in due order, with their bytes.
    fn pop_due(&self, now: u64) -> Vec<(Option<u64>, Vec<u8>)> {
        let mut batch = Vec::new();
        let mut state = self.state.lock();
        while batch.len() < BATCH {
            match state.firing.peek() {
                Some(Reverse(due)) if due.due <= now => {}
                _ => break,
            }
            let Some(Reverse(Due { source, .. })) = state.firing.pop() else {
                break;
            };
            match source {
                Source::Memory(bytes) => batch.push((None, bytes.into_vec())),
                Source::File { n, offset, framed } => {
                    let Some(firing) = state.files.get(&n) else {
                        continue;
                    };
                    match files::read_at(&firing.file, offset, framed) {
                        Ok(payload) => batch.push((Some(n), payload)),
                        Err(e) => {
                            warn!(file = %firing.path.display(), error = %e, "a delayed message cannot be read; dropped");
                            batch.push((Some(n), Vec::new()));
                        }
                    }
                }
            }
        }
        batch
    }

    /// Publishes a batch through the vhost's routing (no lock of ours held), then deletes the
    /// bucket files it finished, once what it published is synced.
    fn publish_batch(
        &self,
        vhost: &Vhost,
        batch: Vec<(Option<u64>, Vec<u8>)>,
        scratch: &mut PublishScratch,
    ) {
        let mut done: HashMap<u64, usize> = HashMap::new();
        for (file, payload) in &batch {
            if let Some(n) = file {
                *done.entry(*n).or_default() += 1;
            }
            if !payload.is_empty() {
                self.fire_one(vhost, payload, scratch);
            }
        }
        let mut flushed = true;
        for queue in scratch.unflushed.drain(..) {
            if let Err(e) = queue.flush_log() {
                error!(queue = %queue.name, error = %e, "delayed messages: writing to the log failed");
                flushed = false;
            }
        }
        scratch.pressured.clear();
        scratch.enqueued = 0;
        let mut finished = Vec::new();
        {
            let mut state = self.state.lock();
            for (n, count) in done {
                let Some(firing) = state.files.get_mut(&n) else {
                    continue;
                };
                firing.remaining = firing.remaining.saturating_sub(count);
                if firing.remaining == 0 {
                    if let Some(firing) = state.files.remove(&n) {
                        finished.push(firing);
                    }
                }
            }
        }
        if finished.is_empty() {
            return;
        }
        // What was published must be on disk before its bucket goes: a crash in between fires
        // it again rather than losing it.
        let synced = match &self.dirs {
            Some(dirs) if finished.iter().any(|f| f.durable) => flushed && sync(&dirs.store),
            _ => true,
        };
        for firing in finished {
            if firing.durable && !synced {
                warn!(file = %firing.path.display(), "delayed messages fired but not synced; their bucket is kept and fires again at the next start");
                continue;
            }
            remove(&firing.path);
        }
    }

    /// Publishes one held message as if it were published now to its exchange.
    fn fire_one(&self, vhost: &Vhost, payload: &[u8], scratch: &mut PublishScratch) {
        let Some(held) = record::decode(payload) else {
            warn!(vhost = %vhost.name, "a delayed message's record is malformed; dropped");
            return;
        };
        self.fired.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Message::new(
            held.exchange,
            held.routing_key,
            held.properties,
            Bytes::copy_from_slice(held.body),
        ));
        let checks = publish_checks(held.properties);
        let stamp = Stamp {
            persistent: checks.delivery_mode == Some(2),
            ttl: checks.expiration.and_then(|e| parse_expiration(e).ok()),
            priority: checks.priority.unwrap_or(0),
        };
        match vhost.publish_fired(&message, stamp, scratch) {
            Ok(routed) if !routed.routed && held.origin != 0 => {
                match self.return_address(held.origin) {
                    Some(address) => (address.send)(message),
                    None => {
                        warn!(vhost = %vhost.name, exchange = %message.exchange(), routing_key = %message.routing_key(), "a mandatory delayed message is unroutable and its channel is closed; dropped")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(vhost = %vhost.name, exchange = %message.exchange(), error = %e, "a delayed message cannot be routed when due; dropped")
            }
        }
    }
}

/// Waits for the group commit to sync everything handed to it so far; false if it failed.
fn sync(store: &crate::store::Store) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    store.syncer.notify(Box::new(move |result| {
        let _ = tx.send(result.is_ok());
    }));
    rx.recv().unwrap_or(false)
}

fn remove(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            error!(file = %path.display(), error = %e, "cannot delete a fired delayed-message bucket");
        }
    }
}

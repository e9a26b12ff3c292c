//! Firing: the one thread that wakes when the earliest held message of any vhost is due, and
//! the steps of a vhost's pass over what is due: re-file coarse buckets and index fine ones
//! ([`Delays::begin`]), take what is due in due order ([`Delays::pop_due`]), delete the files
//! that are done once what they held is synced ([`Delays::fired`]). Publishing what is taken
//! is the vhost's (`vhost/delayed.rs`): nothing here routes.
//!
//! The thread sleeps on a condition variable until the earliest wake any vhost asked for
//! ([`wake`], called when a hold moves a vhost's next wake earlier) or at most a second. It is
//! process-wide: brokers in one process (tests) share it, which costs them only wake-ups.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::{debug, error, warn};

use super::{record, Delays, Due, Key, Refile, Source};
use crate::broker::message::{now_ms, Message};
use crate::store::delayed as files;

/// Messages published per pass before the logs they went to are flushed.
const BATCH: usize = 1024;
/// Records re-filed per pass.
const REFILE_BATCH: usize = 4096;
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

impl Scheduler {
    /// Starts the thread: `pass(now)` fires what is due at `now` in every vhost and returns
    /// when the next is due (the broker's: `Vhost::fire_delayed` over its vhosts).
    pub fn start(pass: impl FnMut(u64) -> u64 + Send + 'static) -> std::io::Result<Scheduler> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("warren-delays".into())
            .spawn(move || run(pass, &stopping))?;
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

fn run(mut pass: impl FnMut(u64) -> u64, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        *PLANNED.lock() = u64::MAX;
        let now = now_ms();
        let next = pass(now).min(now + IDLE);
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

/// A held message taken from the heap to fire: its record's bytes (empty if it could not be
/// read) and the bucket file it came from.
#[derive(Debug)]
pub struct Fired {
    pub payload: Vec<u8>,
    file: Option<u64>,
}

impl Delays {
    /// Whether anything may be due at `now` (else [`Delays::next_wake`] says when).
    pub fn due(&self, now: u64) -> bool {
        self.next_wake.load(Ordering::Acquire) <= now
    }

    /// When the firing thread must look at this vhost again.
    pub fn next_wake(&self) -> u64 {
        self.next_wake.load(Ordering::Acquire)
    }

    /// Starts a pass at `now`: the buckets whose time came are indexed (fine ones) or re-filed
    /// into finer ones (coarse ones).
    pub fn begin(&self, now: u64) {
        self.take_due_buckets(now);
        self.refile_some(now);
    }

    /// Ends a pass: computes (and returns) when the next one is due.
    pub fn end(&self) -> u64 {
        let state = self.state.lock();
        let heap = state.firing.peek().map_or(u64::MAX, |Reverse(d)| d.due);
        let buckets = state.buckets.keys().next().map_or(u64::MAX, |key| key.wake);
        // A bucket half re-filed: the next pass goes on at once.
        let refiling = match state.refiling.is_empty() {
            true => u64::MAX,
            false => 0,
        };
        let next = heap.min(buckets).min(refiling);
        // Under the lock: a hold appends under it and moves the wake earlier after it.
        self.next_wake.store(next, Ordering::Release);
        next
    }

    /// Moves the buckets whose wake came out of the map: fine ones into the firing heap,
    /// coarse ones onto the list of buckets to re-file into finer ones.
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
            let mut state = self.state.lock();
            match key.width {
                1 => state.firing_file(name, path, key.durable),
                width => state.refiling.push_back(Refile {
                    path,
                    durable: key.durable,
                    widest: super::finer(width),
                    offset: 0,
                    moved: 0,
                }),
            }
        }
    }

    /// Re-files up to [`REFILE_BATCH`] records of the first coarse bucket waiting for it into
    /// the buckets their due times now call for (a large bucket takes several passes, so that
    /// what is due meanwhile still fires on time); a bucket done is deleted, once the new files
    /// are synced if it is durable.
    fn refile_some(&self, now: u64) {
        let Some(dirs) = &self.dirs else {
            return;
        };
        let Some(mut job) = self.state.lock().refiling.pop_front() else {
            return;
        };
        let (path, durable, widest) = (&job.path, job.durable, job.widest);
        let mut records: Vec<(Key, Vec<u8>)> = Vec::with_capacity(REFILE_BATCH);
        let scanned = files::scan_from(path, job.offset, REFILE_BATCH, |_, _, payload| {
            if let Some((due, _)) = record::due_of(payload) {
                records.push((Key::for_due(due, now, durable, widest), payload.to_vec()));
            }
        });
        let scanned = match scanned {
            Ok(scanned) => scanned,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read a delayed-message bucket; kept for the next start");
                return;
            }
        };
        // One write per bucket: the records of one key together, in file order.
        records.sort_by_key(|(key, _)| *key);
        let mut state = self.state.lock();
        for group in records.chunk_by(|a, b| a.0 == b.0) {
            let payloads: Vec<&[u8]> = group.iter().map(|(_, p)| &p[..]).collect();
            if let Err(e) = state.append_all(dirs, group[0].0, &payloads) {
                error!(file = %path.display(), error = %e, "re-filing delayed messages failed; kept for the next start");
                return;
            }
        }
        drop(state);
        job.moved += scanned.count;
        if scanned.end.is_none() {
            let mut state = self.state.lock();
            job.offset = scanned.next;
            state.refiling.push_front(job);
            return;
        }
        debug!(file = %job.path.display(), moved = job.moved, "re-filed delayed messages");
        match durable {
            true => remove_once_synced(&dirs.store, vec![job.path]),
            false => remove(&job.path),
        }
    }

    /// Up to a batch of the held messages due at `now`, in due order, with their bytes.
    pub fn pop_due(&self, now: u64) -> Vec<Fired> {
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
                Source::Memory(bytes) => batch.push(Fired {
                    payload: bytes.into_vec(),
                    file: None,
                }),
                Source::File { n, offset, framed } => {
                    let Some(firing) = state.files.get(&n) else {
                        continue;
                    };
                    let payload = files::read_at(&firing.file, offset, framed).unwrap_or_else(|e| {
                        warn!(file = %firing.path.display(), error = %e, "a delayed message cannot be read; dropped");
                        Vec::new()
                    });
                    batch.push(Fired {
                        payload,
                        file: Some(n),
                    });
                }
            }
        }
        batch
    }

    /// A batch from [`Delays::pop_due`] was published (`flushed`: and the logs it went to
    /// written): deletes the bucket files it finished, once what it published is synced.
    pub fn fired(&self, batch: &[Fired], flushed: bool) {
        self.fired.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut done: HashMap<u64, usize> = HashMap::new();
        for fired in batch {
            if let Some(n) = fired.file {
                *done.entry(n).or_default() += 1;
            }
        }
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
        // it again rather than losing it. The group commit deletes the files once it has synced
        // (the firing thread does not wait for it).
        let mut synced_first = Vec::new();
        for firing in finished {
            match (&self.dirs, firing.durable) {
                (Some(_), true) if !flushed => {
                    warn!(file = %firing.path.display(), "delayed messages fired but not written; their bucket is kept and fires again at the next start");
                }
                (Some(_), true) => synced_first.push(firing.path),
                _ => remove(&firing.path),
            }
        }
        if let (Some(dirs), false) = (&self.dirs, synced_first.is_empty()) {
            remove_once_synced(&dirs.store, synced_first);
        }
    }

    /// Hands a mandatory message that was unroutable when it fired back to its publisher's
    /// channel, if that is still open; false if it is not.
    pub fn return_to(&self, origin: u64, message: Arc<Message>) -> bool {
        match self.return_address(origin) {
            Some(address) => {
                (address.send)(message);
                true
            }
            None => false,
        }
    }
}

/// Deletes `paths` once the group commit has synced everything handed to it so far (what
/// their messages were re-filed or published to); keeps them if the sync fails.
fn remove_once_synced(store: &crate::store::Store, paths: Vec<PathBuf>) {
    store.syncer.notify(Box::new(move |result| match result {
        Ok(()) => paths.iter().for_each(|path| remove(path)),
        Err(e) => {
            warn!(error = %e, files = paths.len(), "a sync failed: fired delayed-message buckets are kept and fire again at the next start")
        }
    }));
}

fn remove(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            error!(file = %path.display(), error = %e, "cannot delete a fired delayed-message bucket");
        }
    }
}

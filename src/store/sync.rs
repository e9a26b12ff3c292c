//! Group commit: one `fdatasync` per file covers every write made to it before the sync started,
//! and everyone who asked to be told about those writes is told once, after it.
//!
//! A writer that appended to a log hands the files it dirtied to [`Syncer::dirty`] *in the same
//! critical section as the write* (under the queue's lock), then asks [`Syncer::notify`] to be
//! called back. One background thread loops: it takes every dirty file and every waiting callback
//! at once, syncs the files, then runs the callbacks. Writes that arrive while it syncs form the
//! next batch, so under load many messages share one fsync, and an idle broker syncs a lone write
//! at once: no timer, no added latency. Dirty files are synced even when nobody waits (a publisher
//! without confirms), so every write reaches the disk promptly.
//!
//! Why the order matters: a callback registered after a write is run only after a batch that
//! started after the registration; the file that write dirtied was handed over before the
//! registration, so it is in that batch or an earlier one.
//!
//! Under load a batch would otherwise hold one write when a sync takes less time than the gap
//! between two publishes (fast disks): so when the previous sync ended less than [`BUSY`] ago, the
//! thread gathers for up to [`GATHER`] (or until [`GATHER_ENOUGH`] callbacks wait) before it
//! syncs. A write after a quiet spell is synced at once.
//!
//! Lock order: callers may hold a queue lock while calling [`Syncer::dirty`]; the syncer's own
//! lock is a leaf and is never held while syncing or running callbacks.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info};

/// A sync that starts this soon after the previous one ended is under load.
const BUSY: Duration = Duration::from_millis(2);
/// How long a busy batch gathers more writes before it syncs.
const GATHER: Duration = Duration::from_micros(500);
/// A batch this large syncs at once.
const GATHER_ENOUGH: usize = 256;

/// Something written that a sync makes durable: a file (`fdatasync`), or a cached handle on one
/// (`files::Handle`, which syncs what was written through it).
pub trait Durable: Send + Sync {
    fn sync(&self) -> io::Result<()>;
}

impl Durable for File {
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Told the outcome of the sync that covered its writes.
pub type Callback = Box<dyn FnOnce(io::Result<()>) + Send>;

#[derive(Default)]
struct Pending {
    files: Vec<Arc<dyn Durable>>,
    callbacks: Vec<Callback>,
    stopping: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Batches synced, and callbacks run, since start (for the average batch size).
    batches: AtomicU64,
    callbacks: AtomicU64,
}

/// The group-commit thread's handle. Dropping it syncs what is pending and stops the thread.
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("batches", &self.shared.batches.load(Ordering::Relaxed))
            .field("callbacks", &self.shared.callbacks.load(Ordering::Relaxed))
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Syncer {
    pub fn start() -> io::Result<Syncer> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            batches: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("warren-sync".into())
            .spawn(move || run(&worker))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands over files just written to; call it in the critical section of the write.
    pub fn dirty<D: Durable + 'static>(&self, files: impl IntoIterator<Item = Arc<D>>) {
        let mut pending = self.shared.lock();
        let was_idle = pending.files.is_empty() && pending.callbacks.is_empty();
        for file in files {
            let file: Arc<dyn Durable> = file;
            if !pending.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                pending.files.push(file);
            }
        }
        if was_idle && !pending.files.is_empty() {
            self.shared.wake.notify_one();
        }
    }

    /// Runs `callback` after a sync that covers every write handed over before this call.
    pub fn notify(&self, callback: Callback) {
        let mut pending = self.shared.lock();
        pending.callbacks.push(callback);
        self.shared.wake.notify_one();
    }

    /// (batches, callbacks) since start: callbacks / batches is the average group size.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.shared.batches.load(Ordering::Relaxed),
            self.shared.callbacks.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let (batches, callbacks) = self.stats();
        info!(batches, callbacks, "group commit stopped");
    }
}

fn run(shared: &Shared) {
    let mut last_sync: Option<Instant> = None;
    loop {
        let (files, callbacks) = {
            let mut pending = shared.lock();
            while pending.files.is_empty() && pending.callbacks.is_empty() && !pending.stopping {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if pending.files.is_empty() && pending.callbacks.is_empty() {
                return;
            }
            if last_sync.is_some_and(|at| at.elapsed() < BUSY) {
                let until = Instant::now() + GATHER;
                while pending.callbacks.len() < GATHER_ENOUGH && !pending.stopping {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    pending = shared
                        .wake
                        .wait_timeout(pending, left)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                }
            }
            (
                std::mem::take(&mut pending.files),
                std::mem::take(&mut pending.callbacks),
            )
        };
        let mut outcome = Ok(());
        for file in &files {
            let started = Instant::now();
            let synced = file.sync();
            FSYNC_SECONDS.observe(started.elapsed());
            if let Err(e) = synced {
                error!(error = %e, "fdatasync failed; writes waiting on it are not confirmed");
                outcome = Err(e);
            }
        }
        last_sync = Some(Instant::now());
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .callbacks
            .fetch_add(callbacks.len() as u64, Ordering::Relaxed);
        for callback in callbacks {
            callback(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Upper bounds (seconds) of the fsync latency histogram's buckets.
const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// How long each `fdatasync` of the group commit took: a histogram for `/metrics`, kept for
/// the process (every syncer adds to it).
struct FsyncHistogram {
    /// Counts per bucket (not cumulative), the last one for above the largest bound.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

static FSYNC_SECONDS: FsyncHistogram = FsyncHistogram {
    buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64::new(0),
};

impl FsyncHistogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = FSYNC_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Writes the fsync latency histogram in Prometheus' text format
/// (`warren_fsync_duration_seconds`).
pub fn write_fsync_histogram(out: &mut String) {
    use std::fmt::Write;
    let name = "warren_fsync_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time taken by each fdatasync of the group commit"
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in FSYNC_BUCKETS.iter().enumerate() {
        cumulative += FSYNC_SECONDS.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += FSYNC_SECONDS.buckets[FSYNC_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = FSYNC_SECONDS.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    #[test]
    fn callbacks_run_after_a_sync_and_batches_group_them() {
        let dir = std::env::temp_dir().join(format!("warren-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = Arc::new(File::create(dir.join("f")).expect("file"));
        let syncer = Syncer::start().expect("start");
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            (&*file).write_all(b"x").expect("write");
            syncer.dirty([Arc::clone(&file)]);
            let tx = tx.clone();
            syncer.notify(Box::new(move |result| {
                let _ = tx.send((i, result.is_ok()));
            }));
        }
        let mut seen: Vec<i32> = (0..100)
            .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)))
            .map(|r| r.expect("every callback runs").0)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        let (batches, callbacks) = syncer.stats();
        assert_eq!(callbacks, 100);
        assert!((1..=100).contains(&batches));
        drop(syncer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

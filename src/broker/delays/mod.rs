//! Delayed messages of one vhost (the `x-delayed-message` exchange type): messages held until
//! their `x-delay` has passed, then routed by the exchange's `x-delayed-type`.
//!
//! Owns the held messages' index: an ordered map of *buckets* (a span of due seconds, one
//! append-only file each, `store/delayed.rs`) and the *firing* heap of the buckets whose time
//! came. Nothing per held message stays in memory: a bucket costs one map entry whatever it
//! holds; only the bucket being fired is indexed (due, sequence, place in its file: 32 bytes a
//! message) while its second passes. Holding a message is one append (O(log buckets) to find
//! its bucket); firing is one read of its bucket and a heap pop (O(log n)).
//!
//! - A bucket spans 1 s when its messages are due within the minute, 60 s within the hour, an
//!   hour within the day, a day beyond: a coarse bucket is re-filed into finer ones shortly
//!   before its span begins, so files stay few whatever the delays (a publisher spreading
//!   delays over an hour appends to 60 files, not 3,600: fewer files to sync per group commit).
//! - A persistent message to a durable exchange goes to `delayed/`, synced by the group commit
//!   before its confirm; the rest to `delayed-transient/`, emptied at start. A vhost without a
//!   store (the model's tests) keeps them in the heap.
//! - One thread for the broker (`fire.rs`) wakes at the earliest due time; the vhost
//!   (`vhost/delayed.rs`) takes what is due from here and publishes it through its routing,
//!   by the exchange's `x-delayed-type`, as if it were published then. A bucket file is deleted once all it held was fired and the
//!   queues' logs that took them are synced: a crash in between fires them again (at least
//!   once, never lost).
//! - `mandatory` is honoured when a message fires: unroutable, it goes back to its publisher's
//!   channel if that channel is still open (through its [`ReturnAddress`]), else it is dropped
//!   and logged.
//!
//! Knows files and held records, never routing: it never calls the vhost. Its lock is a leaf
//! (never held while the vhost publishes what it handed out).

mod fire;
pub mod record;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tracing::{info, warn};

pub use fire::{Fired, Scheduler};

use super::message::{now_ms, Message};
use crate::store::delayed::{self as files, BucketName};
use crate::store::Store;

/// How long, at least, before its span begins a coarse bucket is re-filed into finer ones.
const MIN_REFILE_LEAD_MS: u64 = 2_000;
/// Bucket files kept open for appends; older ones are closed (and reopened if appended to).
const OPEN_FILES: usize = 128;

/// Where a mandatory delayed message goes back to if it is unroutable when it fires: its
/// publisher's channel, for as long as the channel holds this (the vhost keeps only a weak
/// reference, so a closed channel's messages are dropped).
pub struct ReturnAddress {
    id: OnceLock<u64>,
    send: Box<dyn Fn(Arc<Message>) + Send + Sync>,
}

impl ReturnAddress {
    pub fn new(send: impl Fn(Arc<Message>) + Send + Sync + 'static) -> Arc<ReturnAddress> {
        Arc::new(ReturnAddress {
            id: OnceLock::new(),
            send: Box::new(send),
        })
    }
}

impl std::fmt::Debug for ReturnAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReturnAddress")
            .field("id", &self.id)
            .finish()
    }
}

/// A bucket: when the firing thread needs it, its span of due seconds, whether it is durable.
/// Keys sort by that wake time, so the map's first entry is the next bucket to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    wake: u64,
    start: u64,
    width: u32,
    durable: bool,
}

/// Bucket widths (seconds), finest first, and how far ahead (ms) each is used up to.
const WIDTHS: [(u32, u64); 4] = [
    (1, 60_000),
    (60, 3_600_000),
    (3_600, 86_400_000),
    (86_400, u64::MAX),
];

impl Key {
    /// The bucket a message due at `due` goes to, as seen at `now`, no wider than `widest`.
    fn for_due(due: u64, now: u64, durable: bool, widest: u32) -> Key {
        let ahead = due.saturating_sub(now);
        let mut width = WIDTHS
            .iter()
            .find(|(_, within)| ahead < *within)
            .map_or(1, |(width, _)| *width)
            .min(widest);
        let second = due / 1000;
        loop {
            let start = second - second % u64::from(width);
            let wake = wake(start, width);
            // A coarse bucket whose re-filing time has come already: a finer one.
            if width == 1 || wake > now {
                return Key {
                    wake,
                    start,
                    width,
                    durable,
                };
            }
            width = finer(width);
        }
    }
}

/// When a bucket needs the firing thread: a fine one when its second begins, a coarse one
/// a sixth of its span before (10 s for a minute's bucket), to be re-filed into finer ones in
/// time: re-filing a minute of 8,000 messages a second takes a few seconds.
fn wake(start: u64, width: u32) -> u64 {
    let begins = start.saturating_mul(1000);
    match width {
        1 => begins,
        _ => begins.saturating_sub((u64::from(width) * 1000 / 6).max(MIN_REFILE_LEAD_MS)),
    }
}

/// The next finer width than `width` (re-filing never puts a record back where it was).
fn finer(width: u32) -> u32 {
    WIDTHS
        .iter()
        .rev()
        .find(|(w, _)| *w < width)
        .map_or(1, |(w, _)| *w)
}

#[derive(Debug)]
struct Bucket {
    name: BucketName,
    /// Open for appends (closed past [`OPEN_FILES`]).
    file: Option<Arc<File>>,
    /// Messages appended since start (a recovered bucket's are not counted).
    count: u64,
}

/// A held message whose bucket is firing.
#[derive(Debug)]
struct Due {
    due: u64,
    seq: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// In firing file `n` at `offset`, `framed` bytes long.
    File { n: u64, offset: u64, framed: u32 },
    /// Held in memory (a vhost without a store): the record's bytes.
    Memory(Box<[u8]>),
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A bucket file being fired: deleted when nothing of it is left in the heap.
#[derive(Debug)]
struct Firing {
    file: Arc<File>,
    path: PathBuf,
    remaining: usize,
    durable: bool,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<Key, Bucket>,
    /// Buckets with an open file, oldest first.
    open: VecDeque<Key>,
    next_n: u64,
    firing: BinaryHeap<Reverse<Due>>,
    files: HashMap<u64, Firing>,
    /// The two directories exist (durable, transient).
    made: [bool; 2],
    /// Record buffer for appends.
    frame: Vec<u8>,
    /// Coarse buckets taken from the map, being re-filed into finer ones.
    refiling: VecDeque<Refile>,
}

/// A coarse bucket being re-filed, and how far.
#[derive(Debug)]
struct Refile {
    path: PathBuf,
    durable: bool,
    /// The widest bucket its records may go to.
    widest: u32,
    offset: u64,
    moved: usize,
}

/// The durable side: the store and the two directories.
#[derive(Debug)]
struct Dirs {
    store: Arc<Store>,
    vhost: PathBuf,
    durable: PathBuf,
    transient: PathBuf,
    /// The durable directory, opened once for the group commit to sync new files' entries.
    durable_dir: OnceLock<Arc<File>>,
}

/// The delayed messages of one vhost.
#[derive(Debug)]
pub struct Delays {
    dirs: Option<Dirs>,
    state: Mutex<State>,
    /// When the firing thread must next look at this vhost (ms; `u64::MAX`: nothing held).
    next_wake: AtomicU64,
    seq: AtomicU64,
    returns: Mutex<Returns>,
    /// Messages held since start (`x-delayed-message` statistics).
    held: AtomicU64,
    fired: AtomicU64,
}

#[derive(Debug, Default)]
struct Returns {
    addresses: HashMap<u64, Weak<ReturnAddress>>,
    next: u64,
    /// Size after the last sweep of dead addresses.
    swept: usize,
}

impl Delays {
    /// Delays kept in memory (a vhost without a store).
    pub fn memory() -> Delays {
        Delays {
            dirs: None,
            state: Mutex::new(State::default()),
            next_wake: AtomicU64::new(u64::MAX),
            // Sequence numbers grow across restarts (ordering among equal due times).
            seq: AtomicU64::new(now_ms().saturating_mul(1000)),
            returns: Mutex::new(Returns {
                next: now_ms().saturating_mul(1000),
                ..Returns::default()
            }),
            held: AtomicU64::new(0),
            fired: AtomicU64::new(0),
        }
    }

    /// The delays of the vhost whose directory is `vhost_dir`: finds the durable buckets left
    /// there (their files are read only when they fire) and empties the transient ones.
    pub fn open(store: Arc<Store>, vhost_dir: &Path) -> io::Result<Delays> {
        let durable = vhost_dir.join("delayed");
        let transient = vhost_dir.join("delayed-transient");
        match std::fs::remove_dir_all(&transient) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut delays = Delays::memory();
        let state = delays.state.get_mut();
        let found = files::list(&durable)?;
        let mut next_wake = u64::MAX;
        for (name, path) in &found {
            state.next_n = state.next_n.max(name.n + 1);
            let key = Key {
                wake: wake(name.start, name.width),
                start: name.start,
                width: name.width,
                durable: true,
            };
            if state.buckets.contains_key(&key) {
                // Two files of one span (one was firing at the crash): fire this one now.
                state.firing_file(*name, path.clone(), true);
                continue;
            }
            next_wake = next_wake.min(key.wake);
            let bucket = Bucket {
                name: *name,
                file: None,
                count: 0,
            };
            state.buckets.insert(key, bucket);
        }
        if let Some(Reverse(first)) = state.firing.peek() {
            next_wake = next_wake.min(first.due);
        }
        if !found.is_empty() {
            info!(dir = %durable.display(), buckets = found.len(), "recovered delayed messages");
        }
        delays.next_wake = AtomicU64::new(next_wake);
        delays.dirs = Some(Dirs {
            store,
            vhost: vhost_dir.to_owned(),
            durable,
            transient,
            durable_dir: OnceLock::new(),
        });
        if next_wake != u64::MAX {
            fire::wake(next_wake);
        }
        Ok(delays)
    }

    /// Holds `message` for `delay` ms, with `properties` (its own, marked as delayed).
    /// `durable`: in a durable bucket, handed to the group commit (the caller's confirm waits
    /// for it). Returns the store whose sync makes it safe, if any.
    pub fn hold(
        &self,
        message: &Message,
        properties: &[u8],
        delay: u64,
        durable: bool,
        returns: Option<&Arc<ReturnAddress>>,
    ) -> io::Result<Option<Arc<Store>>> {
        let origin = returns.map_or(0, |address| self.register(address));
        self.hold_from(message, properties, delay, durable, origin)
    }

    /// [`Delays::hold`] of a retry of a rejected message (origin [`record::RETRY`]).
    pub fn hold_retry(
        &self,
        message: &Message,
        properties: &[u8],
        delay: u64,
        durable: bool,
    ) -> io::Result<Option<Arc<Store>>> {
        self.hold_from(message, properties, delay, durable, record::RETRY)
    }

    fn hold_from(
        &self,
        message: &Message,
        properties: &[u8],
        delay: u64,
        durable: bool,
        origin: u64,
    ) -> io::Result<Option<Arc<Store>>> {
        let now = now_ms();
        // One more millisecond: `now_ms` rounds down, and a message must never fire before its
        // delay has passed (a client timing it saw it 0.2 ms early).
        let due = now.saturating_add(delay).saturating_add(1);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut payload = Vec::new();
        record::encode(due, seq, origin, message, properties, &mut payload);
        self.held.fetch_add(1, Ordering::Relaxed);
        let Some(dirs) = &self.dirs else {
            let source = Source::Memory(payload.into_boxed_slice());
            self.state
                .lock()
                .firing
                .push(Reverse(Due { due, seq, source }));
            self.wake_by(due);
            return Ok(None);
        };
        let mut state = self.state.lock();
        let key = Key::for_due(due, now, durable, u32::MAX);
        state.append(dirs, key, &payload)?;
        drop(state);
        self.wake_by(key.wake);
        Ok(durable.then(|| Arc::clone(&dirs.store)))
    }

    /// Makes sure the firing thread looks at this vhost by `at`.
    fn wake_by(&self, at: u64) {
        if self.next_wake.fetch_min(at, Ordering::AcqRel) > at {
            fire::wake(at);
        }
    }

    /// The id of a return address, registered at its first use.
    fn register(&self, address: &Arc<ReturnAddress>) -> u64 {
        *address.id.get_or_init(|| {
            let mut returns = self.returns.lock();
            returns.next += 1;
            let id = returns.next;
            returns.addresses.insert(id, Arc::downgrade(address));
            if returns.addresses.len() > 2 * returns.swept.max(64) {
                returns.addresses.retain(|_, a| a.strong_count() > 0);
                returns.swept = returns.addresses.len();
            }
            id
        })
    }

    /// Where a message published by return address `origin` goes back to, if it still exists.
    fn return_address(&self, origin: u64) -> Option<Arc<ReturnAddress>> {
        self.returns.lock().addresses.get(&origin)?.upgrade()
    }

    /// (messages held since start, fired since start, buckets waiting, messages firing now).
    pub fn stats(&self) -> (u64, u64, usize, usize) {
        let state = self.state.lock();
        (
            self.held.load(Ordering::Relaxed),
            self.fired.load(Ordering::Relaxed),
            state.buckets.len(),
            state.firing.len(),
        )
    }

    /// Drops everything held (the vhost is being deleted; its directory goes with it).
    pub fn clear(&self) {
        let mut state = self.state.lock();
        *state = State::default();
        self.next_wake.store(u64::MAX, Ordering::Release);
    }
}

impl State {
    /// Appends a record to `key`'s bucket, creating it (and its directory) if needed; a
    /// durable bucket's file (and, when new, its directory) is handed to the group commit.
    fn append(&mut self, dirs: &Dirs, key: Key, payload: &[u8]) -> io::Result<()> {
        self.append_all(dirs, key, &[payload])
    }

    /// [`State::append`] of several records to one bucket, in one write.
    fn append_all(&mut self, dirs: &Dirs, key: Key, payloads: &[&[u8]]) -> io::Result<()> {
        let dir = match key.durable {
            true => &dirs.durable,
            false => &dirs.transient,
        };
        let made = &mut self.made[usize::from(!key.durable)];
        let mut created = false;
        if !*made {
            std::fs::create_dir_all(dir)?;
            if key.durable {
                files::sync_dir(&dirs.vhost)?;
            }
            *made = true;
        }
        let next_n = &mut self.next_n;
        let bucket = self.buckets.entry(key).or_insert_with(|| {
            let name = BucketName {
                start: key.start,
                width: key.width,
                n: *next_n,
            };
            *next_n += 1;
            Bucket {
                name,
                file: None,
                count: 0,
            }
        });
        let file = match &bucket.file {
            Some(file) => Arc::clone(file),
            None => {
                let path = dir.join(bucket.name.file_name());
                created = !path.exists();
                let file = Arc::new(files::open_append(&path)?);
                bucket.file = Some(Arc::clone(&file));
                self.open.push_back(key);
                file
            }
        };
        bucket.count += payloads.len() as u64;
        files::append(&file, payloads.iter().copied(), &mut self.frame)?;
        if key.durable {
            let syncer = &dirs.store.syncer;
            syncer.dirty([file]);
            if created {
                let dir_file = match dirs.durable_dir.get() {
                    Some(d) => Arc::clone(d),
                    None => {
                        let d = Arc::new(File::open(&dirs.durable)?);
                        Arc::clone(dirs.durable_dir.get_or_init(|| d))
                    }
                };
                syncer.dirty([dir_file]);
            }
        }
        while self.open.len() > OPEN_FILES {
            if let Some(old) = self.open.pop_front() {
                if let Some(bucket) = self.buckets.get_mut(&old) {
                    bucket.file = None;
                }
            }
        }
        Ok(())
    }

    /// Takes a bucket file into the firing heap: indexes its records (due, sequence, place).
    fn firing_file(&mut self, name: BucketName, path: PathBuf, durable: bool) {
        let indexed = index(&path);
        let (entries, file) = match indexed {
            Ok(found) => found,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read a delayed-message bucket; its messages are kept on disk");
                return;
            }
        };
        let n = name.n;
        let remaining = entries.len();
        for (due, seq, offset, framed) in entries {
            let source = Source::File { n, offset, framed };
            self.firing.push(Reverse(Due { due, seq, source }));
        }
        self.files.insert(
            n,
            Firing {
                file,
                path,
                remaining,
                durable,
            },
        );
    }
}

type Index = (Vec<(u64, u64, u64, u32)>, Arc<File>);

/// Every whole record of a bucket file: (due, seq, offset, framed length), and the file.
fn index(path: &Path) -> io::Result<Index> {
    let mut entries = Vec::new();
    let (_, clean) = files::scan(path, |offset, framed, payload| {
        if let Some((due, seq)) = record::due_of(payload) {
            entries.push((due, seq, offset, framed));
        }
    })?;
    if !clean {
        warn!(file = %path.display(), records = entries.len(), "a delayed-message bucket ends in a torn or damaged record; the rest of it is dropped");
    }
    Ok((entries, Arc::new(File::open(path)?)))
}

//! The descriptor cache: every file a queue log reads or writes is reached through a [`Handle`],
//! which opens its file on demand, and one [`Files`] per store bounds how many of them are open at
//! once (as RabbitMQ's file handle cache does), so that open files do not grow with the number of
//! queues.
//!
//! - A handle is cheap (where its file is, a per-handle lock, no descriptor): a log keeps one per
//!   segment file and acks file, for as long as that file exists. A log's handles share its
//!   directory's path ([`Files::handle_in`]) and keep their file name inline, so a handle is one
//!   allocation.
//! - Using a handle (write, read, sync) takes only *its own* lock (uncontended: its log's owner
//!   serialises the writes) and sets its *used* bit; the store-wide lock is taken only when a file
//!   is (re)opened. A busy queue's current segment stays open and costs no lookup.
//! - Open handles sit in a ring swept like a CLOCK: a handle used since the last pass gets a second
//!   chance, one that was not is closed. Passes happen when opening a file takes the count past
//!   [`Files::limit`] (half the process's soft limit: the rest is for sockets), and every
//!   [`SWEEP_INTERVAL`] on the sweeper thread, so an idle queue holds no descriptor at all after
//!   two intervals, whatever the limit.
//! - A handle with unsynced writes is synced before it is closed, under its own lock, so the group
//!   commit (which calls [`Handle::sync`]) is never told "done" for writes not on disk; an error
//!   of that sync is kept and returned by the next [`Handle::sync`].
//! - Out of descriptors (`EMFILE`, `ENFILE`): an open first closes every idle handle and tries
//!   again once; if that fails too, the error says that the broker is out of file descriptors and
//!   what the limit is (the caller refuses the one operation that needed the file).
//!
//! Never holds the store-wide lock while making a system call other than `close`, and never waits
//! for a handle's lock while holding it (`try_lock`: a busy handle is in use, so not idle).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fd_limit;

/// How often the sweeper closes the handles not used since its previous pass.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The fewest descriptors the cache keeps, whatever the process's limit.
const MIN_LIMIT: usize = 16;

/// How a handle's file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An existing file, read and written (a segment).
    ReadWrite,
    /// Written, created if missing (an acks file).
    Write,
    /// A directory, opened to be synced after its entries changed.
    Directory,
}

impl Mode {
    fn open(self, path: &Path) -> io::Result<File> {
        match self {
            Mode::ReadWrite => OpenOptions::new().read(true).write(true).open(path),
            Mode::Write => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path),
            Mode::Directory => File::open(path),
        }
    }
}

/// Whether an error says the process (or the system) has no descriptor left.
pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The store's descriptor cache (clones share it). Dropping the last clone stops the sweeper;
/// handles stay usable.
#[derive(Clone)]
pub struct Files {
    shared: Arc<Shared>,
    sweeper: Option<Arc<Sweeper>>,
}

/// The sweeper thread, stopped when dropped.
struct Sweeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    limit: usize,
    /// Handles whose file is open (counted here, whether or not they are still in `ring`).
    open: AtomicUsize,
    /// The open handles, oldest first (a dropped handle's entry is skipped when reached).
    ring: Mutex<VecDeque<Weak<Handle>>>,
}

/// A file opened on demand and closed by the cache when idle.
pub struct Handle {
    location: Location,
    mode: Mode,
    shared: Arc<Shared>,
    state: Mutex<State>,
    used: AtomicBool,
    /// Itself, for the ring.
    me: Weak<Handle>,
}

/// Where a handle's file is.
enum Location {
    /// A path of its own.
    Path(Box<Path>),
    /// A file named `name` in a directory whose path other handles share.
    In { dir: Arc<Path>, name: FileName },
}

/// A file name short enough to be kept inline (`msgs.0000000001`).
#[derive(Clone, Copy)]
struct FileName {
    len: u8,
    bytes: [u8; FileName::MAX],
}

impl FileName {
    const MAX: usize = 22;

    fn new(name: &str) -> Option<FileName> {
        let mut bytes = [0; FileName::MAX];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(FileName {
            len: name.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Copied whole from a `&str` in `new`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Location {
    fn path(&self) -> Cow<'_, Path> {
        match self {
            Location::Path(path) => Cow::Borrowed(path),
            Location::In { dir, name } => Cow::Owned(dir.join(name.as_str())),
        }
    }
}

#[derive(Default)]
struct State {
    file: Option<Arc<File>>,
    /// Written (or, for a directory, its entries changed) since the last sync.
    dirty: bool,
    /// A sync made when closing failed: the next [`Handle::sync`] says so.
    error: Option<io::Error>,
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("limit", &self.shared.limit)
            .field("open", &self.open())
            .finish()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("path", &self.location.path())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Files {
    /// A cache of at most `limit` open files (at least [`MIN_LIMIT`]) with its sweeper thread.
    pub fn new(limit: usize) -> io::Result<Files> {
        let mut files = Files::unswept(limit);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (shared, signal) = (Arc::clone(&files.shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("warren-files".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut stopped = lock(stopped);
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, SWEEP_INTERVAL)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                    shared.sweep();
                }
            })?;
        files.sweeper = Some(Arc::new(Sweeper {
            stop,
            thread: Some(thread),
        }));
        Ok(files)
    }

    /// A cache without a sweeper: idle files are closed only past the limit (or by
    /// [`Files::sweep`]).
    pub fn unswept(limit: usize) -> Files {
        Files {
            shared: Arc::new(Shared {
                limit: limit.max(MIN_LIMIT),
                open: AtomicUsize::new(0),
                ring: Mutex::new(VecDeque::new()),
            }),
            sweeper: None,
        }
    }

    /// The limit for this process: half its soft `RLIMIT_NOFILE` (the rest is for sockets).
    pub fn limit_for_process() -> usize {
        fd_limit::current()
            .map(|(soft, _)| usize::try_from(soft / 2).unwrap_or(usize::MAX))
            .unwrap_or(512)
    }

    /// How many files the cache may keep open (more are open while every one is in use).
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// How many files handles hold open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// A handle on `path`; nothing is opened until it is used.
    pub fn handle(&self, path: PathBuf, mode: Mode) -> Arc<Handle> {
        self.make(Location::Path(path.into_boxed_path()), mode)
    }

    /// A handle on the file `name` in `dir`, sharing `dir` (a short name is kept inline, so the
    /// handle is one allocation); nothing is opened until it is used.
    pub fn handle_in(&self, dir: &Arc<Path>, name: &str, mode: Mode) -> Arc<Handle> {
        self.make(Files::locate(dir, name), mode)
    }

    fn locate(dir: &Arc<Path>, name: &str) -> Location {
        match FileName::new(name) {
            Some(name) => Location::In {
                dir: Arc::clone(dir),
                name,
            },
            None => Location::Path(dir.join(name).into_boxed_path()),
        }
    }

    fn make(&self, location: Location, mode: Mode) -> Arc<Handle> {
        Arc::new_cyclic(|me| Handle {
            location,
            mode,
            shared: Arc::clone(&self.shared),
            state: Mutex::new(State::default()),
            used: AtomicBool::new(false),
            me: Weak::clone(me),
        })
    }

    /// Creates `path` (which must not exist) and returns its handle ([`Mode::ReadWrite`]), open.
    pub fn create_new(&self, path: PathBuf) -> io::Result<Arc<Handle>> {
        self.create(Location::Path(path.into_boxed_path()))
    }

    /// Creates the file `name` in `dir` (it must not exist) and returns its handle, open, as
    /// [`Files::handle_in`] makes them.
    pub fn create_new_in(&self, dir: &Arc<Path>, name: &str) -> io::Result<Arc<Handle>> {
        self.create(Files::locate(dir, name))
    }

    fn create(&self, location: Location) -> io::Result<Arc<Handle>> {
        let create = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
        };
        let file = self.shared.open_file(&location.path(), create)?;
        let handle = self.make(location, Mode::ReadWrite);
        let mut state = lock(&handle.state);
        state.file = Some(Arc::new(file));
        handle.opened();
        drop(state);
        Ok(handle)
    }

    /// Closes every handle not used since the previous sweep.
    pub fn sweep(&self) {
        self.shared.sweep();
    }

    /// `e`, described as the broker being out of descriptors if it is that.
    pub fn describe(&self, e: io::Error) -> io::Error {
        self.shared.describe(e)
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Opens a file; out of descriptors, closes every idle handle and tries once more.
    fn open_file(&self, path: &Path, open: impl Fn(&Path) -> io::Result<File>) -> io::Result<File> {
        match open(path) {
            Err(e) if is_out_of_descriptors(&e) => {
                let closed = self.close_idle(usize::MAX, true);
                tracing::debug!(closed, error = %e, "out of descriptors: closed idle queue files");
                open(path).map_err(|e| self.describe(e))
            }
            other => other,
        }
    }

    fn describe(&self, e: io::Error) -> io::Error {
        if !is_out_of_descriptors(&e) {
            return e;
        }
        let limit =
            fd_limit::current().map_or_else(|| "unknown".into(), |(soft, _)| soft.to_string());
        io::Error::other(format!(
            "the broker is out of file descriptors (the process's limit is {limit} open files, \
             {} of them queue files, kept to at most {}): {e}",
            self.open.load(Ordering::Relaxed),
            self.limit
        ))
    }

    fn sweep(&self) {
        self.close_idle(usize::MAX, false);
    }

    /// Closes up to `want` handles: the least recently used ones that are neither in use now nor
    /// (unless `all`) used since the ring last passed them. Returns how many it closed.
    fn close_idle(&self, want: usize, all: bool) -> usize {
        let victims = {
            let mut ring = lock(&self.ring);
            // A full pass, or two when evicting past the limit (second chances).
            let mut budget = if want == usize::MAX {
                ring.len()
            } else {
                2 * ring.len()
            };
            let mut victims = Vec::new();
            while victims.len() < want && budget > 0 {
                budget -= 1;
                let Some(weak) = ring.pop_front() else { break };
                let Some(handle) = weak.upgrade() else {
                    continue;
                };
                if !all && handle.used.swap(false, Ordering::Relaxed) {
                    ring.push_back(weak);
                    continue;
                }
                victims.push(handle);
            }
            victims
        };
        let mut closed = 0;
        let mut busy = Vec::new();
        for handle in victims {
            match handle.close_if_idle() {
                true => closed += 1,
                false => busy.push(Arc::downgrade(&handle)),
            }
        }
        if !busy.is_empty() {
            lock(&self.ring).extend(busy);
        }
        closed
    }
}

impl Handle {
    /// Opens the file if it is closed.
    pub fn open(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        self.file(&mut state).map(drop)
    }

    /// Writes all of `buf` at `offset` (under the handle's lock, so a close syncs every write).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        let file = self.file(&mut state)?;
        state.dirty = true;
        file.write_all_at(buf, offset)
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let file = self.file(&mut lock(&self.state))?;
        file.read_exact_at(buf, offset)
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        let file = self.file(&mut state)?;
        state.dirty = true;
        file.set_len(len)
    }

    /// Says that a directory's entries changed (it is synced by the next [`Handle::sync`]).
    pub fn mark_dirty(&self) {
        lock(&self.state).dirty = true;
    }

    /// Syncs what was written through the handle (`fdatasync`; nothing if nothing was), or
    /// reports the failure of a sync made when it was closed. The sync runs outside the
    /// handle's lock, so writes go on meanwhile (they are synced by a later call).
    pub fn sync(&self) -> io::Result<()> {
        let file = {
            let mut state = lock(&self.state);
            if let Some(e) = state.error.take() {
                return Err(e);
            }
            if !state.dirty {
                return Ok(());
            }
            let file = match self.file(&mut state) {
                // A directory removed since (its queue deleted): nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other?,
            };
            state.dirty = false;
            file
        };
        file.sync_data()
    }

    /// The open file, opened (and registered with the cache) if needed.
    fn file(&self, state: &mut State) -> io::Result<Arc<File>> {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        if let Some(file) = &state.file {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            self.shared
                .open_file(&self.location.path(), |path| self.mode.open(path))?,
        );
        state.file = Some(Arc::clone(&file));
        self.opened();
        Ok(file)
    }

    /// Counts a newly opened file and puts the handle in the ring; past the limit, closes the
    /// least recently used idle handles (this one is locked by the caller, so never itself).
    fn opened(&self) {
        let open = self.shared.open.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.shared.ring).push_back(Weak::clone(&self.me));
        if open > self.shared.limit {
            self.shared.close_idle(open - self.shared.limit, false);
        }
    }

    /// Closes the file unless the handle is in use; a dirty file is synced first. Returns false
    /// if it is in use (left open).
    fn close_if_idle(&self) -> bool {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let Some(file) = state.file.take() else {
            return true;
        };
        if std::mem::take(&mut state.dirty) {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %self.location.path().display(), error = %e, "fdatasync before closing an idle file failed");
                state.error = Some(e);
            }
        }
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        drop(file);
        true
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if state.file.take().is_some() {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl super::sync::Durable for Handle {
    fn sync(&self) -> io::Result<()> {
        Handle::sync(self)
    }
}

#[cfg(test)]
mod tests;

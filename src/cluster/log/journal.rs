//! The log's file: one append-only journal of CRC-framed records, and the one thread that writes
//! it.
//!
//! A record is `[u32 length][u32 crc32c][u8 kind][body]` (little-endian; length and CRC cover
//! kind and body). The writer thread takes jobs in order, writes each batch with one `write`
//! per job and one fsync per batch, and only then reports to the jobs that wait: group commit,
//! with the IO-flushed callback after the fsync. A rewrite (compaction) replaces the whole file
//! atomically through the same queue, so it is ordered with the appends.
//!
//! Owns the file's bytes. Never decodes a body: that is the log store's ([`super`]) business.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::cluster::fsio;

/// The journal's file name in a group's directory.
pub(crate) const FILE: &str = "raft.log";
/// The largest record accepted on recovery; a longer length is a torn or corrupt header.
pub(crate) const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;
/// The most jobs written under one fsync.
const BATCH: usize = 1024;

/// Called once a job's bytes are on disk (or could not be written).
pub(crate) type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Job {
    Append(Vec<u8>, Option<Done>),
    Replace(Vec<u8>, Done),
}

/// Appends one record (`kind`, `body`) to `out`.
pub(crate) fn frame(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let len = (body.len() + 1) as u32;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), body);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// The records of a journal found on start-up.
pub(crate) struct Recovered {
    /// `(kind, body)` in file order.
    pub records: Vec<(u8, Vec<u8>)>,
    /// The file's length after the torn tail (if any) was cut.
    pub len: u64,
}

/// Reads the journal in `dir` (none yet: no records), and cuts it after the last whole record
/// whose CRC matches: a write torn by a crash, and anything after it, is dropped.
pub(crate) fn recover(dir: &Path) -> io::Result<Recovered> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((kind, body, next)) = record_at(&bytes, at) {
        records.push((kind, body.to_vec()));
        at = next;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "raft log: cutting a torn tail");
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(at as u64)?;
        file.sync_all()?;
    }
    Ok(Recovered {
        records,
        len: at as u64,
    })
}

/// The record at `at`: kind, body and the offset after it; None when there is no whole, valid
/// record there.
fn record_at(bytes: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then(|| (payload[0], &payload[1..], at + HEADER + len))
}

/// The writer of one journal: jobs go to its thread in order. Dropping it lets the thread finish
/// the jobs already sent, then joins it.
pub(crate) struct Journal {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for appending, after [`recover`] has cut it.
    pub(crate) fn open(dir: &Path) -> io::Result<Journal> {
        let file = open_append(dir)?;
        fsio::sync_dir(dir)?;
        let (jobs, queue) = mpsc::channel();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || write_jobs(dir, file, queue))?;
        Ok(Journal {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Appends framed records; `done` (if any) is called once they are fsynced. Records without
    /// a `done` are written in order but made durable only by a later job that waits.
    pub(crate) fn append(&self, bytes: Vec<u8>, done: Option<Done>) {
        self.send(Job::Append(bytes, done));
    }

    /// Replaces the whole file with `bytes` (framed records), atomically.
    pub(crate) fn replace(&self, bytes: Vec<u8>, done: Done) {
        self.send(Job::Replace(bytes, done));
    }

    fn send(&self, job: Job) {
        let Some(jobs) = &self.jobs else { return };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            let stopped = || io::Error::other("raft log writer stopped");
            match job {
                Job::Append(_, Some(done)) | Job::Replace(_, done) => done(Err(stopped())),
                Job::Append(_, None) => {}
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_append(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(FILE))
}

/// The writer thread: batches of jobs, one fsync per batch. After a failed write the file may
/// end in a partial record, so every later job fails too (recovery cuts it on the next start).
fn write_jobs(dir: PathBuf, mut file: File, queue: mpsc::Receiver<Job>) {
    let mut broken: Option<String> = None;
    let mut waiting: Vec<Done> = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut job = Some(first);
        let mut taken = 0;
        while let Some(next) = job {
            match next {
                Job::Append(bytes, done) => {
                    if broken.is_none() {
                        if let Err(e) = file.write_all(&bytes) {
                            broken = Some(format!("raft log write: {e}"));
                        }
                    }
                    waiting.extend(done);
                }
                Job::Replace(bytes, done) => {
                    flush(&file, &mut waiting, &mut broken);
                    let replaced = match &broken {
                        Some(why) => Err(io::Error::other(why.clone())),
                        None => {
                            fsio::replace_file(&dir, FILE, &bytes).and_then(|()| open_append(&dir))
                        }
                    };
                    match replaced {
                        Ok(reopened) => {
                            file = reopened;
                            done(Ok(()));
                        }
                        Err(e) => {
                            broken = Some(format!("raft log rewrite: {e}"));
                            done(Err(e));
                        }
                    }
                }
            }
            taken += 1;
            job = if taken < BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        flush(&file, &mut waiting, &mut broken);
    }
}

/// Fsyncs what was written and reports to every waiting job.
fn flush(file: &File, waiting: &mut Vec<Done>, broken: &mut Option<String>) {
    if waiting.is_empty() {
        return;
    }
    if broken.is_none() {
        if let Err(e) = file.sync_data() {
            *broken = Some(format!("raft log fsync: {e}"));
        }
    }
    for done in waiting.drain(..) {
        done(match &broken {
            None => Ok(()),
            Some(why) => Err(io::Error::other(why.clone())),
        });
    }
}

//! The de-duplication window of one durable queue or exchange as an append-only file, so that
//! the window survives a restart. Keys are opaque bytes here: the broker decides what a key is
//! (`broker/dedup.rs`). This module owns that one file and nothing else; it never knows AMQP
//! and never trusts a length read from the file without a bound.
//!
//! Format: `WRNDDUP1`, then entries, each `u32 body length (BE) | u32 crc32c(body) | body`,
//! where body = `u8 op (1 seen, 2 forget) | u64 expiry (BE, ms since the Unix epoch; 0: never)
//! | key`. Replaying the entries in order gives the window: a `seen` sets its key's expiry (and
//! makes it the newest), a `forget` removes it.
//!
//! Writing: [`DedupLog::append`] writes an entry with one `pwrite` at once; the caller hands
//! [`DedupLog::file`] to the group commit in the same critical section, so a confirm that waits
//! for the group commit covers the entry. When the file holds more than twice the entries the
//! window keeps, the caller [`DedupLog::rewrite`]s it from the live window (a temporary file,
//! synced, renamed over the log, the directory synced).
//!
//! Recovery ([`DedupLog::open`]): entries are replayed up to the first one whose length is out
//! of bounds or whose CRC fails, and the file is cut there: a crash mid-append loses only an
//! entry whose sync had not completed, whose publish was therefore never confirmed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"WRNDDUP1";
/// Length and CRC before each entry's body.
const FRAME: usize = 8;
/// Op and expiry before each entry's key.
const HEAD: usize = 9;
/// The largest key kept (a longer one is a corrupt length).
pub const MAX_KEY: usize = 64 * 1024;
/// The largest file read at start (a bound before reading it whole).
const MAX_FILE: u64 = 1 << 31;
const SEEN: u8 = 1;
const FORGET: u8 = 2;

/// One entry of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `key` was seen; it leaves the window at `expires` (ms since the epoch; 0: never).
    Seen { key: Vec<u8>, expires: u64 },
    /// `key` left the window (its publish failed).
    Forget { key: Vec<u8> },
}

/// The de-duplication file of one queue or exchange.
#[derive(Debug)]
pub struct DedupLog {
    path: PathBuf,
    file: Arc<File>,
    /// Where the next entry goes.
    end: u64,
    /// Entries in the file (live or not).
    entries: usize,
}

impl DedupLog {
    /// Opens (or creates) the file at `path`, its directory too; the entries it holds, in order.
    pub fn open(path: &Path) -> io::Result<(DedupLog, Vec<Entry>)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > MAX_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {len} bytes is too large", path.display()),
            ));
        }
        let mut data = vec![0u8; len as usize];
        file.read_exact_at(&mut data, 0)?;
        let (entries, end) = if data.len() >= MAGIC.len() && data[..MAGIC.len()] == MAGIC[..] {
            replay(&data)
        } else {
            // New, or too torn to hold even the header: start over, and make the file's name
            // durable too (its directory, and the one above, which may be new as well), so that
            // a key synced later is not lost with a directory entry that was not.
            file.set_len(0)?;
            file.write_all_at(MAGIC, 0)?;
            file.sync_data()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
                if let Some(above) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    File::open(above)?.sync_all()?;
                }
            }
            (Vec::new(), MAGIC.len())
        };
        if (end as u64) < len {
            tracing::warn!(file = %path.display(), at = end, len, "de-duplication file: cutting a torn tail");
            file.set_len(end as u64)?;
        }
        let log = DedupLog {
            path: path.to_path_buf(),
            file: Arc::new(file),
            end: end as u64,
            entries: entries.len(),
        };
        Ok((log, entries))
    }

    /// Writes one entry (one `pwrite`); hand [`DedupLog::file`] to the group commit after it.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut out = Vec::with_capacity(FRAME + HEAD + 32);
        encode(&mut out, entry);
        self.file.write_all_at(&out, self.end)?;
        self.end += out.len() as u64;
        self.entries += 1;
        Ok(())
    }

    /// The file, for the group commit.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Entries in the file, live or not.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Replaces the file by one holding only `live` (oldest first), durably.
    pub fn rewrite<'a>(&mut self, live: impl Iterator<Item = (&'a [u8], u64)>) -> io::Result<()> {
        let temp = self.path.with_extension("tmp");
        let mut out = MAGIC.to_vec();
        let mut entries = 0;
        for (key, expires) in live {
            encode(
                &mut out,
                &Entry::Seen {
                    key: key.to_vec(),
                    expires,
                },
            );
            entries += 1;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all_at(&out, 0)?;
        file.sync_data()?;
        fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Arc::new(file);
        self.end = out.len() as u64;
        self.entries = entries;
        Ok(())
    }

    /// Removes the file (its queue or exchange was deleted).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn encode(out: &mut Vec<u8>, entry: &Entry) {
    let (op, key, expires) = match entry {
        Entry::Seen { key, expires } => (SEEN, key, *expires),
        Entry::Forget { key } => (FORGET, key, 0),
    };
    let body_len = HEAD + key.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(op);
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(key);
    let crc = crc32c::crc32c(&out[start + FRAME..]);
    out[start + 4..start + FRAME].copy_from_slice(&crc.to_be_bytes());
}

/// The entries of `data` (header checked) up to the first bad one, and where that one starts.
fn replay(data: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut at = MAGIC.len();
    while let Some((entry, next)) = entry_at(data, at) {
        entries.push(entry);
        at = next;
    }
    (entries, at)
}

fn entry_at(data: &[u8], at: usize) -> Option<(Entry, usize)> {
    let frame = data.get(at..at.checked_add(FRAME)?)?;
    let len = u32::from_be_bytes(frame[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(frame[4..].try_into().ok()?);
    if !(HEAD..=HEAD + MAX_KEY).contains(&len) {
        return None;
    }
    let body = data.get(at + FRAME..at + FRAME + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let expires = u64::from_be_bytes(body[1..HEAD].try_into().ok()?);
    let key = body[HEAD..].to_vec();
    let entry = match body[0] {
        SEEN => Entry::Seen { key, expires },
        FORGET => Entry::Forget { key },
        _ => return None,
    };
    Some((entry, at + FRAME + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-dedup-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("x.dedup")
    }

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let path = temp("reopen");
        let (mut log, entries) = DedupLog::open(&path).unwrap();
        assert!(entries.is_empty());
        let a = Entry::Seen {
            key: b"a".to_vec(),
            expires: 7,
        };
        let b = Entry::Forget { key: b"a".to_vec() };
        log.append(&a).unwrap();
        log.append(&b).unwrap();
        drop(log);
        // A torn append.
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, &[0, 0, 0, 20, 1, 2]).unwrap();
        let (log, entries) = DedupLog::open(&path).unwrap();
        assert_eq!(entries, vec![a, b]);
        assert_eq!(log.entries(), 2);
        let (_, again) = DedupLog::open(&path).unwrap();
        assert_eq!(again.len(), 2);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn rewrite_keeps_only_the_live_window() {
        let path = temp("rewrite");
        let (mut log, _) = DedupLog::open(&path).unwrap();
        for i in 0..10u8 {
            log.append(&Entry::Seen {
                key: vec![i],
                expires: 0,
            })
            .unwrap();
        }
        let live = [(&[8u8][..], 0u64), (&[9u8][..], 5)];
        log.rewrite(live.iter().copied()).unwrap();
        log.append(&Entry::Seen {
            key: vec![10],
            expires: 0,
        })
        .unwrap();
        let (_, entries) = DedupLog::open(&path).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[1],
            Entry::Seen {
                key: vec![9],
                expires: 5
            }
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}

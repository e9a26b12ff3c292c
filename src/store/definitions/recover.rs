//! Opening a vhost's definitions log at start: replaying it (and cutting a torn or corrupt tail),
//! or making it (empty, or from the old whole-file format, once).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use bytes::Bytes;
use tracing::warn;

use super::compact::{install, Snapshot};
use super::{legacy, DefinitionLog, DELETE, FILE, FRAME, MAGIC, MAX_ENTRY, MAX_FILE, PUT, TEMP};

/// A live record: (key, record).
pub type Entry = (Bytes, Bytes);

/// What a replay found.
#[derive(Debug)]
pub(super) struct Replay {
    /// Live records, in the order their keys were first put.
    pub live: Vec<Entry>,
    /// Where the last good entry ends.
    pub end: usize,
    /// Good entries, live or dead.
    pub entries: u64,
}

impl DefinitionLog {
    /// Opens the log in `dir` (making it if there is none) with its live records. A directory from
    /// before the log has its `definitions` file upgraded: `legacy_key` gives each of its records
    /// a key (`None`: the record is dropped), the new log is written, then the old file removed.
    pub fn open(
        dir: &Path,
        legacy_key: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> io::Result<(DefinitionLog, Vec<Entry>)> {
        fs::create_dir_all(dir)?;
        // What a compaction that did not finish left.
        let _ = fs::remove_file(dir.join(TEMP));
        match fs::metadata(dir.join(FILE)) {
            Ok(meta) => Self::recover(dir, meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(dir, legacy_key),
            Err(e) => Err(e),
        }
    }

    fn recover(dir: &Path, size: u64) -> io::Result<(DefinitionLog, Vec<Entry>)> {
        let path = dir.join(FILE);
        let corrupt = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        if size > MAX_FILE {
            return Err(corrupt("larger than any definitions log Warren writes"));
        }
        let data = Bytes::from(fs::read(&path)?);
        // A log is only ever made whole (written, synced, renamed): a bad header is not a torn
        // write, and the broker must not start without its topology.
        if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(corrupt("not a Warren definitions log"));
        }
        let replay = replay(&data);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        if replay.end < data.len() {
            warn!(
                path = %path.display(),
                cut_bytes = data.len() - replay.end,
                "definitions log: cutting a torn or corrupt tail"
            );
            file.set_len(replay.end as u64)?;
            file.sync_data()?;
        }
        if remove_legacy(dir)? {
            File::open(dir)?.sync_all()?;
        }
        let live = replay.live.len();
        let log = DefinitionLog::new(
            dir.to_path_buf(),
            file,
            replay.end as u64,
            replay.entries,
            live,
        );
        Ok((log, replay.live))
    }

    /// A new log, holding the records of the old `definitions` file if there is one.
    fn create(
        dir: &Path,
        legacy_key: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> io::Result<(DefinitionLog, Vec<Entry>)> {
        let mut snapshot = Snapshot::new();
        let mut live = Vec::new();
        for record in legacy::load(dir)? {
            match legacy_key(&record) {
                Some(key) => {
                    snapshot.put(&key, &record)?;
                    live.push((Bytes::from(key), record));
                }
                None => warn!(dir = %dir.display(), "upgrade: dropping an unreadable definition"),
            }
        }
        let file = snapshot.write_temp(dir)?;
        install(dir)?;
        if remove_legacy(dir)? {
            File::open(dir)?.sync_all()?;
        }
        let records = snapshot.records();
        let log = DefinitionLog::new(
            dir.to_path_buf(),
            file,
            snapshot.len(),
            records as u64,
            records,
        );
        Ok((log, live))
    }
}

/// Removes the old-format file (the log holds its records); whether there was one.
fn remove_legacy(dir: &Path) -> io::Result<bool> {
    match fs::remove_file(dir.join(legacy::FILE)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies the entries of `data` (a whole log, header checked) in order, up to the first bad one.
pub(super) fn replay(data: &Bytes) -> Replay {
    let mut index: HashMap<Bytes, usize> = HashMap::new();
    let mut records: Vec<Option<Entry>> = Vec::new();
    let mut at = MAGIC.len();
    let mut entries = 0;
    while let Some((op, key, record, next)) = entry_at(data, at) {
        if op == PUT {
            match index.get(&key) {
                Some(&i) => records[i] = Some((key, record)),
                None => {
                    index.insert(key.clone(), records.len());
                    records.push(Some((key, record)));
                }
            }
        } else if let Some(i) = index.remove(&key) {
            records[i] = None;
        }
        entries += 1;
        at = next;
    }
    Replay {
        live: records.into_iter().flatten().collect(),
        end: at,
        entries,
    }
}

/// The entry at `at`: (op, key, record, where the next starts); `None` at the end of the data or
/// at an entry that is torn, out of bounds, fails its CRC or is not well formed.
fn entry_at(data: &Bytes, at: usize) -> Option<(u8, Bytes, Bytes, usize)> {
    let head = data.get(at..at.checked_add(FRAME)?)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let stored = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if !(5..=MAX_ENTRY).contains(&len) {
        return None;
    }
    let start = at + FRAME;
    let end = start.checked_add(len)?;
    let body = data.get(start..end)?;
    if crc32c::crc32c(body) != stored {
        return None;
    }
    let op = body[0];
    let key_len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let key_end = 5usize.checked_add(key_len).filter(|&e| e <= len)?;
    match op {
        PUT => {}
        DELETE if key_end == len => {}
        _ => return None,
    }
    let key = data.slice(start + 5..start + key_end);
    let record = data.slice(start + key_end..end);
    Some((op, key, record, end))
}

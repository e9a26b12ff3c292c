//! A group's snapshot file: the machine's bytes with openraft's snapshot metadata, replaced
//! atomically (temporary file, fsync, rename, directory fsync), and the newest snapshot kept in
//! memory for followers that need it.
//!
//! Layout: `WRNSNAP1`, `[u32 meta length]`, the metadata (JSON), the machine's bytes, and a
//! crc32c of everything before it (all little-endian). Owns the file; never touches the machine.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, SnapshotMeta};
use parking_lot::Mutex;

use super::fsio;
use super::machine::NodeId;

const FILE: &str = "snapshot";
const MAGIC: &[u8; 8] = b"WRNSNAP1";

pub(crate) type Meta = SnapshotMeta<NodeId, BasicNode>;

/// A snapshot as held in memory.
#[derive(Clone)]
pub(crate) struct Stored {
    pub meta: Meta,
    pub data: Arc<Vec<u8>>,
}

/// The snapshot file of one group's directory and the newest snapshot.
pub(crate) struct SnapshotFile {
    dir: PathBuf,
    current: Mutex<Option<Stored>>,
}

impl SnapshotFile {
    /// Reads the snapshot in `dir`, if any. A file that does not check out is an error, not a
    /// missing snapshot: the log before it may have been purged.
    pub(crate) fn open(dir: &Path) -> io::Result<SnapshotFile> {
        let current = match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => Some(decode(&bytes).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot in {}: {why}", dir.display()),
                )
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(SnapshotFile {
            dir: dir.to_path_buf(),
            current: Mutex::new(current),
        })
    }

    pub(crate) fn current(&self) -> Option<Stored> {
        self.current.lock().clone()
    }

    /// Writes `stored` durably and makes it the current snapshot, unless the current one is
    /// newer already (a snapshot built while a newer one was installed). Blocking: call it off
    /// the async workers.
    pub(crate) fn save(&self, stored: Stored) -> io::Result<()> {
        let mut current = self.current.lock();
        if let Some(have) = &*current {
            if have.meta.last_log_id > stored.meta.last_log_id {
                return Ok(());
            }
        }
        let bytes = encode(&stored)?;
        fsio::replace_file(&self.dir, FILE, &bytes)?;
        tracing::debug!(dir = %self.dir.display(), id = %stored.meta.snapshot_id, bytes = bytes.len(), "snapshot saved");
        *current = Some(stored);
        Ok(())
    }
}

fn encode(stored: &Stored) -> io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(&stored.meta).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(8 + 4 + meta.len() + stored.data.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&stored.data);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<Stored, String> {
    let (body, crc) = bytes
        .split_at_checked(bytes.len().saturating_sub(4))
        .ok_or("too short")?;
    let crc: [u8; 4] = crc.try_into().map_err(|_| "too short")?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
        return Err("crc mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC).ok_or("not a snapshot file")?;
    let (len, rest) = rest.split_at_checked(4).ok_or("too short")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (meta, data) = rest.split_at_checked(len).ok_or("metadata past the end")?;
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| format!("metadata: {e}"))?;
    Ok(Stored {
        meta,
        data: Arc::new(data.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_snapshot_reads_back_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("warren-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = SnapshotFile::open(&dir).unwrap();
        assert!(file.current().is_none());
        let meta = Meta {
            snapshot_id: "1-5".into(),
            ..Default::default()
        };
        file.save(Stored {
            meta,
            data: Arc::new(b"state".to_vec()),
        })
        .unwrap();
        let again = SnapshotFile::open(&dir).unwrap().current().unwrap();
        assert_eq!(
            (again.meta.snapshot_id.as_str(), again.data.as_slice()),
            ("1-5", &b"state"[..])
        );
        let mut bytes = std::fs::read(dir.join(FILE)).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(dir.join(FILE), bytes).unwrap();
        assert!(SnapshotFile::open(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

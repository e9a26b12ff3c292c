//! The message store: what survives a restart. Knows bytes and files, never AMQP.
//!
//! - [`log`]: one append-only, segmented log per durable queue (its persistent messages, their
//!   acks), with CRC-checked records and recovery that cuts a torn tail.
//! - [`sync`]: group commit: one `fsync` covers every write made before it, and whoever waits on
//!   it (a publisher confirm) is told once it is done.
//! - [`files`]: the descriptor cache: logs open their files on demand through it, and it closes
//!   idle ones, so open files stay bounded whatever the number of queues ([`fd_limit`]: the
//!   process's limit, raised at start).
//! - [`delayed`]: the bucket files of held delayed messages (append, scan, read, delete).
//! - [`definitions`]: the durable topology (exchanges, queues, bindings) as an append-only log
//!   of puts and deletes per vhost, compacted in the background.
//! - [`dedup`]: the de-duplication window of a durable queue or exchange, an append-only file of
//!   keys, rewritten when it grows past twice the window.
//!
//! Layout under `--data-dir` (`<id>`: 16 hex digits of the FNV-1a hash of a name, see [`id`]):
//!
//! ```text
//! vhosts/<id>/definitions.log  the vhost's durable exchanges, queues, bindings (definitions/)
//! vhosts/<id>/queues/<id>/     one directory per durable queue, made at its first append (log.rs)
//!   dedup.log                  its de-duplication window, if it has one (dedup.rs)
//!   00000000000000000000.seg … a stream queue's segments, named by first offset (stream.rs)
//! vhosts/<id>/exchanges/<id>.dedup  a durable exchange's de-duplication window (dedup.rs)
//! vhosts/<id>/delayed/         held delayed messages, one file per bucket of due times
//!                              (delayed.rs); delayed-transient/ beside it, emptied at start
//! spill/<n>/                   logs of non-durable queues whose backlog outgrew memory; removed
//!                              at start
//!   msgs.0000000001 …          segments: records appended, sealed when full
//!   acks.0000000001 …          per segment: settled and delivered records
//! ```

pub mod dedup;
pub mod definitions;
pub mod delayed;
pub mod fd_limit;
pub mod files;
pub mod log;
pub mod stream;
pub mod sync;

use std::path::{Path, PathBuf};

/// What every durable queue's log shares: where logs live, their segment size, the group commit.
#[derive(Debug)]
pub struct Store {
    pub data_dir: PathBuf,
    pub segment_size: u64,
    /// Bytes of ready messages a queue keeps in memory; beyond, they live only in its log.
    pub memory_window: usize,
    pub syncer: sync::Syncer,
    /// The descriptors of every log's files.
    pub files: files::Files,
    /// Names spill logs.
    pub next_spill: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Where non-durable queues page out their backlog; emptied at start.
    pub fn spill_root(&self) -> PathBuf {
        self.data_dir.join("spill")
    }

    /// A fresh spill log directory.
    pub fn spill_dir(&self) -> PathBuf {
        let n = self
            .next_spill
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.spill_root().join(format!("{n:016x}"))
    }
}

/// A stable directory name for a vhost or queue name: FNV-1a, 64 bits, as 16 hex digits. Stable
/// across runs and platforms (unlike the standard library's hasher).
pub fn id(name: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in name {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The directory of a vhost.
pub fn vhost_dir(data_dir: &Path, vhost: &str) -> PathBuf {
    data_dir.join("vhosts").join(id(vhost.as_bytes()))
}

/// The directory of a durable queue's log.
pub fn queue_dir(vhost_dir: &Path, queue: &[u8]) -> PathBuf {
    vhost_dir.join("queues").join(id(queue))
}

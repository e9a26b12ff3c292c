//! Resource alarms: the broker's memory (RSS) above its high watermark, or free disk space under
//! its limit, blocks publishing connections until it is back under (RabbitMQ's
//! `connection.blocked` / `connection.unblocked`).
//!
//! One task samples both every `interval` and publishes the alarm (its reason, or `None`) on a
//! `watch` channel that every connection task follows; the thresholds can be changed while
//! running. This module only measures and announces: what a blocked connection does (stop
//! reading once it has published, keep delivering to consumers) is the connection's business.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// The limits, changeable at run time.
#[derive(Debug)]
pub struct Thresholds {
    /// Block publishers when the broker's RSS is above this (bytes).
    pub memory_high_watermark: AtomicU64,
    /// Block publishers when the data directory's filesystem has less free space (bytes).
    pub disk_free_limit: AtomicU64,
}

impl Thresholds {
    pub fn new(memory_high_watermark: u64, disk_free_limit: u64) -> Arc<Thresholds> {
        Arc::new(Thresholds {
            memory_high_watermark: AtomicU64::new(memory_high_watermark),
            disk_free_limit: AtomicU64::new(disk_free_limit),
        })
    }
}

/// RabbitMQ's default memory high watermark: 40% of the machine's memory (or 1 GiB if that
/// cannot be read).
pub fn default_memory_high_watermark() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        });
    match total_kib {
        Some(kib) => kib * 1024 / 10 * 4,
        None => 1 << 30,
    }
}

/// The broker's resident memory, from /proc (0 if unreadable).
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Free space for unprivileged writers on the filesystem holding `path` (None if unknown).
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stats` points to writable memory of
    // the right type; statvfs initialises it when it returns 0.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    Some(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// Samples memory and disk every `interval` until every receiver is gone; starts with no alarm.
pub fn start(
    thresholds: Arc<Thresholds>,
    data_dir: PathBuf,
    interval: Duration,
) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let rss = rss_bytes();
            let memory_limit = thresholds.memory_high_watermark.load(Ordering::Relaxed);
            let disk_limit = thresholds.disk_free_limit.load(Ordering::Relaxed);
            let free = free_disk_bytes(&data_dir);
            let alarm = if rss > memory_limit {
                Some(format!(
                    "memory alarm: {rss} bytes used, high watermark {memory_limit}"
                ))
            } else if free.is_some_and(|free| free < disk_limit) {
                Some(format!(
                    "disk alarm: {} bytes free, limit {disk_limit}",
                    free.unwrap_or(0)
                ))
            } else {
                None
            };
            if *tx.borrow() != alarm {
                match &alarm {
                    Some(reason) => warn!(%reason, "resource alarm: blocking publishers"),
                    None => info!("resource alarm cleared: unblocking publishers"),
                }
                if tx.send(alarm).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_are_plausible() {
        assert!(
            rss_bytes() > 1024 * 1024,
            "a test process uses more than 1 MiB"
        );
        let free = free_disk_bytes(&std::env::temp_dir()).expect("statvfs of the temp dir");
        assert!(free > 0);
        assert!(free_disk_bytes(Path::new("/no/such/dir")).is_none());
        assert!(default_memory_high_watermark() > 64 * 1024 * 1024);
    }
}

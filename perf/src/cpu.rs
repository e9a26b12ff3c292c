//! CPU time and memory from /proc: this process (total and per thread) and, optionally, the
//! broker's. Read-only; Linux only (elsewhere every figure is simply absent).

use std::fs;

/// /proc reports CPU times in USER_HZ ticks, 100 per second on every Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime, in seconds, from a /proc/.../stat file.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after it start at "state".
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// CPU seconds of a process (`pid`) or of this one (`None`).
pub fn process_cpu(pid: Option<u32>) -> Option<f64> {
    match pid {
        Some(pid) => stat_cpu_seconds(&format!("/proc/{pid}/stat")),
        None => stat_cpu_seconds("/proc/self/stat"),
    }
}

/// One thread of this process: id, name, CPU seconds.
#[derive(Clone, Debug)]
pub struct ThreadCpu {
    pub tid: u32,
    pub name: String,
    pub seconds: f64,
}

pub fn threads() -> Vec<ThreadCpu> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let base = format!("/proc/self/task/{tid}");
        let seconds = stat_cpu_seconds(&format!("{base}/stat"))?;
        let name = fs::read_to_string(format!("{base}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Some(ThreadCpu { tid, name, seconds })
    })
    .collect()
}

/// Read counters of /proc/PID/io (readable for another user's process only as root).
#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    /// Bytes the process asked read/pread/recv... calls for (page cache hits included).
    pub rchar: u64,
    /// Read syscalls (read, pread64, readv, ...; socket reads included).
    pub syscr: u64,
    /// Bytes fetched from the block device (page cache misses).
    pub read_bytes: u64,
}

impl Io {
    pub fn since(&self, before: &Io) -> Io {
        Io {
            rchar: self.rchar.saturating_sub(before.rchar),
            syscr: self.syscr.saturating_sub(before.syscr),
            read_bytes: self.read_bytes.saturating_sub(before.read_bytes),
        }
    }
}

pub fn io(pid: u32) -> Option<Io> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    Some(Io {
        rchar: field("rchar")?,
        syscr: field("syscr")?,
        read_bytes: field("read_bytes")?,
    })
}

/// A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU use between two thread snapshots: (busiest thread's name, its share of a core, how many
/// threads did measurable work).
pub fn busiest_thread(
    before: &[ThreadCpu],
    after: &[ThreadCpu],
    wall: f64,
) -> (String, f64, usize) {
    let mut busiest = (String::new(), 0.0);
    let mut active = 0;
    for t in after {
        let start = before
            .iter()
            .find(|b| b.tid == t.tid)
            .map_or(0.0, |b| b.seconds);
        let share = (t.seconds - start) / wall.max(1e-9);
        if share >= 0.05 {
            active += 1;
        }
        if share > busiest.1 {
            busiest = (t.name.clone(), share);
        }
    }
    (busiest.0, busiest.1, active)
}

/// (busy, total) jiffies of the whole machine, from the first line of /proc/stat.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of all cores busy (any process) between two [`machine_jiffies`] readings.
pub fn machine_busy(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

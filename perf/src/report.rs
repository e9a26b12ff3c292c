//! Output: the once-a-second progress line while the run lasts, and the final summary (text or
//! one JSON object). The reporter task also owns the run's whole-latency histogram.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::stats::{Histogram, Shared};

/// One second of the run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Clock time at the end of the interval.
    pub at: u64,
    pub sent: f64,
    pub confirmed: f64,
    pub received: f64,
    pub p50: u64,
    pub p99: u64,
}

/// Prints a progress line every second until `stop`; returns the samples and the run's latency.
pub async fn progress(
    shared: Arc<Shared>,
    start: Instant,
    to_stderr: bool,
    mut stop: watch::Receiver<bool>,
) -> (Vec<Sample>, Histogram) {
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut total = Histogram::default();
    let mut last = (start, 0u64, 0u64, 0u64);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let now = Instant::now();
        let counts = (
            shared.sent(),
            shared.confirmed(),
            shared.received.load(Ordering::Relaxed),
        );
        let second = shared.take_latency();
        total.merge(&second);
        if stopping {
            break;
        }
        let dt = (now - last.0).as_secs_f64().max(1e-9);
        let sample = Sample {
            at: shared.clock.now(),
            sent: (counts.0 - last.1) as f64 / dt,
            confirmed: (counts.1 - last.2) as f64 / dt,
            received: (counts.2 - last.3) as f64 / dt,
            p50: second.quantile(0.5),
            p99: second.quantile(0.99),
        };
        let line = format!(
            "{:>4}s  sent {:>10} msg/s  confirmed {:>10} msg/s  received {:>10} msg/s  latency p50 {:>9} p99 {:>9}",
            (now - start).as_secs_f64().round(),
            thousands(sample.sent),
            thousands(sample.confirmed),
            thousands(sample.received),
            duration(sample.p50),
            duration(sample.p99),
        );
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
        samples.push(sample);
        last = (now, counts.0, counts.1, counts.2);
    }
    (samples, total)
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A rate: median of the run's full seconds, and count / window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub median: f64,
    pub overall: f64,
}

/// The broker's RSS at the points of a run that tell memory per connection and per message
/// (with `--broker-pid`; KiB).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Producer and consumer connections open when `rss_connected_kib` was read (consumers are
    /// not counted with `--backlog`: they connect later).
    pub connections: usize,
    /// After declaring, before any producer or consumer connected.
    pub rss_before_connect_kib: Option<u64>,
    /// Half a second after every connection was set up, before publishing.
    pub rss_connected_kib: Option<u64>,
    /// When the last producer finished (with `--backlog`: the backlog is queued).
    pub rss_after_publish_kib: Option<u64>,
    /// The largest of samples every 200 ms from the start of publishing to the end of the drain.
    pub rss_run_peak_kib: Option<u64>,
}

impl Memory {
    /// (RSS connected - RSS before) / connections.
    pub fn per_connection_kib(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_connect_kib?, self.rss_connected_kib?);
        (self.connections > 0).then(|| (after as f64 - before as f64) / self.connections as f64)
    }
}

/// The broker over the drain of a `--backlog` run (consumers attached -> drained).
#[derive(Clone, Copy, Debug, Default)]
pub struct DrainPhase {
    pub broker_cpu: Option<f64>,
    pub io: Option<crate::cpu::Io>,
    pub rss_peak_kib: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub settings: Value,
    pub publish_seconds: f64,
    /// Start -> the broker's close-ok to the last producer (every publish processed), if all
    /// producers got one.
    pub accepted_seconds: Option<f64>,
    pub consume_seconds: f64,
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub received: u64,
    pub publish: Rate,
    pub confirm: Rate,
    pub consume: Rate,
    pub latency: [u64; 4],
    pub latency_count: u64,
    pub drained: bool,
    pub drain_seconds: f64,
    pub missing: u64,
    pub queued_at_end: Option<u64>,
    pub lost: Option<u64>,
    pub duplicates: u64,
    pub misrouted: u64,
    pub foreign: u64,
    pub redelivered: u64,
    pub wall_seconds: f64,
    pub tool_cpu: Option<f64>,
    pub busiest_thread: (String, f64),
    pub active_threads: usize,
    pub broker_cpu: Option<f64>,
    /// Share of all the machine's cores busy during the run (any process).
    pub machine_busy: Option<f64>,
    pub broker_peak_rss_kib: Option<u64>,
    pub broker_rss_kib: Option<u64>,
    pub memory: Memory,
    pub drain_phase: Option<DrainPhase>,
    pub cores: usize,
    pub bottleneck: String,
    pub errors: Vec<String>,
}

impl Summary {
    /// CPU microseconds per message sent.
    fn per_message(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.sent > 0)
            .map(|c| c * 1e6 / self.sent as f64)
    }

    pub fn to_json(&self) -> Value {
        let rate = |r: Rate| json!({"median": r.median.round(), "overall": r.overall.round()});
        let cores = |cpu: Option<f64>| cpu.map(|c| c / self.wall_seconds.max(1e-9));
        json!({
            "settings": self.settings,
            "publish_seconds": self.publish_seconds,
            "accepted_seconds": self.accepted_seconds,
            "consume_seconds": self.consume_seconds,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "nacked": self.nacked,
            "received": self.received,
            "rates_msg_per_s": {
                "publish": rate(self.publish),
                "accepted": self.accepted_seconds.map(|s| (self.sent as f64 / s.max(1e-9)).round()),
                "confirm": rate(self.confirm),
                "consume": rate(self.consume),
            },
            "latency_us": {
                "p50": self.latency[0] as f64 / 1e3,
                "p95": self.latency[1] as f64 / 1e3,
                "p99": self.latency[2] as f64 / 1e3,
                "max": self.latency[3] as f64 / 1e3,
                "samples": self.latency_count,
            },
            "drained": self.drained,
            "drain_seconds": self.drain_seconds,
            "missing": self.missing,
            "queued_at_end": self.queued_at_end,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "misrouted": self.misrouted,
            "foreign": self.foreign,
            "redelivered": self.redelivered,
            "cpu": {
                "wall_seconds": self.wall_seconds,
                "cores": self.cores,
                "tool_seconds": self.tool_cpu,
                "tool_cores": cores(self.tool_cpu),
                "tool_us_per_msg": self.per_message(self.tool_cpu),
                "busiest_thread": self.busiest_thread.0,
                "busiest_thread_share": self.busiest_thread.1,
                "active_threads": self.active_threads,
                "broker_seconds": self.broker_cpu,
                "broker_cores": cores(self.broker_cpu),
                "broker_us_per_msg": self.per_message(self.broker_cpu),
                "machine_busy": self.machine_busy,
                "broker_peak_rss_kib": self.broker_peak_rss_kib,
                "broker_rss_kib": self.broker_rss_kib,
            },
            "memory": {
                "connections": self.memory.connections,
                "rss_before_connect_kib": self.memory.rss_before_connect_kib,
                "rss_connected_kib": self.memory.rss_connected_kib,
                "per_connection_kib": self.memory.per_connection_kib(),
                "rss_after_publish_kib": self.memory.rss_after_publish_kib,
                "rss_run_peak_kib": self.memory.rss_run_peak_kib,
            },
            "drain_phase": self.drain_phase.map(|d| {
                let per_msg = |x: f64| (self.received > 0).then(|| x / self.received as f64);
                json!({
                    "broker_seconds": d.broker_cpu,
                    "broker_us_per_msg": d.broker_cpu.and_then(|c| per_msg(c * 1e6)),
                    "rss_peak_kib": d.rss_peak_kib,
                    "rchar": d.io.map(|io| io.rchar),
                    "syscr": d.io.map(|io| io.syscr),
                    "read_bytes": d.io.map(|io| io.read_bytes),
                    "syscr_per_msg": d.io.and_then(|io| per_msg(io.syscr as f64)),
                    "rchar_per_syscr": d.io.and_then(|io| (io.syscr > 0).then(|| io.rchar as f64 / io.syscr as f64)),
                })
            }),
            "bottleneck": self.bottleneck,
            "errors": self.errors,
        })
    }

    pub fn print_text(&self) {
        let rate = |name: &str, r: Rate, n: u64, window: f64| {
            println!(
                "{name:<9} {:>12} msg/s median, {:>12} msg/s overall ({} in {:.2} s)",
                thousands(r.median),
                thousands(r.overall),
                thousands(n as f64),
                window
            )
        };
        println!("--- summary ---");
        rate("publish", self.publish, self.sent, self.publish_seconds);
        if let Some(seconds) = self.accepted_seconds {
            println!(
                "accepted  {:>12} msg/s: the broker had processed every publish {:.2} s after the start",
                thousands(self.sent as f64 / seconds.max(1e-9)),
                seconds
            );
        }
        if self.confirmed + self.nacked > 0 {
            rate(
                "confirm",
                self.confirm,
                self.confirmed,
                self.publish_seconds,
            );
        }
        rate("consume", self.consume, self.received, self.consume_seconds);
        if self.nacked > 0 {
            println!("nacked    {}", self.nacked);
        }
        println!(
            "latency   p50 {}  p95 {}  p99 {}  max {}  ({} samples)",
            duration(self.latency[0]),
            duration(self.latency[1]),
            duration(self.latency[2]),
            duration(self.latency[3]),
            self.latency_count
        );
        let lost = match self.lost {
            Some(n) => n.to_string(),
            None => format!(
                "unknown: not drained after {:.1} s ({} not received yet{})",
                self.drain_seconds,
                self.missing,
                self.queued_at_end
                    .map(|q| format!(", {q} ready in the queues, the rest in flight to consumers"))
                    .unwrap_or_default()
            ),
        };
        println!(
            "messages  lost {lost}  duplicated {}  misrouted {}  foreign {}  redelivered {}",
            self.duplicates, self.misrouted, self.foreign, self.redelivered
        );
        let cores = |cpu: f64| cpu / self.wall_seconds.max(1e-9);
        if let Some(cpu) = self.tool_cpu {
            println!(
                "tool CPU  {:.2} s = {:.2} cores over {:.1} s, {} per message; busiest thread \
                 {} at {:.0}% of a core; {} active threads",
                cpu,
                cores(cpu),
                self.wall_seconds,
                micros(self.per_message(Some(cpu))),
                self.busiest_thread.0,
                self.busiest_thread.1 * 100.0,
                self.active_threads
            );
        }
        if let Some(cpu) = self.broker_cpu {
            println!(
                "broker    CPU {:.2} s = {:.2} cores, {} per message; peak RSS {} MiB, RSS now {} MiB",
                cpu,
                cores(cpu),
                micros(self.per_message(Some(cpu))),
                self.broker_peak_rss_kib
                    .map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                self.broker_rss_kib
                    .map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            );
        }
        if let Some(per) = self.memory.per_connection_kib() {
            let mib =
                |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            println!(
                "memory    RSS {} MiB before connecting, {} MiB with {} connections ({per:.1} KiB \
                 each), {} MiB when publishing ended, {} MiB peak during the run",
                mib(self.memory.rss_before_connect_kib),
                mib(self.memory.rss_connected_kib),
                self.memory.connections,
                mib(self.memory.rss_after_publish_kib),
                mib(self.memory.rss_run_peak_kib),
            );
        }
        if let Some(busy) = self.machine_busy {
            println!(
                "machine   {:.0}% of {} cores busy (all processes)",
                busy * 100.0,
                self.cores
            );
        }
        println!("bottleneck {}", self.bottleneck);
        for e in &self.errors {
            println!("error     {e}");
        }
    }
}

fn micros(us: Option<f64>) -> String {
    us.map_or("?".into(), |u| format!("{u:.2} us"))
}

/// 1234567.8 -> "1,234,568".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ns -> "850 ns", "12.3 us", "4.56 ms", "1.23 s".
pub fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(duration(1_500), "1.5 us");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

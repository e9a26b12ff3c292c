//! What the run counts, shared by producers, consumers and the reporter: per-producer counters,
//! per-queue sequence tracking (loss, duplicates, misrouting) and latency histograms.
//!
//! Everything here is counters and short-held locks; no I/O and no waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::message::{self, Clock};

/// A log-linear histogram of u64 values (ns): exact below 128, then 64 buckets per power of two
/// (at most ~1.6% relative error). Fixed size, no allocation after construction.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize) * SUB as usize + 2 * SUB as usize;

fn bucket(value: u64) -> usize {
    if value < 2 * SUB {
        return value as usize;
    }
    let shift = 63 - value.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (value >> shift)) as usize
}

/// The middle of a bucket's range.
fn bucket_value(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let top = index - shift * SUB;
    let low = u128::from(top) << shift;
    let high = (u128::from(top + 1) << shift) - 1;
    ((low + high) / 2).min(u128::from(u64::MAX)) as u64
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_value(index).min(self.max);
            }
        }
        self.max
    }
}

/// Which sequences of one producer one queue has delivered.
#[derive(Debug, Default)]
pub struct Sequences {
    bits: Vec<u64>,
    pub distinct: u64,
    pub duplicates: u64,
}

impl Sequences {
    fn insert(&mut self, sequence: u64) {
        let word = (sequence / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let bit = 1u64 << (sequence % 64);
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
        } else {
            self.bits[word] |= bit;
            self.distinct += 1;
        }
    }

    /// How many of the sequences `0..below` were received.
    pub fn received_below(&self, below: u64) -> u64 {
        if below / 64 >= self.bits.len() as u64 {
            return self.distinct;
        }
        let full = (below / 64) as usize;
        let mut n: u64 = self.bits[..full]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = below % 64;
        if rest > 0 {
            n += u64::from((self.bits[full] & ((1u64 << rest) - 1)).count_ones());
        }
        n
    }
}

/// Per-queue tracking, one [`Sequences`] per producer.
#[derive(Debug)]
pub struct QueueTracker {
    pub producers: Vec<Sequences>,
    /// Deliveries from a producer whose messages this queue should not route.
    pub misrouted: u64,
}

#[derive(Debug, Default)]
pub struct ProducerCounters {
    /// Sequences handed out (the next sequence): any received sequence must be below it.
    pub stamped: AtomicU64,
    /// Messages written (lapin: the publish future resolved; raw: the write returned).
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    /// Clock time when the producer stopped publishing (0 while it runs).
    pub finished_at: AtomicU64,
    /// Clock time when the broker answered the producer's close (channel.close-ok for lapin,
    /// connection.close-ok for raw): it had processed every publish by then. 0 if it never did.
    pub accepted_at: AtomicU64,
}

/// Outcome of looking at one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Tracked,
    /// Not from this run: too short, unknown producer or sequence, or stamped before start.
    Foreign,
}

pub struct Shared {
    pub clock: Clock,
    pub producers: Vec<ProducerCounters>,
    pub received: AtomicU64,
    pub foreign: AtomicU64,
    pub redelivered: AtomicU64,
    /// Clock time of the latest delivery.
    pub last_receive: AtomicU64,
    /// Latency of the current second, one histogram per consumer (swapped by the reporter).
    pub latency: Vec<Mutex<Histogram>>,
    pub queues: Vec<Mutex<QueueTracker>>,
    pub errors: Mutex<Vec<String>>,
    /// Set by Ctrl-C or a fatal error: producers stop early.
    pub stop: AtomicBool,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(clock: Clock, producers: usize, consumers: usize, queues: usize) -> Shared {
        Shared {
            clock,
            producers: (0..producers)
                .map(|_| ProducerCounters::default())
                .collect(),
            received: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            last_receive: AtomicU64::new(0),
            latency: (0..consumers)
                .map(|_| Mutex::new(Histogram::default()))
                .collect(),
            queues: (0..queues)
                .map(|_| {
                    Mutex::new(QueueTracker {
                        producers: (0..producers).map(|_| Sequences::default()).collect(),
                        misrouted: 0,
                    })
                })
                .collect(),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// Accounts one delivery of `body` to `consumer` from queue `queue`; `routed` says whether
    /// the queue should see each producer's messages.
    pub fn on_delivery(
        &self,
        consumer: usize,
        queue: usize,
        body: &[u8],
        redelivered: bool,
        routed: &[bool],
    ) -> Received {
        let now = self.clock.now();
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_receive.fetch_max(now, Ordering::Relaxed);
        if redelivered {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let Some(stamp) = message::read(body) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Received::Foreign;
        };
        let known = self.producers.get(stamp.producer).is_some_and(|p| {
            stamp.sequence < p.stamped.load(Ordering::Acquire)
                && stamp.sent_at >= self.clock.origin()
                && stamp.sent_at <= now
        });
        if !known {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Received::Foreign;
        }
        {
            let mut tracker = lock(&self.queues[queue]);
            if !routed.get(stamp.producer).copied().unwrap_or(false) {
                tracker.misrouted += 1;
            }
            tracker.producers[stamp.producer].insert(stamp.sequence);
        }
        lock(&self.latency[consumer]).record(now - stamp.sent_at);
        Received::Tracked
    }

    pub fn sent(&self) -> u64 {
        self.sum(|p| &p.sent)
    }

    pub fn confirmed(&self) -> u64 {
        self.sum(|p| &p.confirmed)
    }

    pub fn nacked(&self) -> u64 {
        self.sum(|p| &p.nacked)
    }

    fn sum(&self, field: impl Fn(&ProducerCounters) -> &AtomicU64) -> u64 {
        self.producers
            .iter()
            .map(|p| field(p).load(Ordering::Relaxed))
            .sum()
    }

    /// Takes the latency recorded since the last call, merged over consumers.
    pub fn take_latency(&self) -> Histogram {
        let mut merged = Histogram::default();
        for h in &self.latency {
            let mut h = lock(h);
            merged.merge(&h);
            h.clear();
        }
        merged
    }

    /// Messages still expected: for each consumed queue and producer it routes, sent sequences
    /// the queue has not delivered yet.
    pub fn missing(&self, expected: &[Vec<bool>]) -> u64 {
        let mut missing = 0;
        for (q, routes) in expected.iter().enumerate() {
            let tracker = lock(&self.queues[q]);
            for (p, &routed) in routes.iter().enumerate() {
                if routed {
                    let sent = self.producers[p].sent.load(Ordering::Acquire);
                    missing += sent - tracker.producers[p].received_below(sent).min(sent);
                }
            }
        }
        missing
    }

    /// (duplicates, misrouted) over all queues.
    pub fn duplicates_and_misrouted(&self) -> (u64, u64) {
        let mut duplicates = 0;
        let mut misrouted = 0;
        for q in &self.queues {
            let tracker = lock(q);
            misrouted += tracker.misrouted;
            duplicates += tracker.producers.iter().map(|s| s.duplicates).sum::<u64>();
        }
        (duplicates, misrouted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, u64::MAX] {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let back = bucket_value(b);
            let err = back.abs_diff(v) as f64 / (v.max(1)) as f64;
            assert!(err < 0.02, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02);
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn sequences_count_duplicates_and_prefixes() {
        let mut s = Sequences::default();
        for q in [0, 1, 2, 70, 2] {
            s.insert(q);
        }
        assert_eq!((s.distinct, s.duplicates), (4, 1));
        assert_eq!(s.received_below(3), 3);
        assert_eq!(s.received_below(70), 3);
        assert_eq!(s.received_below(71), 4);
        assert_eq!(s.received_below(100_000), 4);
    }
}

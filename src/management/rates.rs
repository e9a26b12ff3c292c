//! Message rates, as RabbitMQ's management shows them (`*_details.rate`, messages per second):
//! a task samples the node's counters (the registry's sums) and queues' totals every
//! [`SAMPLE_INTERVAL`], and the rate is the change since the previous sample. Nothing on the
//! message path knows of it.
//!
//! Only queues that may have moved are sampled: those their vhost listed since the last sample
//! (see [`crate::broker::activity`]: a publish, a stored delivery or a settle, a consumer that
//! subscribed, a `basic.get`, a deletion), and those the last sample found moving or with
//! consumers (a consumer's deliveries of messages held in memory are not listed). A queue that
//! was not sampled did not move: its rates are zero and its last sample stands, so 100,000 idle
//! queues cost a sample nothing. A sample costs one short lock per queue it reads.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::broker::queue::{Queue, QueueStats};
use crate::broker::Broker;
use crate::server::registry::{Counts, Registry};

/// How often rates are sampled (RabbitMQ's default `sample_retention` granularity is 5 s).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The node's rates, per second, in the order of [`Counts`]' fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeRates {
    pub received: f64,
    pub routed: f64,
    pub delivered: f64,
    pub redelivered: f64,
    pub acknowledged: f64,
    pub confirmed: f64,
}

/// A queue's rates per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueRates {
    pub publish: f64,
    pub deliver_get: f64,
}

#[derive(Debug, Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    node: Option<(Instant, Counts)>,
    node_rates: NodeRates,
    /// When the last sample was taken.
    last: Option<Instant>,
    /// A queue (by its address: its sample's weak reference keeps the address from being
    /// reused) → its last sample.
    queues: HashMap<usize, QueueSample>,
    /// Queues sampled next time whether listed or not: those that moved or have consumers.
    followed: Vec<Weak<Queue>>,
    /// Dead queues are swept out of `queues` when it grows past this.
    sweep_at: usize,
}

#[derive(Debug)]
struct QueueSample {
    queue: Weak<Queue>,
    published: u64,
    delivered: u64,
    rates: QueueRates,
    /// Since when its totals have not moved.
    unchanged_since: SystemTime,
}

/// The address a queue's sample is kept under.
fn key(queue: *const Queue) -> usize {
    queue as usize
}

fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
    match seconds > 0.0 {
        true => now.saturating_sub(before) as f64 / seconds,
        false => 0.0,
    }
}

impl Rates {
    /// Takes a sample now; how many queues it read.
    pub fn sample(&self, registry: &Registry, broker: &Broker) -> usize {
        let now = Instant::now();
        let counts = registry.totals();
        let mut queues: Vec<Weak<Queue>> = Vec::new();
        for vhost in broker.vhost_names().iter().filter_map(|n| broker.vhost(n)) {
            let activity = vhost.activity();
            if activity.start_sampling() {
                queues.extend(vhost.queues().iter().map(Arc::downgrade));
            }
            queues.append(&mut activity.take_sampling());
        }
        queues.append(&mut std::mem::take(&mut self.inner.lock().followed));
        queues.sort_unstable_by_key(Weak::as_ptr);
        queues.dedup_by(|a, b| Weak::ptr_eq(a, b));
        // Read with no lock of ours held (each read locks its queue).
        let read: Vec<(Weak<Queue>, Option<QueueStats>)> = queues
            .into_iter()
            .map(|queue| {
                let stats = queue.upgrade().map(|q| q.stats());
                (queue, stats)
            })
            .collect();
        let sampled = read.len();
        let mut inner = self.inner.lock();
        if let Some((then, before)) = inner.node {
            let s = now.duration_since(then).as_secs_f64();
            inner.node_rates = NodeRates {
                received: per_second(counts.received, before.received, s),
                routed: per_second(counts.routed, before.routed, s),
                delivered: per_second(counts.delivered, before.delivered, s),
                redelivered: per_second(counts.redelivered, before.redelivered, s),
                acknowledged: per_second(counts.acknowledged, before.acknowledged, s),
                confirmed: per_second(counts.confirmed, before.confirmed, s),
            };
        }
        inner.node = Some((now, counts));
        // A queue not sampled last time had not moved since its own last sample: its change is
        // over the time since the last sample, whenever its own was taken.
        let seconds = inner
            .last
            .map_or(0.0, |last| now.duration_since(last).as_secs_f64());
        inner.last = Some(now);
        let wall = SystemTime::now();
        for (queue, stats) in read {
            inner.update(queue, stats, seconds, wall);
        }
        inner.sweep();
        sampled
    }

    pub fn node(&self) -> NodeRates {
        self.inner.lock().node_rates
    }

    pub fn queue(&self, queue: &Queue) -> QueueRates {
        let inner = self.inner.lock();
        inner
            .queues
            .get(&key(queue))
            .map(|sample| sample.rates)
            .unwrap_or_default()
    }

    /// RabbitMQ's `idle_since`: when a queue that took and gave nothing over the last sample
    /// last did (`None` while it is busy, or not yet sampled).
    pub fn idle_since(&self, queue: &Queue) -> Option<String> {
        let inner = self.inner.lock();
        let sample = inner.queues.get(&key(queue))?;
        let idle = sample.rates.publish == 0.0 && sample.rates.deliver_get == 0.0;
        idle.then(|| super::reply::timestamp(sample.unchanged_since))
    }
}

impl Inner {
    /// Takes one queue's figures (`None`: it is gone) into its sample; follows it next time if
    /// it moved or has consumers.
    fn update(
        &mut self,
        queue: Weak<Queue>,
        stats: Option<QueueStats>,
        seconds: f64,
        wall: SystemTime,
    ) {
        let key = key(queue.as_ptr());
        let Some(stats) = stats else {
            self.queues.remove(&key);
            return;
        };
        let (published, delivered) = (stats.published, stats.delivered);
        let (rates, unchanged_since, moved) = match self.queues.get(&key) {
            Some(before) => {
                let moved = (published, delivered) != (before.published, before.delivered);
                let rates = QueueRates {
                    publish: per_second(published, before.published, seconds),
                    deliver_get: per_second(delivered, before.delivered, seconds),
                };
                (
                    rates,
                    if moved { wall } else { before.unchanged_since },
                    moved,
                )
            }
            None => (QueueRates::default(), wall, false),
        };
        if moved || stats.consumers > 0 {
            self.followed.push(queue.clone());
        }
        let sample = QueueSample {
            queue,
            published,
            delivered,
            rates,
            unchanged_since,
        };
        self.queues.insert(key, sample);
    }

    /// Forgets the samples of queues gone without being sampled again (deleted while a
    /// reference to them was still held elsewhere), once their number could be large.
    fn sweep(&mut self) {
        if self.queues.len() <= self.sweep_at {
            return;
        }
        self.queues
            .retain(|_, sample| sample.queue.strong_count() > 0);
        self.sweep_at = 2 * self.queues.len() + 1024;
    }
}

/// Samples every `interval`, for ever (the caller aborts the task).
pub async fn run(state: Arc<super::Management>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let state = Arc::clone(&state);
        // Blocking: one lock per queue, for many queues.
        let _ =
            tokio::task::spawn_blocking(move || state.rates.sample(&state.registry, &state.broker))
                .await;
    }
}

#[cfg(test)]
mod tests;

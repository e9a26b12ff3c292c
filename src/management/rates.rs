//! Message rates, as RabbitMQ's management shows them (`*_details.rate`, messages per second):
//! a task samples the node's counters (the registry's sums) and every queue's totals every
//! [`SAMPLE_INTERVAL`], and the rate is the change since the previous sample. Nothing on the
//! message path knows of it; a sample costs one short lock per queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

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
    /// (vhost, queue) → its last sample.
    queues: HashMap<(String, String), QueueSample>,
}

#[derive(Debug, Clone, Copy)]
struct QueueSample {
    at: Instant,
    published: u64,
    delivered: u64,
    rates: QueueRates,
    /// Since when its totals have not moved.
    unchanged_since: SystemTime,
}

fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
    match seconds > 0.0 {
        true => now.saturating_sub(before) as f64 / seconds,
        false => 0.0,
    }
}

impl Rates {
    /// Takes a sample now.
    pub fn sample(&self, registry: &Registry, broker: &Broker) {
        let now = Instant::now();
        let counts = registry.totals();
        let mut queues = HashMap::new();
        for vhost in broker.vhost_names() {
            let Some(handle) = broker.vhost(&vhost) else {
                continue;
            };
            for queue in handle.queues() {
                let stats = queue.stats();
                queues.insert(
                    (vhost.clone(), queue.name.to_string()),
                    (stats.published, stats.delivered),
                );
            }
        }
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
        let previous = std::mem::take(&mut inner.queues);
        let wall = SystemTime::now();
        inner.queues = queues
            .into_iter()
            .map(|(key, (published, delivered))| {
                let sample = match previous.get(&key) {
                    Some(before) => {
                        let s = now.duration_since(before.at).as_secs_f64();
                        let moved = (published, delivered) != (before.published, before.delivered);
                        QueueSample {
                            at: now,
                            published,
                            delivered,
                            rates: QueueRates {
                                publish: per_second(published, before.published, s),
                                deliver_get: per_second(delivered, before.delivered, s),
                            },
                            unchanged_since: if moved { wall } else { before.unchanged_since },
                        }
                    }
                    None => QueueSample {
                        at: now,
                        published,
                        delivered,
                        rates: QueueRates::default(),
                        unchanged_since: wall,
                    },
                };
                (key, sample)
            })
            .collect();
    }

    pub fn node(&self) -> NodeRates {
        self.inner.lock().node_rates
    }

    pub fn queue(&self, vhost: &str, name: &str) -> QueueRates {
        let inner = self.inner.lock();
        inner
            .queues
            .get(&(vhost.to_owned(), name.to_owned()))
            .map(|sample| sample.rates)
            .unwrap_or_default()
    }

    /// RabbitMQ's `idle_since`: when a queue that took and gave nothing over the last sample
    /// last did (`None` while it is busy, or not yet sampled).
    pub fn idle_since(&self, vhost: &str, name: &str) -> Option<String> {
        let inner = self.inner.lock();
        let sample = inner.queues.get(&(vhost.to_owned(), name.to_owned()))?;
        let idle = sample.rates.publish == 0.0 && sample.rates.deliver_get == 0.0;
        idle.then(|| super::reply::timestamp(sample.unchanged_since))
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

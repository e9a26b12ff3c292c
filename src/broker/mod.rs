//! The routing core: virtual hosts, exchanges, bindings, queues and consumers.
//!
//! Nothing here touches a socket. Connection tasks call in (declare, bind, publish, consume, ack);
//! queues hand deliveries to consumers through each connection's [`queue::Sink`].
//! Ownership: a [`vhost::Vhost`] owns its topology (exchanges with their bindings, the queue
//! map) behind one read-write lock; each [`queue::Queue`] owns its messages and consumers behind
//! its own mutex; the channel that received a delivery owns it until it is settled.

pub mod arguments;
pub mod definition;
pub mod exchange;
pub mod flow;
pub mod headers;
pub mod message;
pub mod queue;
pub mod record;
pub mod storage;
pub mod topic;
pub mod values;
pub mod vhost;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use vhost::Vhost;

/// The hash maps of the routing path (exchanges, queues, direct and topic bindings): foldhash,
/// seeded per process, instead of SipHash, which cost ~200 instructions per publish.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// All virtual hosts.
#[derive(Debug)]
pub struct Broker {
    vhosts: HashMap<String, Arc<Vhost>>,
}

impl Broker {
    /// Opens every vhost on `store`, recovering what it holds.
    pub fn open(vhosts: &[String], store: &Arc<crate::store::Store>) -> std::io::Result<Broker> {
        let mut map = HashMap::new();
        for name in vhosts {
            map.insert(
                name.clone(),
                Arc::new(Vhost::open(name, Arc::clone(store))?),
            );
        }
        Ok(Broker { vhosts: map })
    }

    /// A broker with nothing durable (for tests of the model).
    pub fn new(vhosts: &[String]) -> Broker {
        Broker {
            vhosts: vhosts
                .iter()
                .map(|name| (name.clone(), Arc::new(Vhost::new(name))))
                .collect(),
        }
    }

    pub fn vhost(&self, name: &str) -> Option<&Arc<Vhost>> {
        self.vhosts.get(name)
    }

    /// Starts the broker's background work: every `tick`, each vhost's periodic work (expired
    /// messages dropped or dead-lettered, unused queues past `x-expires` deleted: see
    /// [`Vhost::expire_unused`]); every `compaction`, log compaction. The tasks stop when the
    /// returned [`Background`] is dropped.
    pub fn start_background(
        &self,
        tick: std::time::Duration,
        compaction: std::time::Duration,
    ) -> Background {
        Background(vec![
            self.spawn_ticks(tick),
            self.spawn_compaction(compaction),
        ])
    }

    fn spawn_ticks(&self, interval: std::time::Duration) -> JoinHandle<()> {
        let vhosts: Vec<Arc<Vhost>> = self.vhosts.values().cloned().collect();
        tokio::spawn(async move {
            let mut ticker = ticker(interval);
            loop {
                ticker.tick().await;
                let now = std::time::Instant::now();
                for vhost in &vhosts {
                    vhost.expire_unused(now);
                }
            }
        })
    }

    /// Runs log compaction over every queue every `interval`, on the blocking pool (a
    /// compaction syncs files and punches holes for tens of milliseconds, holding its queue's
    /// lock only for two bookkeeping steps of microseconds).
    fn spawn_compaction(&self, interval: std::time::Duration) -> JoinHandle<()> {
        let vhosts: Vec<Arc<Vhost>> = self.vhosts.values().cloned().collect();
        tokio::spawn(async move {
            let mut ticker = ticker(interval);
            loop {
                ticker.tick().await;
                let vhosts = vhosts.clone();
                let freed = tokio::task::spawn_blocking(move || {
                    let mut freed = 0;
                    for queue in vhosts.iter().flat_map(|vhost| vhost.queues()) {
                        match queue.compact() {
                            Ok(bytes) => freed += bytes,
                            Err(e) => {
                                tracing::warn!(queue = %queue.name, error = %e, "log compaction failed")
                            }
                        }
                    }
                    freed
                })
                .await
                .unwrap_or(0);
                if freed > 0 {
                    tracing::debug!(freed_bytes = freed, "log compaction");
                }
            }
        })
    }
}

/// The broker's background tasks, owned by whoever started them (the server, for as long as it
/// runs): dropping this stops them.
#[derive(Debug)]
pub struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A periodic timer for background work: a late tick is delayed, never made up in a burst.
fn ticker(interval: std::time::Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

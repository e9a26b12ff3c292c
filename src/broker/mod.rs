//! The routing core: virtual hosts, exchanges, bindings, queues and consumers.
//!
//! Nothing here touches a socket. Connection tasks call in (declare, bind, publish, consume, ack);
//! queues hand deliveries to consumers through each connection's [`queue::Sink`].
//! Ownership: a [`vhost::Vhost`] owns its topology (exchanges with their bindings, the queue
//! map) behind one read-write lock; each [`queue::Queue`] owns its messages and consumers behind
//! its own mutex; the channel that received a delivery owns it until it is settled.

pub mod activity;
pub mod arguments;
mod clustered;
pub use clustered::AccountSink;
pub mod deadlines;
pub mod dedup;
pub mod definition;
pub mod delays;
pub mod exchange;
pub mod flow;
pub mod headers;
pub mod message;
pub mod queue;
pub mod quorum;
pub mod record;
pub mod storage;
pub mod stream;
pub mod topic;
pub mod values;
pub mod vhost;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::task::JoinHandle;

use vhost::Vhost;

/// The hash maps of the routing path (exchanges, queues, direct and topic bindings): foldhash,
/// seeded per process, instead of SipHash, which cost ~200 instructions per publish.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// All virtual hosts, by name: a map behind a short lock (read when a connection opens a vhost,
/// written when a reload adds or removes one), shared with the background tasks.
#[derive(Debug)]
pub struct Broker {
    vhosts: Arc<RwLock<HashMap<String, Arc<Vhost>>>>,
    /// Where durable vhosts live (`None`: nothing is durable).
    store: Option<Arc<crate::store::Store>>,
    /// The cluster this node joined, if any (see `clustered.rs`).
    cluster: std::sync::OnceLock<Arc<quorum::Node>>,
    /// One vhost created or deleted at a time: two openings of one vhost's directory (the
    /// management API's and the cluster's), or an opening during a deletion's removal of it,
    /// would trip over each other's files.
    vhost_changes: parking_lot::Mutex<()>,
    /// The metadata group's events, until the broker follows them.
    cluster_events:
        parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<quorum::meta::Event>>>,
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
        Ok(Broker {
            vhosts: Arc::new(RwLock::new(map)),
            store: Some(Arc::clone(store)),
            cluster: std::sync::OnceLock::new(),
            vhost_changes: Default::default(),
            cluster_events: Default::default(),
        })
    }

    /// A broker with nothing durable (for tests of the model).
    pub fn new(vhosts: &[String]) -> Broker {
        let map = vhosts
            .iter()
            .map(|name| (name.clone(), Arc::new(Vhost::new(name))))
            .collect();
        Broker {
            vhosts: Arc::new(RwLock::new(map)),
            store: None,
            cluster: std::sync::OnceLock::new(),
            vhost_changes: Default::default(),
            cluster_events: Default::default(),
        }
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// The names of every vhost.
    pub fn vhost_names(&self) -> Vec<String> {
        self.vhosts.read().keys().cloned().collect()
    }

    /// Adds a vhost (recovering what the store holds for it, if anything); the existing one if
    /// there is one by that name.
    pub fn add_vhost(&self, name: &str) -> std::io::Result<Arc<Vhost>> {
        let _one_at_a_time = self.vhost_changes.lock();
        if let Some(vhost) = self.vhost(name) {
            return Ok(vhost);
        }
        let vhost = Arc::new(match &self.store {
            Some(store) => Vhost::open(name, Arc::clone(store))?,
            None => Vhost::new(name),
        });
        if let Some(node) = self.cluster.get() {
            vhost.set_cluster(Arc::clone(node));
        }
        let mut vhosts = self.vhosts.write();
        Ok(Arc::clone(vhosts.entry(name.to_owned()).or_insert(vhost)))
    }

    /// Removes a vhost and deletes everything in it: its queues (their consumers cancelled,
    /// their messages and logs gone) and its durable definitions. New connections can no longer
    /// open it; those that have it open are the caller's to close.
    pub fn remove_vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        let _one_at_a_time = self.vhost_changes.lock();
        let vhost = self.vhosts.write().remove(name)?;
        vhost.delete_everything();
        // Its lists hold its deleted queues' watches, which hold the lists.
        vhost.activity().clear();
        Some(vhost)
    }

    /// Every vhost, at this moment.
    fn all(vhosts: &RwLock<HashMap<String, Arc<Vhost>>>) -> Vec<Arc<Vhost>> {
        vhosts.read().values().cloned().collect()
    }

    /// Starts the broker's background work: every `tick`, each vhost's periodic work for the
    /// queues whose deadline came (expired messages dropped or dead-lettered, unused queues past
    /// `x-expires` deleted: see [`Vhost::expire_due`]); every `compaction`, log compaction; and the
    /// thread that fires delayed messages when they are due (`delays`). The tasks stop when the
    /// returned [`Background`] is dropped.
    pub fn start_background(
        &self,
        tick: std::time::Duration,
        compaction: std::time::Duration,
    ) -> Background {
        let vhosts = Arc::clone(&self.vhosts);
        let mut scratch = vhost::PublishScratch::default();
        let pass = move |now| {
            let all = Broker::all(&vhosts);
            let next = all.iter().map(|v| v.fire_delayed(now, &mut scratch));
            next.min().unwrap_or(u64::MAX)
        };
        let delays = delays::Scheduler::start(pass)
            .map_err(|e| tracing::error!(error = %e, "cannot start the delayed-message thread"))
            .ok();
        Background {
            tasks: vec![self.spawn_ticks(tick), self.spawn_compaction(compaction)],
            _delays: delays,
        }
    }

    fn spawn_ticks(&self, interval: std::time::Duration) -> JoinHandle<()> {
        let vhosts = Arc::clone(&self.vhosts);
        tokio::spawn(async move {
            let mut ticker = ticker(interval);
            loop {
                ticker.tick().await;
                for vhost in &Broker::all(&vhosts) {
                    vhost.expire_due();
                }
            }
        })
    }

    /// Runs log compaction over every vhost's definitions log and the queues that changed since
    /// the last pass (their storage listed them, see [`activity`]) every `interval`, on the
    /// blocking pool (a compaction syncs files and punches holes for tens of milliseconds,
    /// holding its queue's lock only for two bookkeeping steps of microseconds). An idle queue
    /// is not visited.
    fn spawn_compaction(&self, interval: std::time::Duration) -> JoinHandle<()> {
        let vhosts = Arc::clone(&self.vhosts);
        tokio::spawn(async move {
            let mut ticker = ticker(interval);
            loop {
                ticker.tick().await;
                let vhosts = Broker::all(&vhosts);
                let freed = tokio::task::spawn_blocking(move || {
                    let mut freed = 0;
                    for vhost in vhosts.iter() {
                        freed += vhost.compact_definitions();
                    }
                    let listed = vhosts.iter().flat_map(|v| v.activity().take_compaction());
                    for queue in listed {
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
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
    /// The thread that fires delayed messages (stopped when dropped).
    _delays: Option<delays::Scheduler>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
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

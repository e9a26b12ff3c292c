//! Every open connection, for the management API and metrics: its identity (peer, user, vhost,
//! client), its channels and its message counters.
//!
//! A connection task registers itself when it starts ([`Registry::register`]) and is removed
//! when the returned guard drops. The task counts messages in plain integers of its own
//! ([`Counts`]) and stores them into its entry's atomics once per flush (one relaxed store per
//! counter per batch, nothing per message); a scrape sums the entries plus what closed
//! connections had counted. The registry never reaches into a connection: closing one from the
//! API goes through the entry's close request, which the task itself waits for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Message counts of one connection (or, summed, of the node): RabbitMQ's global counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages published by clients (`received`).
    pub received: u64,
    /// Published messages that reached at least one queue (`routed`).
    pub routed: u64,
    /// Deliveries to consumers and `basic.get` (`delivered`).
    pub delivered: u64,
    /// Deliveries that were redeliveries (`redelivered`).
    pub redelivered: u64,
    /// Deliveries acknowledged by clients (`acknowledged`).
    pub acknowledged: u64,
    /// Publisher confirms sent (`confirmed`).
    pub confirmed: u64,
}

#[derive(Debug, Default)]
struct SharedCounts([AtomicU64; 6]);

impl Counts {
    fn values(&self) -> [u64; 6] {
        [
            self.received,
            self.routed,
            self.delivered,
            self.redelivered,
            self.acknowledged,
            self.confirmed,
        ]
    }
}

impl SharedCounts {
    #[inline]
    fn store(&self, counts: &Counts) {
        for (slot, value) in self.0.iter().zip(counts.values()) {
            slot.store(value, Relaxed);
        }
    }

    fn add(&self, counts: &Counts) {
        for (slot, value) in self.0.iter().zip(counts.values()) {
            slot.fetch_add(value, Relaxed);
        }
    }

    fn load(&self) -> Counts {
        let [received, routed, delivered, redelivered, acknowledged, confirmed] =
            std::array::from_fn(|i| self.0[i].load(Relaxed));
        Counts {
            received,
            routed,
            delivered,
            redelivered,
            acknowledged,
            confirmed,
        }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.received += other.received;
        self.routed += other.routed;
        self.delivered += other.delivered;
        self.redelivered += other.redelivered;
        self.acknowledged += other.acknowledged;
        self.confirmed += other.confirmed;
    }
}

/// What a connection told at `start-ok` and `open`.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    pub user: String,
    pub vhost: String,
    /// `client_properties`: product, version, platform, connection_name (as text).
    pub client: Vec<(String, String)>,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// One channel, as the management API shows it (as of the connection's last change to it;
/// its unacked count is read live from its credit).
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub number: u16,
    pub confirm: bool,
    pub transactional: bool,
    pub prefetch: u32,
    pub global_prefetch: u32,
    pub consumers: u32,
    pub credit: Arc<crate::broker::queue::ChannelCredit>,
    /// Publishes waiting for their confirm (confirm mode only).
    pub unconfirmed: Option<Arc<AtomicU32>>,
}

/// One connection's entry.
#[derive(Debug)]
pub struct ConnectionEntry {
    pub id: u64,
    pub peer: SocketAddr,
    /// The listener's address it came to.
    pub local: SocketAddr,
    pub tls: bool,
    pub connected_at: SystemTime,
    opened: Mutex<Option<Opened>>,
    /// Its channels, as of its last flush that changed them.
    channels: Mutex<Vec<ChannelInfo>>,
    channel_count: AtomicU32,
    counts: SharedCounts,
    /// Set by the API to close the connection with this reason (320 CONNECTION_FORCED).
    close_reason: Mutex<Option<String>>,
    /// Wakes the connection task when `close_reason` is set (a `Notify`, not a `watch`: a
    /// watch's shared state is ten times the size, and there is only ever one waiter).
    close: Notify,
}

impl ConnectionEntry {
    /// The connection finished its handshake.
    pub fn opened(&self, opened: Opened) {
        *self.opened.lock() = Some(opened);
    }

    /// What it told at its handshake; `None` while it is in it.
    pub fn login(&self) -> Option<Opened> {
        self.opened.lock().clone()
    }

    /// Its counters now (as of its last flush).
    pub fn counts(&self) -> Counts {
        self.counts.load()
    }

    /// Stores the connection's counters (called by its task, once per flush).
    #[inline]
    pub fn publish_counts(&self, counts: &Counts) {
        self.counts.store(counts);
    }

    /// Replaces its channel list (called by its task when channels change).
    pub fn set_channels(&self, channels: Vec<ChannelInfo>) {
        self.channel_count
            .store(u32::try_from(channels.len()).unwrap_or(u32::MAX), Relaxed);
        *self.channels.lock() = channels;
    }

    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels.lock().clone()
    }

    pub fn channel_count(&self) -> u32 {
        self.channel_count.load(Relaxed)
    }

    /// Asks the connection to close with `reason`.
    pub fn close(&self, reason: String) {
        *self.close_reason.lock() = Some(reason);
        // A permit is kept if the task is not waiting now: the request is not lost.
        self.close.notify_one();
    }

    /// Resolves when the API asks the connection to close (see [`ConnectionEntry::close`]).
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// The reason the API gave for closing the connection, if it asked.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().clone()
    }
}

/// Every open connection, and the counts of those that closed.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<HashMap<u64, Arc<ConnectionEntry>>>,
    closed: SharedCounts,
}

/// Removes its connection from the registry when dropped (keeping its counts in the totals).
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    pub entry: Arc<ConnectionEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.connections.lock().remove(&self.entry.id);
        self.registry.closed.add(&self.entry.counts());
    }
}

impl Registry {
    /// Registers a connection that just started.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        (peer, local): (SocketAddr, SocketAddr),
        tls: bool,
    ) -> Registered {
        let entry = Arc::new(ConnectionEntry {
            id,
            peer,
            local,
            tls,
            connected_at: SystemTime::now(),
            opened: Mutex::new(None),
            channels: Mutex::new(Vec::new()),
            channel_count: AtomicU32::new(0),
            counts: SharedCounts::default(),
            close_reason: Mutex::new(None),
            close: Notify::new(),
        });
        self.connections.lock().insert(id, Arc::clone(&entry));
        Registered {
            registry: Arc::clone(self),
            entry,
        }
    }

    /// Every connection now, in the order they came.
    pub fn connections(&self) -> Vec<Arc<ConnectionEntry>> {
        let mut all: Vec<_> = self.connections.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn connection(&self, id: u64) -> Option<Arc<ConnectionEntry>> {
        self.connections.lock().get(&id).cloned()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.lock().len()
    }

    /// The node's counters: every open connection's plus the closed ones'.
    pub fn totals(&self) -> Counts {
        let mut totals = self.closed.load();
        for entry in self.connections.lock().values() {
            totals += entry.counts();
        }
        totals
    }
}

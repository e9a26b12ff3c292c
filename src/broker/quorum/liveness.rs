//! [`Liveness`]: when this node last heard from each of its peers. The node pings every peer
//! once a second over the cluster port (`node.rs`); a quorum queue's leader asks how long a node
//! has been silent before it gives that node's consumers' messages to others (`queue.rs`).
//!
//! Owns the table of last answers; never sends anything itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cluster::NodeId;

/// How long a node may be silent before its consumers count as gone (RabbitMQ waits for its
/// `net_ticktime`, 60 s by default; a queue here gives their messages to others sooner).
pub const DOWN_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            started: Instant::now(),
            heard: Mutex::new(HashMap::new()),
        }
    }

    pub fn heard(&self, node: NodeId) {
        self.heard.lock().insert(node, Instant::now());
    }

    /// How long `node` has been silent (since this node started, if it never answered).
    pub fn silent_for(&self, node: NodeId) -> Duration {
        let since = self.heard.lock().get(&node).copied();
        since.unwrap_or(self.started).elapsed()
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

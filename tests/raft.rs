//! Raft groups (src/cluster, issue 22): three nodes in one process on loopback ports, a counter
//! machine. Election, replication, failover, restart from the directory (by log and by snapshot),
//! the not-leader answer, and a minority that cannot commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use warren::cluster::raft::Role;
use warren::cluster::{
    GroupConfig, GroupId, Machine, NodeId, RaftGroup, Timing, Transport, WriteError,
};

/// Counters by name; `restores` counts snapshots installed (it is not part of the state).
#[derive(Default)]
struct Counters {
    values: BTreeMap<String, u64>,
    restores: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Command {
    Add(String, u64),
}

impl Machine for Counters {
    type Command = Command;
    type Response = u64;

    fn apply(&mut self, Command::Add(name, n): &Command) -> u64 {
        let value = self.values.entry(name.clone()).or_default();
        *value += n;
        *value
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.values).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.values = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        self.restores += 1;
        Ok(())
    }
}

struct Node {
    transport: Transport,
    group: RaftGroup<Counters>,
}

/// Three nodes of one group, each with its own port and directory.
struct Cluster {
    root: PathBuf,
    addrs: BTreeMap<NodeId, String>,
    nodes: BTreeMap<NodeId, Node>,
    timing: Timing,
}

impl Cluster {
    async fn start(name: &str, timing: Timing) -> Cluster {
        let root = std::env::temp_dir().join(format!("warren-raft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut transports = BTreeMap::new();
        for id in 1..=3 {
            transports.insert(id, Transport::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs = transports
            .iter()
            .map(|(id, t)| (*id, t.local_addr().to_string()))
            .collect();
        let mut cluster = Cluster {
            root,
            addrs,
            nodes: BTreeMap::new(),
            timing,
        };
        for (id, transport) in transports {
            cluster.start_group(id, transport).await;
        }
        for node in cluster.nodes.values() {
            node.group.initialize().await.unwrap();
        }
        cluster
    }

    async fn start_group(&mut self, id: NodeId, transport: Transport) {
        let config = GroupConfig {
            node: id,
            group: GroupId::new("counters").unwrap(),
            dir: self.root.join(format!("node{id}")),
            peers: self.addrs.clone(),
            timing: self.timing.clone(),
        };
        let group = RaftGroup::start(config, Counters::default(), &transport)
            .await
            .unwrap();
        self.nodes.insert(id, Node { transport, group });
    }

    /// Stops a node as a crash would look to its peers: port closed, group gone.
    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.transport.shutdown();
        node.group.shutdown().await;
    }

    /// Starts a stopped node again from its directory, on its port.
    async fn restart(&mut self, id: NodeId) {
        let addr = self.addrs[&id].clone();
        let transport = eventually("the port to be free", || async {
            Transport::bind(addr.as_str()).await.ok()
        })
        .await;
        self.start_group(id, transport).await;
        self.nodes[&id].group.initialize().await.unwrap();
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> NodeId {
        eventually("one leader", || async {
            let leaders: Vec<_> = self
                .nodes
                .values()
                .map(|n| n.group.status().leader)
                .collect();
            let leader = leaders[0]?;
            let agreed = leaders.iter().all(|l| *l == Some(leader));
            (agreed && self.nodes.get(&leader)?.group.status().role == Role::Leader)
                .then_some(leader)
        })
        .await
    }

    fn value(&self, id: NodeId) -> u64 {
        self.nodes[&id]
            .group
            .read(|c| c.values.get("n").copied().unwrap_or(0))
    }

    async fn add(&self, id: NodeId, n: u64) -> Result<u64, WriteError> {
        self.nodes[&id]
            .group
            .write(Command::Add("n".into(), n))
            .await
    }

    async fn all_read(&self, want: u64) {
        eventually(&format!("every node to read {want}"), || async {
            self.nodes
                .keys()
                .all(|id| self.value(*id) == want)
                .then_some(())
        })
        .await
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn fast() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election: (Duration::from_millis(300), Duration::from_millis(600)),
        write_timeout: Duration::from_secs(2),
        ..Timing::default()
    }
}

/// Polls `check` until it gives a value; panics after 5 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_and_its_writes_reach_every_node() {
    let cluster = Cluster::start("replicate", fast()).await;
    let leader = cluster.leader().await;
    for i in 1..=10 {
        assert_eq!(cluster.add(leader, 1).await.unwrap(), i);
    }
    cluster.all_read(10).await;
    let status = cluster.nodes[&leader].group.status();
    assert_eq!((status.role, status.leader), (Role::Leader, Some(leader)));
    assert!(
        status.last_applied >= Some(10) && status.term >= 1,
        "{status:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_a_write_to_the_leader() {
    let cluster = Cluster::start("follower", fast()).await;
    let leader = cluster.leader().await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    assert_eq!(
        cluster.nodes[&follower].group.leader(),
        Some((leader, cluster.addrs[&leader].clone()))
    );
    // Written through the follower: the leader commits it and the answer comes back.
    assert_eq!(cluster.add(follower, 5).await.unwrap(), 5);
    assert_eq!(cluster.add(follower, 2).await.unwrap(), 7);
    assert_eq!(cluster.value(leader), 7);
    cluster.all_read(7).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up_from_its_directory() {
    let mut cluster = Cluster::start("failover", fast()).await;
    let old = cluster.leader().await;
    for _ in 0..5 {
        cluster.add(old, 1).await.unwrap();
    }
    cluster.all_read(5).await;
    cluster.stop(old).await;
    let stopped = Instant::now();
    let new = cluster.leader().await;
    assert_ne!(new, old);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        stopped.elapsed()
    );
    for _ in 0..5 {
        cluster.add(new, 1).await.unwrap();
    }
    cluster.restart(old).await;
    cluster.all_read(10).await;
    assert_eq!(
        cluster.nodes[&old].group.read(|c| c.restores),
        0,
        "caught up by the log, not a snapshot"
    );
    assert_eq!(cluster.leader().await, new);
    cluster.add(new, 1).await.unwrap();
    cluster.all_read(11).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_purged_log_catches_up_by_snapshot() {
    let timing = Timing {
        snapshot_bytes: 10 * 256,
        keep_after_snapshot: 0,
        ..fast()
    };
    let mut cluster = Cluster::start("snapshot", timing).await;
    let leader = cluster.leader().await;
    let lagging = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.stop(lagging).await;
    for _ in 0..40 {
        cluster.add(leader, 1).await.unwrap();
    }
    let purged = eventually("the leader to purge its log", || async {
        cluster.nodes[&leader]
            .group
            .status()
            .purged
            .filter(|p| *p >= 30)
    })
    .await;
    cluster.restart(lagging).await;
    cluster.all_read(40).await;
    let status = cluster.nodes[&lagging].group.status();
    assert!(status.snapshot >= Some(purged), "{status:?}");
    assert_eq!(
        cluster.nodes[&lagging].group.read(|c| c.restores),
        1,
        "installed the leader's snapshot"
    );
    // And the snapshot survives a restart of the replica: it is restored from its file.
    cluster.stop(lagging).await;
    cluster.restart(lagging).await;
    assert!(cluster.nodes[&lagging].group.read(|c| c.restores) >= 1);
    cluster.all_read(40).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_cannot_commit() {
    let timing = Timing {
        write_timeout: Duration::from_secs(1),
        ..fast()
    };
    let mut cluster = Cluster::start("minority", timing).await;
    let leader = cluster.leader().await;
    cluster.add(leader, 1).await.unwrap();
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        cluster.stop(id).await;
    }
    let started = Instant::now();
    let refused = cluster.add(leader, 1).await;
    assert!(
        matches!(
            refused,
            Err(WriteError::Timeout(_) | WriteError::NotLeader { .. })
        ),
        "a lone node committed: {refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(cluster.value(leader), 1, "nothing applied without a quorum");
    cluster.shutdown().await;
}

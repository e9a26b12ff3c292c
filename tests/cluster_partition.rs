//! A network partition of a three-node cluster (issue 22), in network namespaces the test
//! creates: one per node, and one for the test itself with two bridges, a cluster network
//! (10.77.1.0/24: the nodes' cluster ports) and a client network (10.77.2.0/24: AMQP and the
//! management API). A partition takes a node's link to the cluster bridge down, so its clients
//! still reach it. Nothing leaves the namespaces: the test thread enters its own before it
//! starts its runtime.
//!
//! The leader of a quorum queue is cut away: publishes through it are not confirmed; the
//! majority elects a new leader and confirms go on through it; after healing, every replica
//! applies the same log (no divergence) and every confirmed message is consumed.
//!
//! Needs root and `ip` (iproute2): without them the test says so and passes nothing off as
//! tested (it returns early with a message on stderr).

#[path = "common/checker.rs"]
mod checker;
mod common;
#[path = "common/numbered.rs"]
mod numbered;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use numbered::{connect, publish, WAIT};

/// guest may log in from loopback only: the clients here come over the client network.
const USERS: &str =
    "[[users]]\nname = \"test\"\npassword = \"test\"\ntags = [\"administrator\"]\n\n\
                     [[permissions]]\nuser = \"test\"\nvhost = \"/\"\nconfigure = \".*\"\nwrite = \
                     \".*\"\nread = \".*\"\n\n";

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The namespaces and links; removed when dropped.
struct Net {
    prefix: String,
}

impl Net {
    fn hub(&self) -> String {
        format!("{}-c", self.prefix)
    }

    fn node(&self, k: usize) -> String {
        format!("{}-{k}", self.prefix)
    }

    fn create() -> Net {
        let net = Net {
            prefix: format!("wp{}", std::process::id()),
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        for bridge in ["brc", "bra"] {
            ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &hub, "link", "set", bridge, "up"]);
        }
        ip(&["-n", &hub, "addr", "add", "10.77.2.254/24", "dev", "bra"]);
        for k in 1..=3 {
            let ns = net.node(k);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            for (net_id, bridge, side) in [(1, "brc", "c"), (2, "bra", "a")] {
                let outer = format!("{side}{k}b");
                let inner = format!("{side}{k}");
                ip(&[
                    "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                    "netns", &ns,
                ]);
                ip(&["-n", &hub, "link", "set", &outer, "master", bridge, "up"]);
                let address = format!("10.77.{net_id}.{k}/24");
                ip(&["-n", &ns, "addr", "add", &address, "dev", &inner]);
                ip(&["-n", &ns, "link", "set", &inner, "up"]);
            }
        }
        net
    }

    /// Cuts node `k` off the cluster network (its clients still reach it).
    fn partition(&self, k: usize) {
        ip(&["-n", &self.hub(), "link", "set", &format!("c{k}b"), "down"]);
    }

    fn heal(&self, k: usize) {
        ip(&["-n", &self.hub(), "link", "set", &format!("c{k}b"), "up"]);
    }

    /// Moves the calling thread (and the threads it starts later) into the hub namespace.
    fn enter_hub(&self) {
        let file = File::open(format!("/run/netns/{}", self.hub())).expect("the hub namespace");
        // SAFETY: setns(2) on a namespace file we hold open; it changes only this thread.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [self.node(1), self.node(2), self.node(3), self.hub()] {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// A `warren` in node `k`'s namespace; killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(net: &Net, k: usize, dir: &Path) -> Node {
        let config = dir.join(format!("node{k}.toml"));
        let peers: Vec<String> = (1..=3)
            .map(|i| format!("{{ id = {i}, address = \"10.77.1.{i}:25672\" }}"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "{USERS}[cluster]\nnode_id = {k}\npeers = [{}]\n",
                peers.join(", ")
            ),
        )
        .unwrap();
        let log = dir.join(format!("node{k}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &net.node(k), env!("CARGO_BIN_EXE_warren")])
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("10.77.2.{k}:5672")])
            .arg("--data-dir")
            .arg(dir.join(format!("data{k}")))
            .args(["--management", &format!("10.77.2.{k}:15672")])
            .env("RUST_LOG", "info")
            .env_remove("WARREN_CONFIG")
            .stdout(File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren in its namespace");
        let started = Instant::now();
        while std::net::TcpStream::connect(format!("10.77.2.{k}:15672")).is_err() {
            assert!(started.elapsed() < WAIT, "node {k} did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Node { child, log }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

fn uri(k: usize) -> String {
    format!("amqp://test:test@10.77.2.{k}:5672/%2f")
}

/// `warren ctl cluster status --json` of node `k`.
fn status(k: usize) -> serde_json::Value {
    numbered::cluster_status(&format!("http://10.77.2.{k}:15672"), ("test", "test"))
}

/// (leader id, last applied index, ready messages) of `queue`'s group as node `k` sees it.
fn queue_view(k: usize, queue: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let status = status(k);
    let found = status["quorum_queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["name"] == queue).cloned())
        .unwrap_or_default();
    (
        found["group"]["leader"].as_u64(),
        found["group"]["last_applied"].as_u64(),
        found["messages_ready"].as_u64(),
    )
}

async fn confirming(k: usize) -> (Connection, Channel) {
    numbered::confirming(&uri(k)).await
}

async fn drain(k: usize, queue: &str) -> Vec<u64> {
    numbered::drain(&uri(k), queue, Duration::from_secs(3), None).await
}

/// Consumes until every number of `want` has come, or nothing came for [`WAIT`].
async fn drain_until(k: usize, queue: &str, want: &BTreeSet<u64>) -> Vec<u64> {
    numbered::drain(&uri(k), queue, WAIT, Some(want)).await
}

fn can_make_namespaces() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    root && ip
}

#[test]
fn a_partitioned_leader_stops_confirming_and_the_majority_goes_on_without_divergence() {
    if !can_make_namespaces() {
        eprintln!("SKIPPED: network namespaces need root and iproute2 (ip)");
        return;
    }
    let net = Net::create();
    net.enter_hub();
    let dir = std::env::temp_dir().join(format!("warren-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nodes: Vec<Node> = (1..=3).map(|k| Node::start(&net, k, &dir)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario(&net, &nodes));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn scenario(net: &Net, nodes: &[Node]) {
    let queue = "ledger";
    numbered::declare_quorum(&uri(1), queue).await;
    let started = Instant::now();
    let leader = loop {
        let views: Vec<_> = (1..=3).map(|k| queue_view(k, queue).0).collect();
        if let Some(l) = views[0].filter(|l| views.iter().all(|v| *v == Some(*l))) {
            break l as usize;
        }
        assert!(started.elapsed() < WAIT, "no agreed leader: {views:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let majority: Vec<usize> = (1..=3).filter(|k| *k != leader).collect();

    let (_a, on_majority) = confirming(majority[0]).await;
    let mut confirmed: BTreeSet<u64> = publish(&on_majority, queue, 0..200, WAIT)
        .await
        .into_iter()
        .collect();
    assert_eq!(confirmed.len(), 200, "{}", logs(nodes));

    // A consumer on the leader's node takes 5 and never acks them.
    let holding = connect(&uri(leader)).await;
    let holder_channel = holding.create_channel().await.unwrap();
    holder_channel
        .basic_qos(5, BasicQosOptions::default())
        .await
        .unwrap();
    let holder = holder_channel
        .basic_consume(
            queue.into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut holder = common::Deliveries::new(holder);
    let held = holder.take(5).await;
    assert_eq!(held.len(), 5);

    let (_b, on_minority) = confirming(leader).await;
    net.partition(leader);
    let cut_at = Instant::now();
    // Through the majority: confirms go on once it has elected a leader of its own.
    let acked = publish(&on_majority, queue, 200..201, WAIT).await;
    let back_in = cut_at.elapsed();
    assert_eq!(acked, vec![200], "{}", logs(nodes));
    eprintln!("partition: the majority confirmed again {back_in:?} after the cut");
    assert!(back_in < Duration::from_secs(5), "{back_in:?}");
    // Through the cut-off leader: nothing is confirmed.
    let minority_acked = publish(
        &on_minority,
        queue,
        100_000..100_010,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        minority_acked.is_empty(),
        "the minority confirmed {minority_acked:?}"
    );
    confirmed.extend(acked);
    confirmed.extend(publish(&on_majority, queue, 201..400, WAIT).await);
    let new_leader = queue_view(majority[1], queue).0;
    assert!(
        new_leader.is_some_and(|l| l as usize != leader),
        "{new_leader:?}"
    );

    // The cut-off node's consumer held 5: once the node has been silent long enough, the
    // majority gives them to its consumers.
    let mut consumed = drain_until(majority[1], queue, &confirmed).await;
    let report = checker::check(&confirmed, &consumed);
    assert!(
        report.lost.is_empty(),
        "lost during the partition {:?}\n{}",
        report.lost,
        logs(nodes)
    );

    net.heal(leader);
    // Healed: every replica applies the same log and holds the same messages.
    let started = Instant::now();
    loop {
        let views: Vec<_> = (1..=3).map(|k| queue_view(k, queue)).collect();
        let agreed = views
            .iter()
            .all(|v| v.1.is_some() && v.1 == views[0].1 && v.2 == views[0].2);
        if agreed {
            break;
        }
        assert!(started.elapsed() < WAIT, "the replicas diverge: {views:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The node learns it was taken for gone and attaches its consumer again: it gets new
    // messages.
    confirmed.extend(publish(&on_majority, queue, 400..405, WAIT).await);
    let mut again = Vec::new();
    while again.len() < 5 {
        match holder.event_within(WAIT).await {
            Some(Ok(Some(delivery))) => again.push(
                std::str::from_utf8(&delivery.data)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            ),
            other => panic!("the holder got {again:?}, then {other:?}\n{}", logs(nodes)),
        }
    }
    // Its 5: of those published since (the minority's own, late, may come first).
    assert!(
        again
            .iter()
            .all(|n| (400..405).contains(n) || (100_000..100_010).contains(n)),
        "{again:?}"
    );
    consumed.extend(again);
    consumed.extend(drain(majority[1], queue).await);
    let report = checker::check(&confirmed, &consumed);
    eprintln!("checker: {}", report.summary(&confirmed));
    assert!(
        report.lost.is_empty(),
        "lost {:?}\n{}",
        report.lost,
        logs(nodes)
    );
    assert_eq!(confirmed.len(), 405);
}

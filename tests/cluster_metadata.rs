//! The cluster's metadata on three real `warren` processes (issue 22): vhosts, users and
//! permissions changed through one node's management API (`warren ctl`) are made on every node,
//! a node that was down when they were made gets them when it comes back, and deleting a vhost
//! deletes its quorum queues on every node. A quorum queue and a binding to it in the
//! configuration file are declared once the cluster can take them, and served by every node.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/numbered.rs"]
mod numbered;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::{Duration, Instant};

use cluster::{drain, wait_for_queue, Cluster, ONE_CLUSTER_AT_A_TIME};
use lapin::options::*;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use numbered::{publish, WAIT};

/// A login as `user` into `vhost` on node `node`.
async fn login(
    cluster: &Cluster,
    node: usize,
    user: &str,
    vhost: &str,
) -> Result<Connection, lapin::Error> {
    let process = cluster.nodes[node].as_ref().expect("a running node");
    let uri = format!("amqp://{user}:secret@{}/{vhost}", process.addr);
    let connecting = Connection::connect(&uri, ConnectionProperties::default());
    tokio::time::timeout(WAIT, connecting)
        .await
        .expect("an answer in time")
}

/// Waits until logging in as `user` into `vhost` on node `node` succeeds (`true`) or fails.
async fn wait_for_login(cluster: &Cluster, node: usize, user: &str, vhost: &str, works: bool) {
    let started = Instant::now();
    loop {
        let attempt = login(cluster, node, user, vhost).await;
        let worked = attempt.is_ok();
        if let Ok(connection) = attempt {
            let _ = connection.close(200, "bye".into()).await;
        }
        if worked == works {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "node {}: login of {user} into {vhost} never {}\n{}",
            node + 1,
            if works { "worked" } else { "failed" },
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The quorum queues node `node` has open, as (vhost, name).
fn quorum_queues(cluster: &Cluster, node: usize) -> Vec<(String, String)> {
    let status = cluster.status(node);
    let queues = status["quorum_queues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    queues
        .iter()
        .map(|q| {
            let text = |key: &str| q[key].as_str().unwrap_or_default().to_owned();
            (text("vhost"), text("name"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_changed_on_one_node_are_made_on_every_node() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start("cluster-accounts");
    // Node 3 is down while the accounts change: it gets them when it comes back.
    cluster.kill(2);
    cluster.ctl(0, &["add-vhost", "shop"]);
    cluster.ctl(1, &["add-user", "alice", "secret"]);
    cluster.ctl(0, &["--vhost", "shop", "set-permissions", "alice"]);
    cluster.restart(2);
    for node in 0..3 {
        wait_for_login(&cluster, node, "alice", "shop", true).await;
    }

    // A quorum queue in the new vhost, declared by the new user on node 3, served by node 2.
    let on_3 = login(&cluster, 2, "alice", "shop").await.expect("login");
    let channel = on_3.create_channel().await.unwrap();
    channel
        .queue_declare(
            "carts".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            numbered::quorum_args(),
        )
        .await
        .expect("quorum queue declared by alice");
    let alice_uri = |node: usize| {
        let process = cluster.nodes[node].as_ref().expect("a running node");
        format!("amqp://alice:secret@{}/shop", process.addr)
    };
    wait_for_queue(&alice_uri(1), "carts").await;
    let (_publisher, confirming) = numbered::confirming(&alice_uri(1)).await;
    let acked = publish(&confirming, "carts", 0..10, WAIT).await;
    assert_eq!(acked.len(), 10, "{}", cluster.logs());
    let got = drain(&alice_uri(0), "carts", Duration::from_secs(1)).await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let serial_dirs = |node: usize| -> usize {
        let queues = cluster.data[node].join("cluster").join("queues");
        std::fs::read_dir(queues).map_or(0, |d| d.count())
    };
    assert_eq!(serial_dirs(0), 1, "node 1 has the queue's replica");

    // Permissions cleared on node 2: alice no longer gets into the vhost on node 1.
    cluster.ctl(1, &["--vhost", "shop", "clear-permissions", "alice"]);
    wait_for_login(&cluster, 0, "alice", "shop", false).await;
    cluster.ctl(2, &["--vhost", "shop", "set-permissions", "alice"]);
    wait_for_login(&cluster, 0, "alice", "shop", true).await;

    // The vhost deleted on node 2: gone on every node, with its quorum queue's replicas.
    let _ = on_3.close(200, "bye".into()).await;
    cluster.ctl(1, &["delete-vhost", "shop"]);
    let started = Instant::now();
    for node in 0..3 {
        while !quorum_queues(&cluster, node).is_empty() || serial_dirs(node) != 0 {
            assert!(
                started.elapsed() < WAIT,
                "node {}: the deleted vhost's quorum queue is still there\n{}",
                node + 1,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_login(&cluster, node, "alice", "shop", false).await;
    }

    // The user deleted on node 1: gone on node 3, also after node 3 restarts.
    cluster.ctl(0, &["add-vhost", "shop"]);
    cluster.ctl(0, &["--vhost", "shop", "set-permissions", "alice"]);
    wait_for_login(&cluster, 2, "alice", "shop", true).await;
    cluster.ctl(0, &["delete-user", "alice"]);
    wait_for_login(&cluster, 2, "alice", "shop", false).await;
    cluster.kill(2);
    cluster.restart(2);
    wait_for_login(&cluster, 2, "guest", "shop", false).await;
    assert!(
        login(&cluster, 2, "alice", "shop").await.is_err(),
        "alice is back on node 3 after a restart"
    );
}

/// Each node's configuration file: a quorum queue and a binding to it from `amq.direct`.
const TOPOLOGY: &str = r#"
[[queues]]
name = "invoices"
durable = true
arguments = { "x-queue-type" = "quorum" }

[[bindings]]
source = "amq.direct"
destination = "invoices"
routing_key = "invoice"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_in_the_configuration_file_is_the_clusters() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start_with("cluster-topology", TOPOLOGY);
    for node in 0..3 {
        wait_for_queue(&cluster.uri(node), "invoices").await;
    }
    // Through the binding on node 3, confirmed once a majority has them.
    let (_publisher, channel) = numbered::confirming(&cluster.uri(2)).await;
    for n in 0..20u64 {
        let confirm = channel
            .basic_publish(
                "amq.direct".into(),
                "invoice".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                n.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(confirm, lapin::Confirmation::Ack(None)),
            "message {n} not routed to the quorum queue: {confirm:?}\n{}",
            cluster.logs()
        );
    }
    let got = drain(&cluster.uri(0), "invoices", Duration::from_secs(1)).await;
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let queues = quorum_queues(&cluster, 1);
    assert_eq!(queues, vec![("/".to_owned(), "invoices".to_owned())]);
}

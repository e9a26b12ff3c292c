//! A cluster of three real `warren` processes on loopback, each started with a `[cluster]`
//! section naming the three cluster ports and a management API, for the cluster tests. The
//! nodes log at `info` (elections started on a dead leader show), which a failing test prints.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;

use crate::numbered::{self, connect, WAIT};
use crate::warren_process::{free_port, TempDir, WarrenProcess};

/// One cluster at a time in a test binary: three brokers each pick free ports, and tests side by
/// side could take a port another test's node is about to bind.
pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The numbers consumed from `queue` through `uri`'s node until none comes for `quiet`.
pub async fn drain(uri: &str, queue: &str, quiet: Duration) -> Vec<u64> {
    numbered::drain(uri, queue, quiet, None).await
}

pub struct Cluster {
    _dir: TempDir,
    pub ports: Vec<u16>,
    pub configs: Vec<PathBuf>,
    pub data: Vec<PathBuf>,
    pub nodes: Vec<Option<WarrenProcess>>,
}

impl Cluster {
    pub fn start(test: &str) -> Cluster {
        Cluster::start_with(test, "")
    }

    /// [`Cluster::start`], each node's configuration file ending with `more`.
    pub fn start_with(test: &str, more: &str) -> Cluster {
        let dir = TempDir::new(test);
        // The cluster ports are held (bound) until their node starts, so that no other port
        // picked meanwhile (another node's AMQP or management port) can be one of them.
        let mut held: Vec<Option<std::net::TcpListener>> = (0..3)
            .map(|_| Some(std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .flatten()
            .map(|l| l.local_addr().expect("its address").port())
            .collect();
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{{ id = {}, address = \"127.0.0.1:{port}\" }}", i + 1))
            .collect();
        let mut configs = Vec::new();
        let mut data = Vec::new();
        for id in 1..=3 {
            let config = dir.path().join(format!("node{id}.toml"));
            let text = format!(
                "[server]\nlog_level = \"info\"\n[cluster]\nnode_id = {id}\npeers = [{}]\n{more}",
                peers.join(", ")
            );
            std::fs::write(&config, text).unwrap();
            configs.push(config);
            data.push(dir.path().join(format!("data{id}")));
        }
        let nodes = (0..3)
            .map(|i| {
                drop(held[i].take());
                Some(WarrenProcess::start_with_config_and_management(
                    &configs[i],
                    &data[i],
                ))
            })
            .collect();
        Cluster {
            _dir: dir,
            ports,
            configs,
            data,
            nodes,
        }
    }

    /// Starts a fourth node whose configuration names all four (the others' do not: it joins
    /// through `warren ctl cluster join`).
    pub fn add_fourth(&mut self) -> u16 {
        let port = free_port();
        self.ports.push(port);
        let peers: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{{ id = {}, address = \"127.0.0.1:{port}\" }}", i + 1))
            .collect();
        let dir = self.configs[0].parent().unwrap().to_path_buf();
        let config = dir.join("node4.toml");
        std::fs::write(
            &config,
            format!("[cluster]\nnode_id = 4\npeers = [{}]\n", peers.join(", ")),
        )
        .unwrap();
        self.configs.push(config);
        self.data.push(dir.join("data4"));
        self.nodes.push(None);
        self.restart(3);
        port
    }

    pub fn management(&self, node: usize) -> String {
        let process = self.nodes[node].as_ref().expect("a running node");
        format!("http://{}", process.management.expect("a management API"))
    }

    /// `warren ctl ARGS` against node `node`'s management API; its stdout.
    pub fn ctl(&self, node: usize, args: &[&str]) -> String {
        numbered::ctl(&self.management(node), ("guest", "guest"), args)
    }

    pub fn uri(&self, node: usize) -> String {
        let process = self.nodes[node].as_ref().expect("a running node");
        format!("amqp://guest:guest@{}/%2f", process.addr)
    }

    /// `kill -9` of node `node` (0-based).
    pub fn kill(&mut self, node: usize) {
        // Dropping the process kills it (SIGKILL) and waits for it.
        self.nodes[node] = None;
    }

    pub fn restart(&mut self, node: usize) {
        self.nodes[node] = Some(WarrenProcess::start_with_config_and_management(
            &self.configs[node],
            &self.data[node],
        ));
    }

    /// `warren ctl cluster status --json` against node `node`'s management API.
    pub fn status(&self, node: usize) -> serde_json::Value {
        numbered::cluster_status(&self.management(node), ("guest", "guest"))
    }

    /// The node (0-based) that leads `queue`'s group, as node `asked` sees it.
    pub fn queue_leader(&self, asked: usize, queue: &str) -> Option<usize> {
        let status = self.status(asked);
        let queues = status["quorum_queues"].as_array()?;
        let found = queues.iter().find(|q| q["name"] == queue)?;
        let leader = found["group"]["leader"].as_u64()?;
        Some(leader as usize - 1)
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                all.push_str(&format!("--- node {} ---\n{}\n", i + 1, node.log()));
            }
        }
        all
    }
}

/// Waits until `uri`'s node knows the queue (a passive declaration succeeds).
pub async fn wait_for_queue(uri: &str, queue: &str) {
    let started = Instant::now();
    loop {
        let connection = connect(uri).await;
        let channel = connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .is_ok()
        {
            let _ = connection.close(200, "bye".into()).await;
            return;
        }
        assert!(started.elapsed() < WAIT, "{queue} never reached {uri}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

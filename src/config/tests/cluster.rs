//! `[cluster]`: what a good section turns into, and each problem with its place.

use super::super::from_str;
use super::{assert_problem, problems};

const PEERS: &str = "peers = [{ id = 1, address = \"127.0.0.1:25001\" }, { id = 2, address = \
                     \"127.0.0.1:25002\" }, { id = 3, address = \"127.0.0.1:25003\" }]\n";

#[test]
fn a_cluster_section_names_this_node_and_its_peers() {
    let config = from_str("t.toml", &format!("[cluster]\nnode_id = 2\n{PEERS}")).unwrap();
    let cluster = config.settings.cluster.expect("a cluster");
    assert_eq!(cluster.node_id, 2);
    assert_eq!(
        cluster.listen, "127.0.0.1:25002",
        "its own peer address by default"
    );
    assert_eq!(cluster.peers.len(), 3);
    assert_eq!(cluster.peers[&3], "127.0.0.1:25003");
    let config = from_str(
        "t.toml",
        &format!("[cluster]\nnode_id = 1\nlisten = \"0.0.0.0:25001\"\n{PEERS}"),
    )
    .unwrap();
    assert_eq!(config.settings.cluster.unwrap().listen, "0.0.0.0:25001");
    assert!(from_str("t.toml", "").unwrap().settings.cluster.is_none());
}

#[test]
fn a_cluster_section_with_problems_is_refused() {
    assert_problem(
        &format!("[cluster]\nnode_id = 4\n{PEERS}"),
        "t.toml:2:11: [cluster] node_id 4 is not among the peers' ids",
    );
    assert_problem(
        "[cluster]\nnode_id = 1\npeers = [{ id = 1, address = \"nowhere\" }]\n",
        "t.toml:3:9: [cluster] peers: node 1's address 'nowhere' is not host:port",
    );
    assert_problem(
        "[cluster]\nnode_id = 1\npeers = [{ id = 1, address = \"a:1\" }, { id = 1, address = \
         \"b:2\" }]\n",
        "t.toml:3:9: [cluster] peers: node id 1 is listed twice",
    );
    assert_problem(
        "[cluster]\nnode_id = 1\npeers = []\n",
        "t.toml:3:9: [cluster] peers must list 1 to 9 nodes (this one included), not 0",
    );
    assert_problem(
        &format!("[cluster]\nnode_id = 1\nlisten = \"25001\"\n{PEERS}"),
        "t.toml:3:10: [cluster] listen '25001' is not host:port",
    );
    let found = problems("[cluster]\nnode_id = 1\npeers = [{ id = 1, adress = \"a:1\" }]\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("adress"), "{found:?}");
}

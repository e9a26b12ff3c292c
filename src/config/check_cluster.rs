//! `[cluster]`: this node's id among the peers, the ids unique, every address a `host:port`,
//! and the cluster port's address (this node's own in `peers` unless `listen` says otherwise).

use std::collections::BTreeMap;

use toml::Spanned;

use super::error::{Problem, Source};
use super::model::ClusterSection;
use crate::broker::quorum::ClusterConfig;

/// The most nodes a cluster may list (Raft groups over more are slow to commit).
const MAX_PEERS: usize = 9;

pub(super) fn check(
    source: &Source<'_>,
    section: Option<ClusterSection>,
    problems: &mut Vec<Problem>,
) -> Option<ClusterConfig> {
    let section = section?;
    let node_id = *section.node_id.get_ref();
    let peers_span = section.peers.span();
    let mut peers = BTreeMap::new();
    let mut bad = false;
    for peer in section.peers.into_inner() {
        if !is_host_port(&peer.address) {
            problems.push(source.problem(
                &peers_span,
                format!(
                    "[cluster] peers: node {}'s address '{}' is not host:port",
                    peer.id, peer.address
                ),
            ));
            bad = true;
        }
        if peers.insert(peer.id, peer.address).is_some() {
            problems.push(source.problem(
                &peers_span,
                format!("[cluster] peers: node id {} is listed twice", peer.id),
            ));
            bad = true;
        }
    }
    if peers.is_empty() || peers.len() > MAX_PEERS {
        problems.push(source.problem(
            &peers_span,
            format!(
                "[cluster] peers must list 1 to {MAX_PEERS} nodes (this one included), not {}",
                peers.len()
            ),
        ));
        return None;
    }
    let Some(own) = peers.get(&node_id).cloned() else {
        problems.push(source.problem(
            &section.node_id.span(),
            format!("[cluster] node_id {node_id} is not among the peers' ids"),
        ));
        return None;
    };
    let listen = match section.listen {
        Some(listen) => checked_listen(source, listen, problems)?,
        None => own,
    };
    (!bad).then_some(ClusterConfig {
        node_id,
        listen,
        peers,
    })
}

fn checked_listen(
    source: &Source<'_>,
    listen: Spanned<String>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    if is_host_port(listen.get_ref()) {
        return Some(listen.into_inner());
    }
    problems.push(source.problem(
        &listen.span(),
        format!("[cluster] listen '{}' is not host:port", listen.get_ref()),
    ));
    None
}

/// `host:port` with a port number (the host is resolved when the node starts).
fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

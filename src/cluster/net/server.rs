//! The listening side of the cluster port: [`Transport`] accepts connections from peers and hands
//! each request to the group its header names, one request at a time per connection (a peer's
//! group sends its next RPC only after the reply to the last).
//!
//! Owns the listener, the accepted connections and the table of groups this node runs; never
//! holds a lock across an await.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;

use super::frame::{self, Rpc};
use crate::cluster::machine::NodeId;
use crate::cluster::machine::{GroupId, Machine, TypeConfig};
use crate::cluster::write::{change_voters, write_outcome};
use std::collections::BTreeMap;

/// A group's answer to a request body: the encoded reply, or why the body was refused.
pub(crate) type Reply<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// A group as the listener sees it: request bytes in, reply bytes out.
pub(crate) trait Handler: Send + Sync {
    fn handle(&self, rpc: Rpc, body: &[u8]) -> Reply<'_>;

    /// The connection a peer sent this group's `AppendEntries` on closed; the last came at
    /// `last_heard`. (A leader's process that dies closes its connections at once.)
    fn peer_gone(&self, _last_heard: Instant) {}
}

type Groups = Arc<RwLock<HashMap<GroupId, Arc<dyn Handler>>>>;

/// One node's cluster port, shared by all its Raft groups. Dropping it (or [`Transport::shutdown`])
/// stops the listener and closes every accepted connection.
pub struct Transport {
    addr: SocketAddr,
    groups: Groups,
    stop: watch::Sender<bool>,
}

impl Transport {
    /// Listens on `addr` (port 0: any free port; see [`Transport::local_addr`]).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Transport> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let groups: Groups = Arc::default();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, groups.clone(), stopped));
        tracing::info!(%addr, "cluster port listening");
        Ok(Transport { addr, groups, stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the connections (their requests in progress are dropped).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Adds a group; false if one of that id is there already.
    pub(crate) fn register(&self, group: GroupId, handler: Arc<dyn Handler>) -> bool {
        let mut groups = self.groups.write();
        if groups.contains_key(&group) {
            return false;
        }
        groups.insert(group, handler);
        true
    }

    /// A handle that removes `group` from this transport when asked to.
    pub(crate) fn registration(&self, group: GroupId) -> Registration {
        Registration {
            groups: self.groups.clone(),
            group,
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Lets a group leave the transport it was registered with.
pub(crate) struct Registration {
    groups: Groups,
    group: GroupId,
}

impl Registration {
    pub(crate) fn remove(&self) {
        self.groups.write().remove(&self.group);
    }
}

async fn accept(listener: TcpListener, groups: Groups, stopped: watch::Receiver<bool>) {
    let mut stop = stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, peer, groups.clone(), stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = stopping(&mut stop) => break,
        }
    }
}

/// Returns once the transport stops (or is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves one peer connection until it closes, errs, or the transport stops. A connection that
/// carried `AppendEntries` and closes is reported to its group ([`Handler::peer_gone`]).
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    groups: Groups,
    mut stopped: watch::Receiver<bool>,
) {
    let mut appends: Option<(GroupId, Instant)> = None;
    loop {
        let request = tokio::select! {
            request = frame::read_frame(&mut stream) => request,
            () = stopping(&mut stopped) => return,
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "cluster connection closed");
                }
                break;
            }
        };
        if let Ok((group, Rpc::AppendEntries, _)) = frame::parse_request(&request) {
            appends = Some((group, Instant::now()));
        }
        let reply = tokio::select! {
            reply = answer(&groups, &request) => reply,
            () = stopping(&mut stopped) => return,
        };
        if let Err(e) = frame::write_frame(&mut stream, &reply).await {
            tracing::debug!(%peer, error = %e, "cluster connection: reply not sent");
            break;
        }
    }
    if let Some((group, last_heard)) = appends {
        let handler = groups.read().get(&group).cloned();
        if let Some(handler) = handler {
            handler.peer_gone(last_heard);
        }
    }
}

/// The reply payload to one request payload.
async fn answer(groups: &Groups, request: &[u8]) -> Vec<u8> {
    let (group, rpc, body) = match frame::parse_request(request) {
        Ok(parsed) => parsed,
        Err(why) => return frame::reply(frame::REFUSED, why.as_bytes()),
    };
    let handler = groups.read().get(&group).cloned();
    let Some(handler) = handler else {
        return frame::reply(
            frame::REFUSED,
            format!("no group {group} on this node").as_bytes(),
        );
    };
    match handler.handle(rpc, body).await {
        Ok(answer) => frame::reply(frame::OK, &answer),
        Err(why) => frame::reply(frame::REFUSED, why.as_bytes()),
    }
}

/// A running group answers requests by calling its Raft node.
impl<M: Machine> Handler for Raft<TypeConfig<M>> {
    fn handle(&self, rpc: Rpc, body: &[u8]) -> Reply<'_> {
        fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
            serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))
        }
        fn encode<T: serde::Serialize>(answer: &T) -> Result<Vec<u8>, String> {
            serde_json::to_vec(answer).map_err(|e| format!("reply not encoded: {e}"))
        }
        let body = body.to_vec();
        Box::pin(async move {
            match rpc {
                Rpc::AppendEntries => encode(&self.append_entries(decode(&body)?).await),
                Rpc::Vote => encode(&self.vote(decode(&body)?).await),
                Rpc::InstallSnapshot => encode(&self.install_snapshot(decode(&body)?).await),
                Rpc::Write => {
                    let command: M::Command = decode(&body)?;
                    let written = self.client_write(command).await;
                    encode(&write_outcome::<M>(written, &Default::default()))
                }
                Rpc::Ping => Ok(Vec::new()),
                Rpc::Membership => {
                    let voters: BTreeMap<NodeId, String> = decode(&body)?;
                    encode(&change_voters::<M>(self, &voters).await)
                }
            }
        })
    }

    fn peer_gone(&self, last_heard: Instant) {
        tokio::spawn(elect_if_leader_died(self.clone(), last_heard));
    }
}

/// After the connection its leader sent on closed: if this node follows that leader and the
/// leader's port no longer answers, the other voters take turns, in id order, to start an
/// election once the lease every voter gives the old leader has run out (they refuse votes
/// until then): the first at once, the next 300 ms later if no leader came of it (the first's
/// log may be behind), and so on. Meanwhile their own timed elections are held back, so that
/// no rival of the same term splits the votes; they come back on after the last turn, whatever
/// happened.
async fn elect_if_leader_died<M: Machine>(raft: Raft<TypeConfig<M>>, last_heard: Instant) {
    const TURN: Duration = Duration::from_millis(300);
    let metrics = raft.metrics().borrow().clone();
    let Some(leader) = metrics.current_leader else {
        return;
    };
    if metrics.state != ServerState::Follower || leader == metrics.id {
        return;
    }
    let membership = metrics.membership_config.membership();
    let others: Vec<NodeId> = membership.voter_ids().filter(|v| *v != leader).collect();
    let Some(turn) = others.iter().position(|v| *v == metrics.id) else {
        return;
    };
    let Some(addr) = membership.get_node(&leader).map(|n| n.addr.clone()) else {
        return;
    };
    let probe = TcpStream::connect(addr.as_str());
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), probe).await {
        return;
    }
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let lease_ends = last_heard + lease + Duration::from_millis(30);
    raft.runtime_config().elect(false);
    let mine = lease_ends + TURN * turn as u32;
    tokio::time::sleep_until(mine.into()).await;
    // Twice: a candidate of the same term that started before (an earlier turn whose log was
    // behind) has voted for itself; the next term wins its vote.
    for _ in 0..2 {
        let now = raft.metrics().borrow().clone();
        let still_gone = now.current_leader.is_none_or(|l| l == leader);
        if !still_gone || now.state == ServerState::Leader {
            break;
        }
        tracing::info!(group = %raft.config().cluster_name, old_leader = leader, "the leader's process is gone: starting an election");
        if raft.trigger().elect().await.is_err() {
            break;
        }
        tokio::time::sleep(TURN / 2).await;
    }
    let last_turn = lease_ends + TURN * others.len() as u32;
    tokio::time::sleep_until(last_turn.into()).await;
    raft.runtime_config().elect(true);
}

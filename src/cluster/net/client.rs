//! The calling side of the cluster port: openraft's `RaftNetworkFactory` and `RaftNetwork` for a
//! group. Each (group, peer) pair gets its own connection, opened at the first call and dropped
//! after any error or timeout (a late reply must never answer the next request), so the next
//! call connects again. A call runs under openraft's hard timeout for it; a peer that cannot be
//! reached is reported as unreachable, which makes openraft back off.
//!
//! Owns the outgoing connections; never decides what to send (openraft does).

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

use super::frame::{self, Rpc};
use crate::cluster::machine::{GroupId, Machine, NodeId, TypeConfig};

/// How long a connection may take to open, at most (less when the call's timeout is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes the [`Peer`]s of one group on this node.
pub struct Network<M> {
    node: NodeId,
    group: GroupId,
    machine: PhantomData<fn() -> M>,
}

impl<M> Network<M> {
    pub fn new(node: NodeId, group: GroupId) -> Network<M> {
        Network {
            node,
            group,
            machine: PhantomData,
        }
    }
}

/// One group's link to one peer.
pub struct Peer<M> {
    node: NodeId,
    target: NodeId,
    addr: String,
    group: GroupId,
    conn: Option<TcpStream>,
    machine: PhantomData<fn() -> M>,
}

/// Why a call got no answer from the peer's group.
enum Failed {
    /// No connection could be made.
    Unreachable(io::Error),
    /// The connection failed, or the peer refused the request.
    Network(io::Error),
    Timeout(Duration),
}

impl<M: Machine> RaftNetworkFactory<TypeConfig<M>> for Network<M> {
    type Network = Peer<M>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer<M> {
        Peer {
            node: self.node,
            target,
            addr: node.addr.clone(),
            group: self.group.clone(),
            conn: None,
            machine: PhantomData,
        }
    }
}

impl<M> Peer<M> {
    /// Sends `request` and decodes the group's answer, under `ttl`.
    async fn call<Q: Serialize, A: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Q,
        ttl: Duration,
    ) -> Result<A, Failed> {
        let body = serde_json::to_vec(request).map_err(|e| Failed::Network(io::Error::other(e)))?;
        let payload = frame::request(&self.group, rpc, &body);
        let result = match tokio::time::timeout(ttl, self.exchange(&payload, ttl)).await {
            Ok(result) => result,
            Err(_) => Err(Failed::Timeout(ttl)),
        };
        if result.is_err() {
            self.conn = None;
        }
        let reply = result?;
        match reply.split_first() {
            Some((&frame::OK, answer)) => serde_json::from_slice(answer)
                .map_err(|e| Failed::Network(io::Error::new(io::ErrorKind::InvalidData, e))),
            Some((&frame::REFUSED, why)) => {
                let why = String::from_utf8_lossy(why);
                Err(Failed::Network(io::Error::other(format!(
                    "node {} refused: {why}",
                    self.target
                ))))
            }
            _ => Err(Failed::Network(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply without a status",
            ))),
        }
    }

    async fn exchange(&mut self, payload: &[u8], ttl: Duration) -> Result<Vec<u8>, Failed> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let connect = TcpStream::connect(&self.addr);
                let conn = match tokio::time::timeout(ttl.min(CONNECT_TIMEOUT), connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(Failed::Unreachable(e)),
                    Err(_) => {
                        return Err(Failed::Unreachable(io::Error::from(
                            io::ErrorKind::TimedOut,
                        )))
                    }
                };
                conn.set_nodelay(true).map_err(Failed::Unreachable)?;
                tracing::debug!(group = %self.group, peer = self.target, addr = %self.addr, "cluster connection opened");
                self.conn.insert(conn)
            }
        };
        frame::write_frame(conn, payload)
            .await
            .map_err(Failed::Network)?;
        frame::read_frame(conn).await.map_err(Failed::Network)
    }

    /// openraft's error for a call that got no answer, or the group's own error.
    // The error type is the one RaftNetwork's methods return, large or not.
    #[allow(clippy::result_large_err)]
    fn rpc_error<A, E: std::error::Error>(
        &self,
        action: RPCTypes,
        result: Result<Result<A, RaftError<NodeId, E>>, Failed>,
    ) -> Result<A, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(Failed::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(Failed::Network(e)) => Err(RPCError::Network(NetworkError::new(&e))),
            Err(Failed::Timeout(timeout)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.node,
                target: self.target,
                timeout,
            })),
        }
    }
}

type Answer<A, E = openraft::error::Infallible> =
    Result<A, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl<M: Machine> RaftNetwork<TypeConfig<M>> for Peer<M> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig<M>>,
        option: RPCOption,
    ) -> Answer<AppendEntriesResponse<NodeId>> {
        let result = self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await;
        self.rpc_error(RPCTypes::AppendEntries, result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig<M>>,
        option: RPCOption,
    ) -> Answer<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let result = self
            .call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await;
        self.rpc_error(RPCTypes::InstallSnapshot, result)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Answer<VoteResponse<NodeId>> {
        let result = self.call(Rpc::Vote, &rpc, option.hard_ttl()).await;
        self.rpc_error(RPCTypes::Vote, result)
    }
}

/// How long a forwarded write may wait for the leader's answer (the caller's write timeout
/// bounds the whole write as well).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards client writes of one group to its leader ([`Rpc::Write`]): idle connections are kept
/// per address and reused, one request at a time each, so writes from many callers travel side
/// by side; a connection that fails is dropped.
pub struct Forwarder {
    group: GroupId,
    idle: parking_lot::Mutex<Vec<(String, TcpStream)>>,
}

impl Forwarder {
    pub fn new(group: GroupId) -> Forwarder {
        Forwarder {
            group,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Sends the encoded command to the node at `addr` and returns its answer's body.
    pub async fn call(&self, addr: &str, body: &[u8]) -> io::Result<Vec<u8>> {
        self.request(addr, Rpc::Write, body, FORWARD_TIMEOUT).await
    }

    /// Sends a change of voters to the node at `addr` (the leader) and returns its answer.
    pub async fn membership(&self, addr: &str, body: &[u8]) -> io::Result<Vec<u8>> {
        self.request(addr, Rpc::Membership, body, FORWARD_TIMEOUT)
            .await
    }

    /// Whether the node at `addr` answers a ping (through this group) within `within`.
    pub async fn ping(&self, addr: &str, within: Duration) -> bool {
        self.request(addr, Rpc::Ping, &[], within).await.is_ok()
    }

    async fn request(
        &self,
        addr: &str,
        rpc: Rpc,
        body: &[u8],
        within: Duration,
    ) -> io::Result<Vec<u8>> {
        let payload = frame::request(&self.group, rpc, body);
        let idle = {
            let mut idle = self.idle.lock();
            let at = idle.iter().position(|(a, _)| a == addr);
            at.map(|at| idle.swap_remove(at).1)
        };
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn =
                    tokio::time::timeout(CONNECT_TIMEOUT.min(within), TcpStream::connect(addr))
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                conn.set_nodelay(true)?;
                conn
            }
        };
        let exchange = async {
            frame::write_frame(&mut conn, &payload).await?;
            frame::read_frame(&mut conn).await
        };
        let reply = tokio::time::timeout(within, exchange)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        match reply.split_first() {
            Some((&frame::OK, answer)) => {
                let answer = answer.to_vec();
                self.idle.lock().push((addr.to_owned(), conn));
                Ok(answer)
            }
            Some((&frame::REFUSED, why)) => Err(io::Error::other(format!(
                "{addr} refused: {}",
                String::from_utf8_lossy(why)
            ))),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply without a status",
            )),
        }
    }
}

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

use openraft::Raft;
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

/// Serves one peer connection until it closes, errs, or the transport stops.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    groups: Groups,
    mut stopped: watch::Receiver<bool>,
) {
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
                return;
            }
        };
        let reply = tokio::select! {
            reply = answer(&groups, &request) => reply,
            () = stopping(&mut stopped) => return,
        };
        if let Err(e) = frame::write_frame(&mut stream, &reply).await {
            tracing::debug!(%peer, error = %e, "cluster connection: reply not sent");
            return;
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
}

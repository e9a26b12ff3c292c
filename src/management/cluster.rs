//! `GET /api/cluster/status` (Warren's own; RabbitMQ's `rabbitmqctl cluster_status` and
//! `rabbitmq-queues quorum_status` in one): this node, its peers, the metadata group and every
//! quorum queue's group as this node sees them (role, term, leader, log indexes).
//!
//! `POST /api/cluster/join` (`{"node_id": 4, "address": "host:port"}`) and `POST
//! /api/cluster/leave` (`{"node_id": 3}`), administrators only: membership changes, made
//! through the groups' leaders (`warren ctl cluster join|leave`).
//!
//! Reads through the broker's cluster node and the queues' handles; changes only membership.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::Caller;
use super::reply::{parse_body, ApiError, ApiResult};
use super::Management;
use crate::broker::queue::Queue;
use crate::broker::quorum::Quorum;
use crate::cluster::{Role, Status};

pub async fn status(
    State(state): State<Arc<Management>>,
    _caller: Caller,
) -> ApiResult<Json<Value>> {
    let node = cluster_of(&state)?;
    let queues: Vec<Value> = quorum_queues(&state)
        .into_iter()
        .map(|(vhost, queue, quorum)| {
            let definition = node.definition(&vhost, queue.name.as_str());
            let (ready, consumers) = quorum.counts();
            json!({
                "vhost": vhost,
                "name": queue.name.as_str(),
                "members": definition.map(|d| d.members).unwrap_or_default(),
                "voters": quorum.voters().keys().collect::<Vec<_>>(),
                "messages_ready": ready,
                "consumers": consumers,
                "group": group_json(&quorum.status()),
            })
        })
        .collect();
    let peers: serde_json::Map<String, Value> = node
        .nodes()
        .iter()
        .map(|(id, address)| (id.to_string(), json!(address)))
        .collect();
    Ok(Json(json!({
        "node_id": node.id(),
        "listen": node.config.listen,
        "peers": peers,
        "metadata": group_json(&node.status()),
        "quorum_queues": queues,
    })))
}

fn group_json(status: &Status) -> Value {
    let role = match status.role {
        Role::Learner => "learner",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Shutdown => "shutdown",
    };
    json!({
        "role": role,
        "term": status.term,
        "leader": status.leader,
        "last_log_index": status.last_log_index,
        "last_applied": status.last_applied,
        "snapshot": status.snapshot,
        "purged": status.purged,
    })
}

/// Every quorum queue this node has a replica of: (vhost, queue, its group's handle).
fn quorum_queues(state: &Management) -> Vec<(String, Arc<Queue>, Arc<Quorum>)> {
    let mut found = Vec::new();
    for name in state.broker.vhost_names() {
        let Some(vhost) = state.broker.vhost(&name) else {
            continue;
        };
        for queue in vhost.queues() {
            if let Some(quorum) = queue.quorum().cloned() {
                found.push((name.clone(), queue, quorum));
            }
        }
    }
    found
}

fn cluster_of(state: &Management) -> ApiResult<Arc<crate::broker::quorum::Node>> {
    state.broker.cluster().ok_or_else(|| {
        ApiError::bad_request("this node is not in a cluster ([cluster] in its configuration)")
    })
}

fn node_id(body: &Value) -> ApiResult<u64> {
    body.get("node_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::bad_request("node_id: expected a node id (a number)"))
}

pub async fn join(
    State(state): State<Arc<Management>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let node = cluster_of(&state)?;
    let body = parse_body(&body)?;
    let id = node_id(&body)?;
    let Some(address) = body.get("address").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "address: expected host:port of its cluster port",
        ));
    };
    node.join(id, address.to_owned())
        .await
        .map_err(|e| ApiError::internal(format!("node {id} did not join: {e}")))?;
    tracing::info!(node = id, %address, user = %caller.name, "a node joined the cluster");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn leave(
    State(state): State<Arc<Management>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let node = cluster_of(&state)?;
    let id = node_id(&parse_body(&body)?)?;
    // Out of every quorum queue's group this node has a replica of, then out of the cluster.
    for (_, queue, quorum) in quorum_queues(&state) {
        quorum.remove_member(id).await.map_err(|e| {
            ApiError::internal(format!("node {id} is still in queue '{}': {e}", queue.name))
        })?;
    }
    node.leave(id)
        .await
        .map_err(|e| ApiError::internal(format!("node {id} did not leave: {e}")))?;
    tracing::info!(node = id, user = %caller.name, "a node left the cluster");
    Ok(StatusCode::NO_CONTENT.into_response())
}

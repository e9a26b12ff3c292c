//! `GET /api/cluster/status` (Warren's own; RabbitMQ's `rabbitmqctl cluster_status` and
//! `rabbitmq-queues quorum_status` in one): this node, its peers, the metadata group and every
//! quorum queue's group as this node sees them (role, term, leader, log indexes).
//!
//! Reads through the broker's cluster node and the queues' handles; never changes anything.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::reply::{ApiError, ApiResult};
use super::Management;
use crate::cluster::{Role, Status};

pub async fn status(
    State(state): State<Arc<Management>>,
    _caller: Caller,
) -> ApiResult<Json<Value>> {
    let Some(node) = state.broker.cluster() else {
        return Err(ApiError::bad_request(
            "this node is not in a cluster ([cluster] in its configuration)",
        ));
    };
    let mut queues = Vec::new();
    for vhost in state.broker.vhost_names() {
        let Some(vhost) = state.broker.vhost(&vhost) else {
            continue;
        };
        for queue in vhost.queues() {
            let Some(quorum) = queue.quorum() else {
                continue;
            };
            let definition = node.definition(&vhost.name, queue.name.as_str());
            let (ready, consumers) = quorum.counts();
            queues.push(json!({
                "vhost": vhost.name,
                "name": queue.name.as_str(),
                "members": definition.map(|d| d.members).unwrap_or_default(),
                "messages_ready": ready,
                "consumers": consumers,
                "group": group_json(&quorum.status()),
            }));
        }
    }
    let peers: serde_json::Map<String, Value> = node
        .config
        .peers
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

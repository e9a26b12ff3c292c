//! `/api/connections`, `/api/channels` and `/api/consumers`, from the server's connection
//! registry; `DELETE /api/connections/{name}` asks a connection to close (320, with the
//! `X-Reason` header's text, as RabbitMQ).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::listing::{list, ListQuery, Named};
use super::lookup::visible_vhost;
use super::reply::{timestamp, ApiError, ApiResult};
use super::Management;
use crate::broker::queue::ConsumerInfo;
use crate::server::registry::{ChannelInfo, ConnectionEntry, Opened};

/// A connection that finished its handshake, with what it told.
pub struct Listed {
    entry: Arc<ConnectionEntry>,
    login: Opened,
    name: String,
}

impl Named for Listed {
    fn vhost(&self) -> &str {
        &self.login.vhost
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// RabbitMQ's connection name: `peer -> local`.
pub fn connection_name(entry: &ConnectionEntry) -> String {
    format!("{} -> {}", entry.peer, entry.local)
}

/// The open connections the caller may see: an administrator or monitoring user sees all, a
/// management user only their own (as in RabbitMQ).
fn listed(state: &Management, caller: &Caller) -> Vec<Listed> {
    let mut out = Vec::new();
    for entry in state.registry.connections() {
        let Some(login) = entry.login() else { continue };
        if !caller.sees_all() && login.user != caller.name {
            continue;
        }
        let name = connection_name(&entry);
        out.push(Listed { entry, login, name });
    }
    out
}

fn connection_json(state: &Management, listed: &Listed) -> Value {
    let Listed { entry, login, name } = listed;
    let client: serde_json::Map<String, Value> = login
        .client
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let counts = entry.counts();
    json!({
        "name": name,
        "node": state.node,
        "vhost": login.vhost,
        "user": login.user,
        "user_provided_name": login.client.iter().find(|(k, _)| k == "connection_name").map(|(_, v)| v),
        "state": "running",
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "ssl": entry.tls,
        "host": entry.local.ip().to_string(),
        "port": entry.local.port(),
        "peer_host": entry.peer.ip().to_string(),
        "peer_port": entry.peer.port(),
        "channels": entry.channel_count(),
        "channel_max": login.channel_max,
        "frame_max": login.frame_max,
        "timeout": login.heartbeat,
        "client_properties": client,
        "connected_at": entry.connected_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "connected_since": timestamp(entry.connected_at),
        "message_stats": {
            "publish": counts.received, "deliver_get": counts.delivered,
            "ack": counts.acknowledged, "confirm": counts.confirmed,
        },
    })
}

pub async fn connections(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = listed(&state, &caller);
    Ok(Json(list(items, &query, |l| connection_json(&state, l))?))
}

pub async fn vhost_connections(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    visible_vhost(&state, &caller, &vhost)?;
    let mut items = listed(&state, &caller);
    items.retain(|l| l.login.vhost == vhost);
    Ok(Json(list(items, &query, |l| connection_json(&state, l))?))
}

fn find(state: &Management, caller: &Caller, name: &str) -> ApiResult<Listed> {
    listed(state, caller)
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(ApiError::not_found)
}

pub async fn connection(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let found = find(&state, &caller, &name)?;
    Ok(Json(connection_json(&state, &found)))
}

pub async fn close_connection(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = find(&state, &caller, &name)?;
    if !caller.is_admin() && found.login.user != caller.name {
        return Err(ApiError::forbidden(
            "only an administrator may close others' connections",
        ));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|r| r.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_owned();
    found.entry.close(reason);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn channel_json(state: &Management, listed: &Listed, channel: &ChannelInfo) -> Value {
    json!({
        "name": format!("{} ({})", listed.name, channel.number),
        "number": channel.number,
        "node": state.node,
        "vhost": listed.login.vhost,
        "user": listed.login.user,
        "state": "running",
        "confirm": channel.confirm,
        "transactional": channel.transactional,
        "prefetch_count": channel.prefetch,
        "global_prefetch_count": channel.global_prefetch,
        "consumer_count": channel.consumers,
        "messages_unacknowledged": channel.credit.unacked(),
        "messages_unconfirmed": channel.unconfirmed.as_ref().map_or(0, |n| n.load(std::sync::atomic::Ordering::Relaxed)),
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "connection_details": {
            "name": listed.name,
            "peer_host": listed.entry.peer.ip().to_string(),
            "peer_port": listed.entry.peer.port(),
        },
    })
}

/// A channel with its connection, for listing.
pub struct ListedChannel {
    name: String,
    vhost: String,
    json: Value,
}

impl Named for ListedChannel {
    fn vhost(&self) -> &str {
        &self.vhost
    }
    fn name(&self) -> &str {
        &self.name
    }
}

fn channels_of(state: &Management, connections: &[Listed]) -> Vec<ListedChannel> {
    let mut out = Vec::new();
    for listed in connections {
        for channel in listed.entry.channels() {
            let json = channel_json(state, listed, &channel);
            out.push(ListedChannel {
                name: format!("{} ({})", listed.name, channel.number),
                vhost: listed.login.vhost.clone(),
                json,
            });
        }
    }
    out
}

pub async fn channels(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = channels_of(&state, &listed(&state, &caller));
    Ok(Json(list(items, &query, |c| c.json.clone())?))
}

pub async fn connection_channels(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let found = find(&state, &caller, &name)?;
    let items = channels_of(&state, &[found]);
    Ok(Json(Value::Array(
        items.into_iter().map(|c| c.json).collect(),
    )))
}

/// A consumer as RabbitMQ shows it (with its channel's details).
pub fn consumer_json(
    state: &Management,
    vhost: &str,
    queue: &str,
    consumer: &ConsumerInfo,
) -> Value {
    let entry = state.registry.connection(consumer.connection);
    let (connection, peer_host, peer_port, user) = match &entry {
        Some(entry) => (
            connection_name(entry),
            entry.peer.ip().to_string(),
            entry.peer.port(),
            entry.login().map(|l| l.user).unwrap_or_default(),
        ),
        None => (String::new(), String::new(), 0, String::new()),
    };
    json!({
        "consumer_tag": consumer.tag.as_str(),
        "queue": {"name": queue, "vhost": vhost},
        "ack_required": !consumer.no_ack,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch,
        "active": consumer.active,
        "activity_status": if consumer.active { "up" } else { "down" },
        "arguments": if consumer.priority != 0 { json!({"x-priority": consumer.priority}) } else { json!({}) },
        "consumer_timeout": consumer.timeout.unwrap_or(state.consumer_timeout).as_millis() as u64,
        "channel_details": {
            "name": format!("{connection} ({})", consumer.channel),
            "connection_name": connection,
            "number": consumer.channel,
            "node": state.node,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": user,
        },
    })
}

fn consumers_in_vhosts(state: &Management, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for name in state.broker.vhost_names() {
        if only.is_some_and(|o| o != name) || !caller.sees(state, &name) {
            continue;
        }
        let Some(vhost) = state.broker.vhost(&name) else {
            continue;
        };
        for queue in vhost.queues() {
            for consumer in queue.consumer_infos() {
                out.push(consumer_json(state, &name, queue.name.as_str(), &consumer));
            }
        }
    }
    out
}

pub async fn consumers(State(state): State<Arc<Management>>, caller: Caller) -> Json<Value> {
    Json(Value::Array(consumers_in_vhosts(&state, &caller, None)))
}

pub async fn consumers_in(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    visible_vhost(&state, &caller, &vhost)?;
    Ok(Json(Value::Array(consumers_in_vhosts(
        &state,
        &caller,
        Some(&vhost),
    ))))
}

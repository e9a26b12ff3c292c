//! The file as serde reads it: one struct per section or entry, every field optional where the
//! file may leave it out, names and values kept with their spans (`Spanned`) so that the checks
//! can point at them. Unknown keys are refused (`deny_unknown_fields`). Nothing here checks
//! meaning; that is `check.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ConfigDuration, ConfigSize, MemoryLimit};

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listeners: Option<Vec<Spanned<String>>>,
    pub data_dir: Option<String>,
    pub heartbeat: Option<Spanned<ConfigDuration>>,
    pub frame_max: Option<Spanned<u32>>,
    pub channel_max: Option<u16>,
    pub max_connections: Option<u32>,
    pub handshake_timeout: Option<Spanned<ConfigDuration>>,
    pub unacked_timeout: Option<ConfigDuration>,
    pub unacked_timeout_action: Option<TimeoutAction>,
    pub max_message_size: Option<Spanned<ConfigSize>>,
    pub segment_size: Option<Spanned<ConfigSize>>,
    pub queue_memory_window: Option<ConfigSize>,
    /// How often sealed log segments are checked for compaction (hole punching).
    pub compaction_interval: Option<Spanned<ConfigDuration>>,
    pub memory_high_watermark: Option<Spanned<MemoryLimit>>,
    pub disk_free_limit: Option<ConfigSize>,
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<LogFormat>,
    pub tls_listeners: Option<Spanned<Vec<Spanned<String>>>>,
    /// Addresses for the management HTTP API, metrics and dashboard (`[]`: none).
    pub management_listeners: Option<Vec<Spanned<String>>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub tls_verify_peer: Option<Spanned<bool>>,
    /// Users who may connect only from a loopback address (RabbitMQ's `loopback_users`;
    /// default `["guest"]`).
    pub loopback_users: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeoutAction {
    Redeliver,
    CloseChannel,
    Cancel,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[[users]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: Spanned<String>,
    pub password_hash: Option<Spanned<String>>,
    pub hashing_algorithm: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// At most this many connections at once.
    pub max_connections: Option<u32>,
}

/// `[[vhosts]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostEntry {
    pub name: Spanned<String>,
    /// At most this many connections at once.
    pub max_connections: Option<u32>,
    /// At most this many queues.
    pub max_queues: Option<u32>,
}

/// `[[permissions]]`: RabbitMQ's three regular expressions for a user in a vhost.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionEntry {
    pub user: Spanned<String>,
    pub vhost: Option<Spanned<String>>,
    pub configure: Spanned<String>,
    pub write: Spanned<String>,
    pub read: Spanned<String>,
}

/// `[[topic_permissions]]`: RabbitMQ's topic permissions of a user on one topic exchange of a
/// vhost (regular expressions over routing keys; `{username}` and `{vhost}` are expanded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPermissionEntry {
    pub user: Spanned<String>,
    pub vhost: Option<Spanned<String>>,
    pub exchange: Spanned<String>,
    pub write: Spanned<String>,
    pub read: Spanned<String>,
}

/// An `arguments` inline table: each value keeps its span.
pub type Arguments = BTreeMap<String, Spanned<toml::Value>>;

/// `[[exchanges]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeEntry {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub vhost: Option<Spanned<String>>,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Arguments,
}

/// `[[queues]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    pub name: Spanned<String>,
    pub vhost: Option<Spanned<String>>,
    #[serde(default)]
    pub durable: bool,
    pub exclusive: Option<Spanned<bool>>,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Arguments,
}

/// What a binding leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationType {
    #[default]
    Queue,
    Exchange,
}

/// `[[bindings]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingEntry {
    pub source: Spanned<String>,
    pub destination: Spanned<String>,
    #[serde(default)]
    pub destination_type: DestinationType,
    pub vhost: Option<Spanned<String>>,
    pub routing_key: Option<Spanned<String>>,
    #[serde(default)]
    pub arguments: Arguments,
}

/// `[cluster]`: this node in a cluster of Warren nodes (issue 22).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub node_id: Spanned<u64>,
    /// The cluster port's address (default: this node's address in `peers`).
    pub listen: Option<Spanned<String>>,
    /// Every node of the cluster, this one included.
    pub peers: Spanned<Vec<PeerEntry>>,
}

/// One of `[cluster] peers`: `{ id = 2, address = "10.0.0.2:25672" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub id: u64,
    pub address: String,
}

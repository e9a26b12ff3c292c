//! The definitions document as RabbitMQ 3.10 writes it (`rabbitmqctl export_definitions`,
//! `GET /api/definitions`): plain serde data, no broker types. Reading is lenient where
//! RabbitMQ's own files vary (tags as a list or a comma-separated string, vhost limits as a map
//! or a list of pairs, fields left out); unknown top-level keys are kept so that the import can
//! warn about them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A whole definitions document. A list that is `None` was not in the document (the per-vhost
/// export has no users, vhosts or permissions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhosts: Option<Vec<VhostDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<PermissionDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_permissions: Option<Vec<TopicPermissionDef>>,
    /// Runtime parameters (`component`, `name`, `value`, `vhost`); Warren acts only on the
    /// `vhost-limits` component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_parameters: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<QueueDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchanges: Option<Vec<ExchangeDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<Vec<BindingDef>>,
    /// Keys Warren does not know (kept for the import's warnings, written back as they were).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    /// A clear-text password instead of a hash (hand-written files; never exported).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(default = "sha256_algorithm")]
    pub hashing_algorithm: String,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub limits: Map<String, Value>,
}

/// RabbitMQ's name of the only hashing Warren reads.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

fn sha256_algorithm() -> String {
    SHA256.to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostDef {
    pub name: String,
    /// `[["max-connections", 50], …]` as 3.10 writes it, or `{"max-connections": 50}`.
    #[serde(default)]
    pub limits: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// `classic` (3.10 writes it; `quorum` and `stream` are not Warren's).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    pub source: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

fn default_vhost() -> String {
    "/".to_owned()
}

fn yes() -> bool {
    true
}

/// User tags: a list (3.10) or a comma-separated string (before 3.9); empty parts dropped.
fn tags<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Text(String),
    }
    let list = match Option::<Tags>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Tags::List(list)) => list,
        Some(Tags::Text(text)) => text.split(',').map(|t| t.trim().to_owned()).collect(),
    };
    Ok(list.into_iter().filter(|t| !t.is_empty()).collect())
}

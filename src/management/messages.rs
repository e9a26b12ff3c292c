//! Test messages from the API: `POST /api/exchanges/{vhost}/{name}/publish` (one publish, the
//! same call a channel makes) and `POST /api/queues/{vhost}/{name}/get` (takes messages as
//! `basic.get` does, then requeues, acks or rejects them as `ackmode` says). For trying a
//! topology out, not for moving load: no confirms, and a get holds the messages it shows only
//! until it answers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use warren_protocol::content::{encode_properties, publish_checks, ContentHeader};
use warren_protocol::spec::BasicProperties;
use warren_protocol::types::ShortString;

use super::auth::Caller;
use super::lookup::{exchange_name, vhost_or_404, API_CONNECTION};
use super::reply::{self, parse_body, table_json, text, ApiError, ApiResult};
use super::Management;
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::ChannelCredit;
use crate::broker::vhost::PublishScratch;

/// At most this many messages per get (RabbitMQ has no bound; one is needed).
const MAX_GET: u64 = 10_000;

fn short(value: &Value, name: &str) -> ApiResult<Option<ShortString>> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ShortString::try_new(s.as_str()).map(Some).map_err(|_| {
            ApiError::bad_request(format!("properties.{name}: longer than 255 bytes"))
        }),
        Some(other) => Err(ApiError::bad_request(format!(
            "properties.{name}: expected a string, got {other}"
        ))),
    }
}

fn octet(value: &Value, name: &str) -> ApiResult<Option<u8>> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("properties.{name}: expected 0 to 255"))),
    }
}

/// The properties of a publish request, as RabbitMQ's management reads them.
fn properties(value: &Value) -> ApiResult<BasicProperties> {
    let mut props = BasicProperties::default();
    if let Some(v) = short(value, "content_type")? {
        props = props.with_content_type(v);
    }
    if let Some(v) = short(value, "content_encoding")? {
        props = props.with_content_encoding(v);
    }
    if let Some(v) = octet(value, "delivery_mode")? {
        props = props.with_delivery_mode(v);
    }
    if let Some(v) = octet(value, "priority")? {
        props = props.with_priority(v);
    }
    for (name, set) in [
        (
            "correlation_id",
            BasicProperties::with_correlation_id as fn(_, _) -> _,
        ),
        ("reply_to", BasicProperties::with_reply_to),
        ("expiration", BasicProperties::with_expiration),
        ("message_id", BasicProperties::with_message_id),
        ("type", BasicProperties::with_type),
        ("user_id", BasicProperties::with_user_id),
        ("app_id", BasicProperties::with_app_id),
    ] {
        if let Some(v) = short(value, name)? {
            props = set(props, v);
        }
    }
    if let Some(ts) = value.get("timestamp").and_then(Value::as_u64) {
        props = props.with_timestamp(ts);
    }
    if let Some(headers) = value.get("headers").filter(|h| !h.is_null()) {
        let table = reply::json_table(Some(headers)).map_err(ApiError::bad_request)?;
        props = props.with_headers(table);
    }
    Ok(props)
}

pub async fn publish(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let body = parse_body(&body)?;
    let routing_key = text(&body, "routing_key", "")?;
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    let payload = text(&body, "payload", "")?;
    let payload = match text(&body, "payload_encoding", "string")? {
        "string" => Bytes::copy_from_slice(payload.as_bytes()),
        "base64" => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|e| ApiError::bad_request(format!("payload: not base64 ({e})")))?,
        ),
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding: '{other}' is neither 'string' nor 'base64'"
            )))
        }
    };
    let empty = Value::Object(Map::new());
    let props = encode_properties(&properties(body.get("properties").unwrap_or(&empty))?);
    let checks = publish_checks(&props);
    let ttl = match checks.expiration {
        None => None,
        Some(text) => Some(
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("properties.expiration: not a number of ms")
                })?,
        ),
    };
    let stamp = Stamp {
        persistent: checks.delivery_mode == Some(2),
        ttl,
        priority: checks.priority.unwrap_or(0),
    };
    let exchange = exchange_name(&name)?;
    handle.check_publish(exchange.as_bytes())?;
    let message = Arc::new(Message::new(
        exchange.as_bytes(),
        routing_key.as_bytes(),
        &props,
        payload,
    ));
    let mut scratch = PublishScratch::default();
    let routed = handle.publish(&message, stamp, &mut scratch)?;
    for queue in scratch.unflushed.drain(..) {
        if let Err(e) = queue.flush_log() {
            return Err(ApiError::internal(format!(
                "writing the message failed: {e}"
            )));
        }
    }
    Ok(Json(json!({ "routed": routed.routed })))
}

/// A message's properties as RabbitMQ's management shows them.
fn properties_json(raw: &[u8]) -> Value {
    let header = ContentHeader {
        class_id: 60,
        body_size: 0,
        properties: Bytes::copy_from_slice(raw),
    };
    let Ok(props) = header.decode_properties() else {
        return json!({});
    };
    let mut out = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(name.to_owned(), value);
        }
    };
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| json!(s.as_str()));
    put("content_type", text(props.content_type()));
    put("content_encoding", text(props.content_encoding()));
    put("headers", props.headers().as_ref().map(table_json));
    put("delivery_mode", props.delivery_mode().map(|v| json!(v)));
    put("priority", props.priority().map(|v| json!(v)));
    put("correlation_id", text(props.correlation_id()));
    put("reply_to", text(props.reply_to()));
    put("expiration", text(props.expiration()));
    put("message_id", text(props.message_id()));
    put("timestamp", props.timestamp().map(|v| json!(v)));
    put("type", text(props.kind()));
    put("user_id", text(props.user_id()));
    put("app_id", text(props.app_id()));
    Value::Object(out)
}

pub async fn get_messages(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let body = parse_body(&body)?;
    let count = body
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .min(MAX_GET);
    let ackmode = text(&body, "ackmode", "ack_requeue_true")?.to_owned();
    let encoding = text(&body, "encoding", "auto")?.to_owned();
    let truncate = body.get("truncate").and_then(Value::as_u64);
    let (requeue, reject) = match ackmode.as_str() {
        "ack_requeue_true" | "reject_requeue_true" => (true, false),
        "ack_requeue_false" => (false, false),
        "reject_requeue_false" => (false, true),
        other => {
            return Err(ApiError::bad_request(format!(
                "ackmode: unknown mode '{other}'"
            )))
        }
    };
    let queue = handle.queue(&super::lookup::short(&name, "queue")?, API_CONNECTION)?;
    let taker = Arc::new(ChannelCredit::default());
    let mut taken = Vec::new();
    let mut shown = Vec::new();
    for _ in 0..count {
        let Some((entry, left)) = queue.get(false, &taker) else {
            break;
        };
        handle.activity().touched(&queue);
        let message = &entry.message;
        let body = message.body();
        let cut = truncate.map_or(body.len(), |t| body.len().min(t as usize));
        let (payload, as_text) = match (encoding.as_str(), std::str::from_utf8(&body[..cut])) {
            ("auto", Ok(text)) => (text.to_owned(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(&body[..cut]),
                "base64",
            ),
        };
        shown.push(json!({
            "payload_bytes": body.len(),
            "redelivered": entry.redelivered,
            "exchange": message.exchange(),
            "routing_key": message.routing_key(),
            "message_count": left,
            "properties": properties_json(message.properties()),
            "payload": payload,
            "payload_encoding": as_text,
        }));
        taken.push(entry);
    }
    match (requeue, reject) {
        (true, _) => queue.requeue(taken),
        (false, true) => handle.reject(&queue, taken),
        (false, false) => queue.settle(taken),
    }
    Ok(Json(Value::Array(shown)))
}

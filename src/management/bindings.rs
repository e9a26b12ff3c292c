//! `/api/bindings`: list (all, per vhost, per queue, per exchange as source or destination),
//! create (`POST`, answered with a `Location` ending in the binding's properties key) and
//! delete (by properties key), as `queue.bind` / `exchange.bind` and their unbinds do them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::auth::Caller;
use super::lookup::{exchange_name, vhost_or_404, visible_vhost, API_CONNECTION};
use super::reply::{self, parse_body, table_json, text, ApiError, ApiResult};
use super::{percent_encode, Management};
use crate::broker::exchange::{encode_arguments, Destination};
use crate::broker::vhost::BindingSnapshot as BindingInfo;

/// RabbitMQ's properties key: the routing key (quoted; `~` when empty), then, with arguments,
/// `~` and a short hash of them.
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    let key = match routing_key.is_empty() {
        true => "~".to_owned(),
        false => quote_plus(routing_key),
    };
    if arguments.inner().is_empty() {
        return key;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    encode_arguments(arguments).hash(&mut hasher);
    let hash = (hasher.finish() as u32).to_be_bytes();
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash);
    format!("{key}~{hash}")
}

/// Form-style quoting: unreserved characters as they are, space as `+`, the rest `%XX`.
fn quote_plus(text: &str) -> String {
    percent_encode(text).replace("%20", "+")
}

pub fn binding_json(vhost: &str, binding: &BindingInfo) -> Value {
    let (destination, kind) = match &binding.destination {
        Destination::Queue(name) => (name.as_str(), "queue"),
        Destination::Exchange(name) => (name.as_str(), "exchange"),
    };
    json!({
        "source": binding.source.as_str(),
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": binding.routing_key.as_str(),
        "arguments": table_json(&binding.arguments),
        "properties_key": properties_key(binding.routing_key.as_str(), &binding.arguments),
    })
}

/// Every binding of the vhosts the caller sees (or of one), filtered.
fn bindings(
    state: &Management,
    caller: &Caller,
    vhost: Option<&str>,
    keep: impl Fn(&BindingInfo) -> bool,
) -> ApiResult<Vec<Value>> {
    let found = infos(state, caller, vhost, keep)?;
    Ok(found.iter().map(|(v, b)| binding_json(v, b)).collect())
}

fn infos(
    state: &Management,
    caller: &Caller,
    vhost: Option<&str>,
    keep: impl Fn(&BindingInfo) -> bool,
) -> ApiResult<Vec<(String, BindingInfo)>> {
    let names = match vhost {
        Some(name) => vec![visible_vhost(state, caller, name)?.name.clone()],
        None => state.broker.vhost_names(),
    };
    let mut out = Vec::new();
    for name in names.iter().filter(|name| caller.sees(state, name)) {
        let Some(handle) = state.broker.vhost(name) else {
            continue;
        };
        let mut found = handle.binding_infos();
        found.retain(&keep);
        found.sort_by(|a, b| {
            (a.source.as_bytes(), a.routing_key.as_bytes())
                .cmp(&(b.source.as_bytes(), b.routing_key.as_bytes()))
        });
        out.extend(found.into_iter().map(|b| (name.clone(), b)));
    }
    Ok(out)
}

pub async fn all(State(state): State<Arc<Management>>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(bindings(&state, &caller, None, |_| {
        true
    })?)))
}

pub async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(bindings(
        &state,
        &caller,
        Some(&vhost),
        |_| true,
    )?)))
}

pub async fn of_queue(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let handle = visible_vhost(&state, &caller, &vhost)?;
    handle.queue_named(&name).ok_or_else(ApiError::not_found)?;
    let to =
        |b: &BindingInfo| matches!(&b.destination, Destination::Queue(q) if q.as_str() == name);
    Ok(Json(Value::Array(bindings(
        &state,
        &caller,
        Some(&vhost),
        to,
    )?)))
}

pub async fn from_exchange(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let source = exchange_name(&name)?;
    let handle = visible_vhost(&state, &caller, &vhost)?;
    handle
        .exchange_info(source.as_str())
        .ok_or_else(ApiError::not_found)?;
    let from = |b: &BindingInfo| b.source == source.as_str();
    Ok(Json(Value::Array(bindings(
        &state,
        &caller,
        Some(&vhost),
        from,
    )?)))
}

pub async fn to_exchange(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let handle = visible_vhost(&state, &caller, &vhost)?;
    handle
        .exchange_info(&name)
        .ok_or_else(ApiError::not_found)?;
    let to =
        |b: &BindingInfo| matches!(&b.destination, Destination::Exchange(x) if x.as_str() == name);
    Ok(Json(Value::Array(bindings(
        &state,
        &caller,
        Some(&vhost),
        to,
    )?)))
}

/// The destination a path names: `q` a queue, `e` an exchange.
fn destination(kind: &str, name: &str) -> ApiResult<Destination> {
    if name.len() > 255 {
        return Err(ApiError::bad_request(
            "destination name is longer than 255 bytes",
        ));
    }
    let name = ShortStr::copy_from_str(name);
    match kind {
        "q" => Ok(Destination::Queue(name)),
        "e" => Ok(Destination::Exchange(name)),
        _ => Err(ApiError::not_found()),
    }
}

type BindingPath = (String, String, String, String);

/// The bindings from `source` to the destination a path names.
fn between_list(
    state: &Management,
    caller: &Caller,
    (vhost, source, kind, name): &BindingPath,
) -> ApiResult<Vec<(String, BindingInfo)>> {
    let source = exchange_name(source)?;
    let target = destination(kind, name)?;
    let handle = visible_vhost(state, caller, vhost)?;
    handle
        .exchange_info(source.as_str())
        .ok_or_else(ApiError::not_found)?;
    let exists = match &target {
        Destination::Queue(q) => handle.queue_named(q.as_str()).is_some(),
        Destination::Exchange(x) => handle.exchange_info(x.as_str()).is_some(),
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    infos(state, caller, Some(vhost), |b| {
        b.source == source.as_str() && b.destination == target
    })
}

pub async fn between(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(path): Path<BindingPath>,
) -> ApiResult<Json<Value>> {
    let found = between_list(&state, &caller, &path)?;
    let shown = found.iter().map(|(v, b)| binding_json(v, b)).collect();
    Ok(Json(Value::Array(shown)))
}

pub async fn create(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, name)): Path<BindingPath>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let body = parse_body(&body)?;
    let routing_key = text(&body, "routing_key", "")?;
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    let arguments = reply::json_table(body.get("arguments")).map_err(ApiError::bad_request)?;
    handle.bind(
        &exchange_name(&source)?,
        destination(&kind, &name)?,
        ShortStr::copy_from_str(routing_key),
        &arguments,
        API_CONNECTION,
    )?;
    let location = format!(
        "{}/{}",
        percent_encode(&name),
        percent_encode(&properties_key(routing_key, &arguments))
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// The binding a path's properties key names.
fn find(
    state: &Management,
    caller: &Caller,
    path: &BindingPath,
    props: &str,
) -> ApiResult<BindingInfo> {
    let found = between_list(state, caller, path)?;
    found
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| properties_key(b.routing_key.as_str(), &b.arguments) == props)
        .ok_or_else(ApiError::not_found)
}

pub async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, name, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let binding = find(
        &state,
        &caller,
        &(vhost.clone(), source, kind, name),
        &props,
    )?;
    Ok(Json(binding_json(&vhost, &binding)))
}

pub async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, name, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let path = (vhost, source, kind, name);
    let binding = find(&state, &caller, &path, &props)?;
    let (vhost, source, kind, name) = path;
    let handle = vhost_or_404(&state, &vhost)?;
    handle.unbind(
        &exchange_name(&source)?,
        destination(&kind, &name)?,
        ShortStr::copy_from_str(&binding.routing_key),
        &binding.arguments,
        API_CONNECTION,
    )?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

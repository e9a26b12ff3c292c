//! `/api/exchanges`: list, show, declare (PUT) and delete, as `exchange.declare` /
//! `exchange.delete` do them. Publishing from the API is in `messages.rs`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::listing::{list, ListQuery, Named};
use super::lookup::{exchange_name, vhost_or_404, visible_vhost};
use super::reply::{self, created_or_not, flag, parse_body, table_json, text, ApiError, ApiResult};
use super::Management;
use crate::broker::vhost::ExchangeDeclare;
use crate::broker::vhost::ExchangeSnapshot as ExchangeInfo;

pub struct Listed {
    vhost: String,
    exchange: ExchangeInfo,
}

impl Named for Listed {
    fn vhost(&self) -> &str {
        &self.vhost
    }
    fn name(&self) -> &str {
        self.exchange.name.as_str()
    }
}

pub fn exchange_json(vhost: &str, exchange: &ExchangeInfo) -> Value {
    json!({
        "name": exchange.name.as_str(),
        "vhost": vhost,
        "type": exchange.kind.name(),
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": table_json(&exchange.arguments),
        "user_who_performed_action": "rmq-internal",
    })
}

fn listed(state: &Management, caller: &Caller, vhost: Option<&str>) -> ApiResult<Vec<Listed>> {
    let names = match vhost {
        Some(name) => vec![visible_vhost(state, caller, name)?.name.clone()],
        None => state.broker.vhost_names(),
    };
    let mut items = Vec::new();
    for name in names.iter().filter(|name| caller.sees(state, name)) {
        let Some(handle) = state.broker.vhost(name) else {
            continue;
        };
        items.extend(handle.exchange_infos().into_iter().map(|exchange| Listed {
            vhost: name.clone(),
            exchange,
        }));
    }
    Ok(items)
}

pub async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = listed(&state, &caller, None)?;
    Ok(Json(list(items, &query, |l| {
        exchange_json(&l.vhost, &l.exchange)
    })?))
}

pub async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = listed(&state, &caller, Some(&vhost))?;
    Ok(Json(list(items, &query, |l| {
        exchange_json(&l.vhost, &l.exchange)
    })?))
}

pub async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let handle = visible_vhost(&state, &caller, &vhost)?;
    let exchange = handle
        .exchange_info(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(exchange_json(&vhost, &exchange)))
}

pub async fn put(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let body = parse_body(&body)?;
    if name.starts_with("amq.") {
        return Err(ApiError::forbidden(format!(
            "exchange name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    let kind = text(&body, "type", "")?;
    if kind.is_empty() {
        return Err(ApiError::bad_request("type: an exchange needs a type"));
    }
    let existed = handle.exchange_info(&name).is_some();
    let declare = ExchangeDeclare {
        name: exchange_name(&name)?,
        kind: kind.to_owned(),
        passive: false,
        durable: flag(&body, "durable", false)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments: reply::json_table(body.get("arguments")).map_err(ApiError::bad_request)?,
    };
    handle.declare_exchange(declare)?;
    Ok(created_or_not(!existed))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

pub async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    handle
        .exchange_info(&name)
        .ok_or_else(ApiError::not_found)?;
    handle.delete_exchange(
        &exchange_name(&name)?,
        query.if_unused.as_deref() == Some("true"),
    )?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

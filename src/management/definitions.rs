//! `/api/definitions[/{vhost}]`: RabbitMQ's definitions document, exported (GET) and imported
//! (POST), through [`crate::definitions`]; administrators only. An import that fails its checks
//! changes nothing and answers 400 with every problem.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::auth::Caller;
use super::lookup::vhost_or_404;
use super::reply::{ApiError, ApiResult};
use super::Management;
use crate::definitions::{self, DefinitionsError};

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn export(State(state): State<Arc<Management>>, caller: Caller) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let defs = definitions::export(&state.broker, &state.users);
    Ok(json_response(definitions::to_json(&defs)))
}

pub async fn export_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let defs = definitions::export_vhost(&state.broker, &state.users, &vhost)
        .ok_or_else(ApiError::not_found)?;
    Ok(json_response(definitions::to_json(&defs)))
}

async fn import_body(state: &Management, caller: &Caller, body: &[u8]) -> ApiResult<Response> {
    let defs = definitions::from_json(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let warnings =
        definitions::import(&state.broker, &state.users, &defs).map_err(|e| match e {
            DefinitionsError::Apply(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        })?;
    state.accounts.imported(&defs, &state.users);
    definitions::accounts::replicate_import(&state.broker, &state.users, &defs)
        .await
        .map_err(|e| ApiError::internal(format!("imported on this node only: {e}")))?;
    for warning in &warnings {
        tracing::warn!(user = %caller.name, "definitions import: {warning}");
    }
    tracing::info!(user = %caller.name, warnings = warnings.len(), "definitions imported (management API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn import(
    State(state): State<Arc<Management>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    import_body(&state, &caller, &body).await
}

/// An import into one vhost: items without a `vhost` field go there.
pub async fn import_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    vhost_or_404(&state, &vhost)?;
    let mut document: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    for list in ["queues", "exchanges", "bindings"] {
        if let Some(items) = document.get_mut(list).and_then(|v| v.as_array_mut()) {
            for item in items.iter_mut().filter_map(|i| i.as_object_mut()) {
                item.insert("vhost".into(), serde_json::Value::String(vhost.clone()));
            }
        }
    }
    let body = serde_json::to_vec(&document).map_err(|e| ApiError::internal(e.to_string()))?;
    import_body(&state, &caller, &body).await
}

//! `/api/vhosts`, `/api/users`, `/api/permissions`: list, show, create or change (PUT) and
//! delete. Every change goes through [`accounts::change`]: on a cluster it is written to the
//! metadata group first and every node makes it; users and permissions change through
//! [`crate::server::Users`]' one-at-a-time edits (open connections re-check; a deleted user's
//! connections close, as on a reload); vhosts through the broker. Reading users, and every
//! change here, is for administrators.
//!
//! Every change made here is recorded in the data directory ([`Overlay`]) and applied over the
//! configuration file's accounts at start and after each reload.
//!
//! [`Overlay`]: crate::definitions::overlay::Overlay

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::Caller;
use super::lookup::vhost_or_404;
use super::reply::{created_or_not, parse_body, rate, text, ApiError, ApiResult};
use super::Management;
use crate::broker::quorum::accounts::AccountChange;
use crate::definitions::{accounts, users};
use crate::server::{Password, Permission, User};

/// Makes an account change (on every node of a cluster).
async fn change(state: &Management, change: AccountChange) -> ApiResult<()> {
    accounts::change(&state.broker, &state.users, &state.accounts, change)
        .await
        .map_err(ApiError::internal)
}

fn vhost_json(state: &Management, name: &str) -> Value {
    let (mut ready, mut unacked) = (0, 0);
    if let Some(vhost) = state.broker.vhost(name) {
        for queue in vhost.queues() {
            let stats = queue.stats();
            ready += stats.ready;
            unacked += stats.unacked;
        }
    }
    json!({
        "name": name,
        "description": if name == "/" { "Default virtual host" } else { "" },
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "tracing": false,
        "cluster_state": { state.node.clone(): "running" },
        "messages": ready + unacked, "messages_details": rate(0.0),
        "messages_ready": ready, "messages_ready_details": rate(0.0),
        "messages_unacknowledged": unacked, "messages_unacknowledged_details": rate(0.0),
    })
}

pub async fn vhosts(State(state): State<Arc<Management>>, caller: Caller) -> Json<Value> {
    let mut names = state.broker.vhost_names();
    names.retain(|name| caller.sees(&state, name));
    names.sort();
    Json(Value::Array(
        names.iter().map(|n| vhost_json(&state, n)).collect(),
    ))
}

pub async fn vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    super::lookup::visible_vhost(&state, &caller, &name)?;
    Ok(Json(vhost_json(&state, &name)))
}

pub async fn put_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("a vhost name is 1 to 255 bytes"));
    }
    let existed = state.broker.vhost(&name).is_some();
    if !existed {
        change(&state, AccountChange::PutVhost(name.clone())).await?;
        tracing::info!(vhost = %name, user = %caller.name, "vhost created (management API)");
    }
    Ok(created_or_not(!existed))
}

pub async fn delete_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    vhost_or_404(&state, &name)?;
    change(&state, AccountChange::DeleteVhost(name.clone())).await?;
    tracing::info!(vhost = %name, user = %caller.name, "vhost deleted (management API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_json(user: &User) -> Value {
    serde_json::to_value(users::user_def(user)).unwrap_or_default()
}

pub async fn users(State(state): State<Arc<Management>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.must_be_admin()?;
    let mut users = state.users.list();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(Value::Array(users.iter().map(user_json).collect())))
}

pub async fn user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.must_be_admin()?;
    let user = state.users.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&user)))
}

/// `tags`: a list, or RabbitMQ's comma-separated string.
fn tags(body: &Value) -> ApiResult<Vec<String>> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request("tags: expected strings")),
        Some(_) => Err(ApiError::bad_request("tags: expected a list or a string")),
    }
}

pub async fn put_user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let body = parse_body(&body)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("a user needs a name"));
    }
    let existing = state.users.user(&name);
    let password = match (body.get("password"), body.get("password_hash")) {
        (Some(Value::String(p)), _) => Password::rabbitmq_hash(users::salt(), p),
        (_, Some(Value::String(h))) if h.is_empty() => String::new(),
        (_, Some(Value::String(h))) => h.clone(),
        _ => match &existing {
            Some(user) => users::password_hash(&user.password),
            None => {
                return Err(ApiError::bad_request(
                    "a new user needs password or password_hash",
                ))
            }
        },
    };
    let algorithm = text(&body, "hashing_algorithm", "rabbit_password_hashing_sha256")?;
    if algorithm != "rabbit_password_hashing_sha256" {
        return Err(ApiError::bad_request(format!(
            "hashing_algorithm: only rabbit_password_hashing_sha256 is supported, not {algorithm}"
        )));
    }
    let password = match password.is_empty() {
        // RabbitMQ's empty hash: the user cannot log in with a password.
        true => Password::Plain(String::from('\u{0}')),
        false => Password::from_rabbitmq_hash(&password).map_err(ApiError::bad_request)?,
    };
    let user = User {
        name: name.clone(),
        password,
        loopback_only: existing.as_ref().is_some_and(|u| u.loopback_only),
        tags: tags(&body)?,
        max_connections: existing.and_then(|u| u.max_connections),
    };
    let created = state.users.user(&name).is_none();
    change(&state, accounts::put_user(&user)).await?;
    tracing::info!(user = %name, by = %caller.name, created, "user set (management API)");
    Ok(created_or_not(created))
}

pub async fn delete_user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    state.users.user(&name).ok_or_else(ApiError::not_found)?;
    change(&state, AccountChange::DeleteUser(name.clone())).await?;
    tracing::info!(user = %name, by = %caller.name, "user deleted (management API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn permission_json(p: &Permission) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure.as_str(),
        "write": p.write.as_str(),
        "read": p.read.as_str(),
    })
}

fn permissions_where(
    state: &Management,
    caller: &Caller,
    keep: impl Fn(&Permission) -> bool,
) -> ApiResult<Json<Value>> {
    caller.must_be_admin()?;
    let found: Vec<Value> = state
        .users
        .permissions()
        .iter()
        .filter(|p| keep(p))
        .map(permission_json)
        .collect();
    Ok(Json(Value::Array(found)))
}

pub async fn permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    permissions_where(&state, &caller, |_| true)
}

pub async fn user_permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    state.users.user(&user).ok_or_else(ApiError::not_found)?;
    permissions_where(&state, &caller, |p| p.user == user)
}

pub async fn vhost_permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    vhost_or_404(&state, &vhost)?;
    permissions_where(&state, &caller, |p| p.vhost == vhost)
}

pub async fn permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.must_be_admin()?;
    let found = state.users.permissions();
    let p = found
        .iter()
        .find(|p| p.user == user && p.vhost == vhost)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(p)))
}

pub async fn put_permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    vhost_or_404(&state, &vhost)?;
    state
        .users
        .user(&user)
        .ok_or_else(|| ApiError::bad_request(format!("no user '{user}'")))?;
    let body = parse_body(&body)?;
    let pattern = |name: &str| -> ApiResult<regex::Regex> {
        let text = text(&body, name, "")?;
        regex::Regex::new(text)
            .map_err(|e| ApiError::bad_request(format!("{name}: invalid regex: {e}")))
    };
    let permission = Permission {
        user: user.clone(),
        vhost: vhost.clone(),
        configure: pattern("configure")?,
        write: pattern("write")?,
        read: pattern("read")?,
    };
    let created = !state
        .users
        .permissions()
        .iter()
        .any(|p| p.user == user && p.vhost == vhost);
    change(&state, accounts::set_permission(&permission)).await?;
    Ok(created_or_not(created))
}

pub async fn delete_permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.must_be_admin()?;
    let found = state
        .users
        .permissions()
        .iter()
        .any(|p| p.user == user && p.vhost == vhost);
    if !found {
        return Err(ApiError::not_found());
    }
    change(&state, AccountChange::ClearPermission { user, vhost }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

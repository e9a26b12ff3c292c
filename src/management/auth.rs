//! Basic authentication with the broker's users, and RabbitMQ's management tags: `management`
//! sees the vhosts it has permissions in, `monitoring` sees every vhost (read only),
//! `administrator` may do everything; a user with none of them (or `policymaker`) may not use
//! the API at all (401, as RabbitMQ answers).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;

use super::reply::ApiError;
use super::Management;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// May see every vhost's objects (administrator or monitoring).
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Whether the caller may see what is in `vhost`.
    pub fn sees(&self, state: &Management, vhost: &str) -> bool {
        self.sees_all() || state.users.grant(&self.name, vhost).1.is_some()
    }

    /// 403 unless the caller is an administrator.
    pub fn must_be_admin(&self) -> Result<(), ApiError> {
        match self.is_admin() {
            true => Ok(()),
            false => Err(ApiError::forbidden(
                "Not administrator user (the administrator tag is required)",
            )),
        }
    }

    /// 403 unless the caller may change things in `vhost` (an administrator, or a management
    /// user with permissions there; the AMQP permissions themselves are not re-checked here).
    pub fn may_manage(&self, state: &Management, vhost: &str) -> Result<(), ApiError> {
        match self.is_admin() || state.users.grant(&self.name, vhost).1.is_some() {
            true => Ok(()),
            false => Err(ApiError::forbidden(format!(
                "access to vhost '{vhost}' refused for user '{}'",
                self.name
            ))),
        }
    }
}

impl FromRequestParts<Arc<Management>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Management>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical())
            .ok_or_else(|| ApiError::internal("no peer address"))?;
        let (name, password) =
            basic_credentials(parts).ok_or_else(|| ApiError::unauthorized("Not_Authorized"))?;
        let Some(user) = state.users.check_password(&name, &password, peer) else {
            tracing::info!(user = %name, %peer, "management API login refused");
            return Err(ApiError::unauthorized("Not_Authorized"));
        };
        const MANAGEMENT: [&str; 3] = ["administrator", "monitoring", "management"];
        if !user.tags.iter().any(|t| MANAGEMENT.contains(&t.as_str())) {
            return Err(ApiError::unauthorized("Not management user"));
        }
        Ok(Caller {
            name: user.name,
            tags: user.tags,
        })
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

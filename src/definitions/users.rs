//! Users, permissions and topic permissions between the [`Users`](crate::server::Users)
//! list and the document: export writes RabbitMQ's salted SHA-256 `password_hash` (a user
//! configured with a plain password gets one with a fresh salt), import reads it back. Pure
//! conversions; the plan decides what to keep.

use std::hash::{BuildHasher, Hasher};

use regex::Regex;
use serde_json::{Map, Value};

use super::model::{PermissionDef, TopicPermissionDef, UserDef, SHA256};
use crate::server::{Password, Permission, TopicPermission, User};

/// A user as the document writes it.
pub fn user_def(user: &User) -> UserDef {
    let mut limits = Map::new();
    if let Some(n) = user.max_connections {
        limits.insert("max-connections".into(), Value::from(n));
    }
    UserDef {
        name: user.name.clone(),
        password_hash: password_hash(&user.password),
        password: None,
        hashing_algorithm: SHA256.into(),
        tags: user.tags.clone(),
        limits,
    }
}

/// The password as a RabbitMQ `password_hash` (base64 of the 4-byte salt and the SHA-256 of
/// salt and password); a plain one is hashed with a fresh salt first.
pub fn password_hash(password: &Password) -> String {
    use base64::Engine as _;
    match password {
        Password::Plain(plain) => Password::rabbitmq_hash(salt(), plain),
        Password::Sha256 { salt, hash } => {
            let mut bytes = salt.to_vec();
            bytes.extend_from_slice(hash);
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
    }
}

/// A fresh 4-byte salt (unique, not secret: std's per-process random hasher keys and the time).
pub fn salt() -> [u8; 4] {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    let bits = hasher.finish();
    [
        bits as u8,
        (bits >> 8) as u8,
        (bits >> 16) as u8,
        (bits >> 24) as u8,
    ]
}

/// What the document says of a user: `Ok(None)` with a reason when it is skipped (another
/// hashing algorithm, no password at all); `Err` when it is wrong. `existing` keeps its
/// `loopback_only`; a new user is loopback-only if it is `guest` (RabbitMQ's
/// `loopback_users`).
pub fn user_from_def(
    def: &UserDef,
    existing: Option<&User>,
) -> Result<Result<User, String>, String> {
    let name = &def.name;
    if def.hashing_algorithm != SHA256 {
        return Ok(Err(format!(
            "user '{name}' skipped: hashing algorithm '{}' is not supported (only {SHA256})",
            def.hashing_algorithm
        )));
    }
    let password = match (def.password_hash.is_empty(), &def.password) {
        (false, _) => Password::from_rabbitmq_hash(&def.password_hash)
            .map_err(|e| format!("user '{name}': password_hash is {e}"))?,
        (true, Some(plain)) => Password::Plain(plain.clone()),
        (true, None) => {
            return Ok(Err(format!(
                "user '{name}' skipped: it has no password (Warren has no password-less users)"
            )))
        }
    };
    Ok(Ok(User {
        name: name.clone(),
        password,
        loopback_only: existing.map_or(name == "guest", |u| u.loopback_only),
        tags: def.tags.clone(),
        max_connections: max_connections(&def.limits, &format!("user '{name}'"))?,
    }))
}

/// `max-connections` of a limits object (RabbitMQ: a negative value is no limit).
pub fn max_connections(limits: &Map<String, Value>, whose: &str) -> Result<Option<u32>, String> {
    limit(limits.get("max-connections"), whose, "max-connections")
}

/// One limit's value: an integer; negative is no limit.
pub fn limit(value: Option<&Value>, whose: &str, name: &str) -> Result<Option<u32>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.as_i64() {
        Some(n) if n < 0 => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| format!("{whose}: limit '{name}' {n} is too large")),
        None => Err(format!(
            "{whose}: limit '{name}' must be an integer (got {value})"
        )),
    }
}

pub fn permission_def(p: &Permission) -> PermissionDef {
    PermissionDef {
        user: p.user.clone(),
        vhost: p.vhost.clone(),
        configure: p.configure.as_str().to_owned(),
        write: p.write.as_str().to_owned(),
        read: p.read.as_str().to_owned(),
    }
}

pub fn topic_permission_def(p: &TopicPermission) -> TopicPermissionDef {
    TopicPermissionDef {
        user: p.user.clone(),
        vhost: p.vhost.clone(),
        exchange: p.exchange.clone(),
        write: p.write.as_str().to_owned(),
        read: p.read.as_str().to_owned(),
    }
}

fn regex(text: &str, what: &str, whose: &str) -> Result<Regex, String> {
    Regex::new(text)
        .map_err(|e| format!("{whose}: {what} '{text}' is not a regular expression ({e})"))
}

pub fn permission_from_def(def: &PermissionDef) -> Result<Permission, String> {
    let whose = format!("permission of user '{}' in vhost '{}'", def.user, def.vhost);
    Ok(Permission {
        user: def.user.clone(),
        vhost: def.vhost.clone(),
        configure: regex(&def.configure, "configure", &whose)?,
        write: regex(&def.write, "write", &whose)?,
        read: regex(&def.read, "read", &whose)?,
    })
}

/// A topic permission, `{username}` and `{vhost}` expanded as the configuration file's are.
pub fn topic_permission_from_def(def: &TopicPermissionDef) -> Result<TopicPermission, String> {
    let whose = format!(
        "topic permission of user '{}' on exchange '{}' in vhost '{}'",
        def.user, def.exchange, def.vhost
    );
    let expand = |text: &str| {
        text.replace("{username}", &def.user)
            .replace("{vhost}", &def.vhost)
    };
    Ok(TopicPermission {
        user: def.user.clone(),
        vhost: def.vhost.clone(),
        exchange: def.exchange.clone(),
        write: regex(&expand(&def.write), "write", &whose)?,
        read: regex(&expand(&def.read), "read", &whose)?,
    })
}

//! What the configuration grants: RabbitMQ's permissions of a user in a vhost and its topic
//! permissions, as data (their regular expressions compiled). Checked by `access.rs`; kept by
//! the user list (`auth.rs`).

use regex::Regex;

/// What a user may do in a vhost (RabbitMQ's three regular expressions over resource names).
#[derive(Clone, Debug)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: Regex,
    pub write: Regex,
    pub read: Regex,
}

impl Permission {
    /// Every permission on every resource of `vhost` (RabbitMQ's default user's).
    pub fn full(user: &str, vhost: &str) -> Permission {
        let all = Regex::new(".*").unwrap_or_else(|_| unreachable!(".* is a regular expression"));
        Permission {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            configure: all.clone(),
            write: all.clone(),
            read: all,
        }
    }
}

/// RabbitMQ's topic permission: which routing keys a user may publish with (`write`) and bind
/// with (`read`) on one topic exchange of a vhost. The expressions have their `{username}` and
/// `{vhost}` expanded already.
#[derive(Clone, Debug)]
pub struct TopicPermission {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: Regex,
    pub read: Regex,
}

/// A user's permissions in one vhost.
#[derive(Debug)]
pub struct Grant {
    pub permission: Permission,
    /// Its topic permissions in the vhost, by exchange.
    pub topics: Vec<TopicPermission>,
}

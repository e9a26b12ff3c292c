//! Who may do what in a vhost: RabbitMQ's permissions, checked where RabbitMQ checks them.
//!
//! A user has, per vhost, three regular expressions over resource names (exchanges and queues):
//! *configure* (declare, delete), *write* (publish to an exchange, bind a queue or exchange as
//! the destination) and *read* (consume, get, purge a queue, bind from an exchange). Having any
//! permission entry for a vhost is what lets a user open it. Matching is unanchored (write `^…$`
//! to anchor), as RabbitMQ's `re:run`; an empty expression allows nothing; the default exchange
//! is named `amq.default`. *Topic permissions* add, per user, vhost and topic exchange, write and
//! read expressions over routing keys (publish) and binding keys (bind); with none for an
//! exchange, every key is allowed. `{username}` and `{vhost}` in a topic expression stand for the
//! user's and the vhost's names (expanded when the configuration is loaded).
//!
//! [`Access`] is one connection's view: its user's [`Grant`] in its vhost, resolved at
//! `connection.open` and again whenever the users change (a reload), and a small cache of the
//! checks that passed, so that a publisher's steady stream costs a comparison, not a regular
//! expression. Never touches the broker: it answers yes, or the 403 RabbitMQ sends.

use std::sync::Arc;

use regex::Regex;

use super::auth::Users;
use super::permissions::Grant;
#[cfg(test)]
use super::permissions::{Permission, TopicPermission};
use crate::error::Error;

/// The three kinds of permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Configure,
    Write,
    Read,
}

/// What a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Exchange,
    Queue,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        }
    }
}

/// The expression of `grant` for `perm`.
fn regex(grant: &Grant, perm: Perm) -> &Regex {
    match perm {
        Perm::Configure => &grant.permission.configure,
        Perm::Write => &grant.permission.write,
        Perm::Read => &grant.permission.read,
    }
}

/// Whether `re` allows `name`: an empty expression allows nothing (RabbitMQ reads it as `^$`,
/// and names checked are never empty).
fn allows(re: &Regex, name: &str) -> bool {
    !re.as_str().is_empty() && re.is_match(name)
}

/// How many passed checks a connection remembers (RabbitMQ keeps 12 per channel).
const CACHE: usize = 12;

/// One connection's access: its user, its vhost, and what it may do there.
#[derive(Debug)]
pub struct Access {
    users: Users,
    user: String,
    vhost: String,
    /// The users' generation the grant was resolved at.
    generation: u64,
    grant: Option<Arc<Grant>>,
    /// The grant has topic permissions (else no key needs checking).
    topics: bool,
    /// Checks that passed, most recent first.
    passed: Vec<(Perm, Resource, Box<[u8]>)>,
}

impl Access {
    /// The access of `user` to `vhost`; `None` if the user has no permission entry for it
    /// (`connection.open` is refused).
    pub fn open(users: &Users, user: &str, vhost: &str) -> Option<Access> {
        let (generation, grant) = users.grant(user, vhost);
        let grant = grant?;
        Some(Access {
            users: users.clone(),
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            generation,
            topics: !grant.topics.is_empty(),
            grant: Some(grant),
            passed: Vec::new(),
        })
    }

    /// The 530 `connection.open` gets without a permission entry for the vhost.
    pub fn vhost_refused(user: &str, vhost: &str) -> Error {
        Error::NotAllowed(format!(
            "access to vhost '{vhost}' refused for user '{user}'"
        ))
    }

    /// Resolves the grant again if the users changed since (a reload): what the file says now
    /// applies to the next operation. A user whose entry is gone may do nothing.
    #[inline(always)]
    fn refresh(&mut self) {
        if self.users.generation() != self.generation {
            self.reload();
        }
    }

    #[cold]
    #[inline(never)]
    fn reload(&mut self) {
        let (generation, grant) = self.users.grant(&self.user, &self.vhost);
        self.generation = generation;
        self.topics = grant.as_ref().is_some_and(|g| !g.topics.is_empty());
        self.grant = grant;
        self.passed.clear();
    }

    /// Checks `perm` on the exchange or queue `name` (the default exchange, `""`, is checked
    /// as `amq.default`): a 403 channel error naming the resource and the user if refused.
    #[inline]
    pub fn check(&mut self, perm: Perm, resource: Resource, name: &[u8]) -> Result<(), Error> {
        self.refresh();
        let cached = self
            .passed
            .iter()
            .any(|(p, r, n)| *p == perm && *r == resource && **n == *name);
        match cached {
            true => Ok(()),
            false => self.check_uncached(perm, resource, name),
        }
    }

    #[cold]
    fn check_uncached(&mut self, perm: Perm, resource: Resource, name: &[u8]) -> Result<(), Error> {
        let text = String::from_utf8_lossy(name);
        let shown = match (resource, name.is_empty()) {
            (Resource::Exchange, true) => "amq.default",
            _ => &text,
        };
        let allowed = self
            .grant
            .as_ref()
            .is_some_and(|grant| allows(regex(grant, perm), shown));
        if !allowed {
            return Err(Error::AccessRefused(format!(
                "access to {} '{shown}' in vhost '{}' refused for user '{}'",
                resource.name(),
                self.vhost,
                self.user
            )));
        }
        if self.passed.len() == CACHE {
            self.passed.pop();
        }
        self.passed.insert(0, (perm, resource, name.into()));
        Ok(())
    }

    /// Whether the user has topic permissions on `exchange` (only then does a key need
    /// checking, and only if the exchange is a topic exchange).
    #[inline]
    pub fn has_topic_permissions(&mut self, exchange: &[u8]) -> bool {
        self.refresh();
        self.topics && self.has_topic_permissions_for(exchange)
    }

    fn has_topic_permissions_for(&self, exchange: &[u8]) -> bool {
        self.grant.as_ref().is_some_and(|grant| {
            grant
                .topics
                .iter()
                .any(|t| t.exchange.as_bytes() == exchange)
        })
    }

    /// Checks a routing key (`Perm::Write`, a publish) or binding key (`Perm::Read`, a bind) on
    /// the topic exchange `exchange` against the user's topic permissions for it.
    pub fn check_topic(&mut self, perm: Perm, exchange: &[u8], key: &[u8]) -> Result<(), Error> {
        self.refresh();
        let key = String::from_utf8_lossy(key);
        let refused = self.grant.as_ref().is_some_and(|grant| {
            grant
                .topics
                .iter()
                .filter(|t| t.exchange.as_bytes() == exchange)
                .any(|t| {
                    let re = match perm {
                        Perm::Write => &t.write,
                        _ => &t.read,
                    };
                    !allows(re, &key)
                })
        });
        if refused || self.grant.is_none() {
            return Err(Error::AccessRefused(format!(
                "access to topic '{key}' in exchange '{}' in vhost '{}' refused for user '{}'",
                String::from_utf8_lossy(exchange),
                self.vhost,
                self.user
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::{Password, User};

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            password: Password::Plain("x".into()),
            loopback_only: false,
            tags: Vec::new(),
            max_connections: None,
        }
    }

    fn permission(user: &str, vhost: &str, c: &str, w: &str, r: &str) -> Permission {
        Permission {
            user: user.into(),
            vhost: vhost.into(),
            configure: Regex::new(c).unwrap(),
            write: Regex::new(w).unwrap(),
            read: Regex::new(r).unwrap(),
        }
    }

    #[test]
    fn unanchored_expressions_empty_allows_nothing_default_exchange_is_amq_default() {
        let users = Users::with_permissions(
            vec![user("u")],
            vec![permission("u", "/", "^app\\.", "", "amq\\.default|jobs")],
        );
        assert!(Access::open(&users, "u", "other").is_none());
        assert!(Access::open(&users, "nobody", "/").is_none());
        let mut access = Access::open(&users, "u", "/").unwrap();
        assert!(access
            .check(Perm::Configure, Resource::Queue, b"app.q")
            .is_ok());
        let refused = access
            .check(Perm::Configure, Resource::Queue, b"x.app.q")
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "access to queue 'x.app.q' in vhost '/' refused for user 'u'"
        );
        assert!(access.check(Perm::Write, Resource::Exchange, b"").is_err());
        assert!(access.check(Perm::Read, Resource::Exchange, b"").is_ok());
        // Unanchored: "jobs" allows "old-jobs-2".
        assert!(access
            .check(Perm::Read, Resource::Queue, b"old-jobs-2")
            .is_ok());
        // A cached pass does not outlive a change of the users.
        users.replace(vec![user("u")], Vec::new());
        assert!(access
            .check(Perm::Configure, Resource::Queue, b"app.q")
            .is_err());
    }

    #[test]
    fn topic_permissions_only_where_given() {
        let topic = |exchange: &str, w: &str, r: &str| TopicPermission {
            user: "u".into(),
            vhost: "/".into(),
            exchange: exchange.into(),
            write: Regex::new(w).unwrap(),
            read: Regex::new(r).unwrap(),
        };
        let users = Users::with_permissions(
            vec![user("u")],
            vec![permission("u", "/", ".*", ".*", ".*")],
        )
        .with_topic_permissions(vec![topic("events", "^eu\\.", "^eu\\.|^us\\.")]);
        let mut access = Access::open(&users, "u", "/").unwrap();
        assert!(access.has_topic_permissions(b"events"));
        assert!(!access.has_topic_permissions(b"amq.topic"));
        assert!(access.check_topic(Perm::Write, b"events", b"eu.a").is_ok());
        let refused = access
            .check_topic(Perm::Write, b"events", b"us.a")
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "access to topic 'us.a' in exchange 'events' in vhost '/' refused for user 'u'"
        );
        assert!(access.check_topic(Perm::Read, b"events", b"us.#").is_ok());
    }
}

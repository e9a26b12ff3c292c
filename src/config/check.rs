//! The checks of meaning over a parsed file: the server section, users and vhosts here;
//! permissions in `check_permissions.rs`, the topology in `check_topology.rs`. Every problem is collected, none stops the
//! checking; what is built from a file with problems is never used.

use std::collections::HashMap;

use toml::Spanned;

use super::error::{Problem, Source};
use super::model::{UserEntry, VhostEntry};
use super::parse::Parsed;
use super::{check_cluster, check_permissions, check_tls, check_topology, settings, Config};
use crate::broker::vhost::VhostLimits;
use crate::server::{Password, Permission, User, Users};

/// The vhost every broker has.
pub const DEFAULT_VHOST: &str = "/";

/// The one hashing algorithm RabbitMQ's `password_hash` may name here.
const SHA256: &str = "rabbit_password_hashing_sha256";

pub(super) fn check(source: &Source<'_>, parsed: Parsed, problems: &mut Vec<Problem>) -> Config {
    let mut warnings = Vec::new();
    let mut server = parsed.server;
    let server_loopback_users = server.loopback_users.take();
    let (tls_listeners, tls) = check_tls::check_tls(source, &mut server, problems);
    let mut settings = settings::check_server(source, server, problems);
    (settings.tls_listeners, settings.tls) = (tls_listeners, tls);
    settings.cluster = check_cluster::check(source, parsed.cluster, problems);
    let file_vhosts = parsed.vhosts.len();
    let vhost_limits = limits_of(&parsed.vhosts);
    let vhosts = check_vhosts(source, parsed.vhosts, problems);
    let file_users = parsed.users.len();
    let mut users = match parsed.users.is_empty() {
        true => Users::default().list(),
        false => check_users(source, parsed.users, problems, &mut warnings),
    };
    let loopback_users = server_loopback_users.unwrap_or_else(|| vec!["guest".to_owned()]);
    for user in &mut users {
        user.loopback_only = loopback_users.contains(&user.name);
    }
    let mut permissions =
        check_permissions::vhosts(source, parsed.permissions, &users, &vhosts, problems);
    if file_users == 0 && !permissions.iter().any(|p| p.user == "guest") {
        // The embedded guest has every permission in `/`, as RabbitMQ's default user.
        permissions.push(Permission::full("guest", DEFAULT_VHOST));
    }
    let topic_permissions =
        check_permissions::topics(source, parsed.topic_permissions, &users, &vhosts, problems);
    check_permissions::warn_unpermitted(source, &users, &permissions, &mut warnings);
    let entries = (parsed.exchanges, parsed.queues, parsed.bindings);
    let topology = check_topology::check(source, &vhosts, entries, problems, &mut warnings);
    Config {
        file: source.name.to_owned(),
        settings,
        users,
        permissions,
        topic_permissions,
        vhosts,
        vhost_limits,
        topology,
        warnings,
        file_users,
        file_vhosts,
    }
}

/// Finds a second use of a name: the problem names the first one's line.
pub(super) struct Names {
    what: &'static str,
    seen: HashMap<String, usize>,
}

impl Names {
    pub fn new(what: &'static str) -> Names {
        Names {
            what,
            seen: HashMap::new(),
        }
    }

    /// Records `key`; a problem (at `name`) if it was seen before. `shown` is how the
    /// problem names it.
    pub fn add(
        &mut self,
        source: &Source<'_>,
        key: String,
        name: &Spanned<String>,
        shown: &str,
    ) -> Option<Problem> {
        let line = source.locate(name.span().start).line;
        match self.seen.insert(key, line) {
            None => None,
            Some(first) => {
                let what = self.what;
                Some(source.problem(
                    &name.span(),
                    format!("duplicate {what} {shown} (first declared on line {first})"),
                ))
            }
        }
    }
}

/// The limits the file gives vhosts.
fn limits_of(entries: &[VhostEntry]) -> Vec<(String, VhostLimits)> {
    entries
        .iter()
        .map(|entry| {
            let limits = VhostLimits {
                max_connections: entry.max_connections,
                max_queues: entry.max_queues,
            };
            (entry.name.get_ref().clone(), limits)
        })
        .filter(|(_, limits)| *limits != VhostLimits::default())
        .collect()
}

fn check_vhosts(
    source: &Source<'_>,
    entries: Vec<VhostEntry>,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut vhosts = vec![DEFAULT_VHOST.to_owned()];
    let mut names = Names::new("vhost");
    for entry in entries {
        let name = entry.name.get_ref();
        if name.is_empty() {
            problems.push(source.problem(&entry.name.span(), "vhost name is empty"));
            continue;
        }
        if name != DEFAULT_VHOST {
            let shown = format!("'{name}'");
            problems.extend(names.add(source, name.clone(), &entry.name, &shown));
            vhosts.push(name.clone());
        }
    }
    vhosts.dedup();
    vhosts
}

fn check_users(
    source: &Source<'_>,
    entries: Vec<UserEntry>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<User> {
    let mut users = Vec::new();
    let mut names = Names::new("user");
    for entry in entries {
        let name = entry.name.get_ref().clone();
        if name.is_empty() {
            problems.push(source.problem(&entry.name.span(), "user name is empty"));
            continue;
        }
        problems.extend(names.add(source, name.clone(), &entry.name, &format!("'{name}'")));
        if let Some(algorithm) = &entry.hashing_algorithm {
            if algorithm.get_ref() != SHA256 {
                problems.push(source.problem(
                    &algorithm.span(),
                    format!(
                        "hashing_algorithm: '{}' is not supported (only {SHA256})",
                        algorithm.get_ref()
                    ),
                ));
            }
        }
        let password = match (entry.password_hash, entry.password) {
            (Some(_), Some(plain)) => {
                problems.push(source.problem(
                    &plain.span(),
                    format!("user '{name}' has both password_hash and password: keep one"),
                ));
                continue;
            }
            (None, None) => {
                problems.push(source.problem(
                    &entry.name.span(),
                    format!("user '{name}' has no password_hash (nor password)"),
                ));
                continue;
            }
            (Some(hash), None) => {
                match Password::from_rabbitmq_hash(hash.get_ref()) {
                    Ok(password) => password,
                    Err(why) => {
                        problems.push(source.problem(
                        &hash.span(),
                        format!("password_hash of user '{name}' is not a RabbitMQ SHA-256 hash: {why}"),
                    ));
                        continue;
                    }
                }
            }
            (None, Some(plain)) => {
                warnings.push(source.problem(
                    &plain.span(),
                    format!("user '{name}' has a plain-text password: prefer password_hash (RabbitMQ's salted SHA-256)"),
                ));
                Password::Plain(plain.into_inner())
            }
        };
        users.push(User {
            loopback_only: name == "guest",
            name,
            password,
            tags: entry.tags,
            max_connections: entry.max_connections,
        });
    }
    users
}

/// The vhost an entry names (`/` when it names none); a problem if it is not declared.
pub(super) fn vhost_of(
    source: &Source<'_>,
    vhost: Option<&Spanned<String>>,
    vhosts: &[String],
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let Some(vhost) = vhost else {
        return Some(DEFAULT_VHOST.to_owned());
    };
    if vhosts.contains(vhost.get_ref()) {
        return Some(vhost.get_ref().clone());
    }
    problems.push(source.problem(
        &vhost.span(),
        format!(
            "vhost '{}' is not declared (add [[vhosts]] with name = \"{}\")",
            vhost.get_ref(),
            vhost.get_ref()
        ),
    ));
    None
}

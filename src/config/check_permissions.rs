//! The checks of `[[permissions]]` and `[[topic_permissions]]`: each names a declared user and
//! vhost, at most once, with regular expressions that compile. A user without any permission
//! entry can log in but open no vhost: `check-config` warns of it.

use regex::Regex;
use toml::Spanned;

use super::check::{vhost_of, Names};
use super::error::{Problem, Source};
use super::model::{PermissionEntry, TopicPermissionEntry};
use crate::server::{Permission, TopicPermission, User};

/// Compiles a permission's regular expression; a problem at its span if it does not.
fn regex(
    source: &Source<'_>,
    problems: &mut Vec<Problem>,
    field: &str,
    text: &Spanned<String>,
    expanded: &str,
) -> Option<Regex> {
    match Regex::new(expanded) {
        Ok(regex) => Some(regex),
        Err(e) => {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or_default().trim();
            let why = why.strip_prefix("error: ").unwrap_or(why).to_owned();
            problems.push(source.problem(
                &text.span(),
                format!(
                    "{field}: invalid regular expression '{}': {why}",
                    text.get_ref()
                ),
            ));
            None
        }
    }
}

/// The user an entry names, if declared (else a problem).
fn known_user(
    source: &Source<'_>,
    user: &Spanned<String>,
    users: &[User],
    problems: &mut Vec<Problem>,
) -> bool {
    let name = user.get_ref();
    let known = users.iter().any(|u| &u.name == name);
    if !known {
        problems.push(source.problem(
            &user.span(),
            format!("permissions for user '{name}', who is not declared in [[users]]"),
        ));
    }
    known
}

/// `[[permissions]]`.
pub(super) fn vhosts(
    source: &Source<'_>,
    entries: Vec<PermissionEntry>,
    users: &[User],
    vhosts: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<Permission> {
    let mut permissions = Vec::new();
    let mut seen = Names::new("permission");
    for entry in entries {
        let known = known_user(source, &entry.user, users, problems);
        let vhost = vhost_of(source, entry.vhost.as_ref(), vhosts, problems);
        let mut regex = |field: &str, text: &Spanned<String>| {
            regex(source, problems, field, text, text.get_ref())
        };
        let configure = regex("configure", &entry.configure);
        let write = regex("write", &entry.write);
        let read = regex("read", &entry.read);
        let (Some(vhost), Some(configure), Some(write), Some(read), true) =
            (vhost, configure, write, read, known)
        else {
            continue;
        };
        let user = entry.user.get_ref();
        let shown = format!("for user '{user}' in vhost '{vhost}'");
        problems.extend(seen.add(source, format!("{user}\0{vhost}"), &entry.user, &shown));
        permissions.push(Permission {
            user: user.clone(),
            vhost,
            configure,
            write,
            read,
        });
    }
    permissions
}

/// `[[topic_permissions]]`: `{username}` and `{vhost}` in an expression are replaced by the
/// entry's user and vhost names (not escaped, as RabbitMQ does).
pub(super) fn topics(
    source: &Source<'_>,
    entries: Vec<TopicPermissionEntry>,
    users: &[User],
    vhosts: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<TopicPermission> {
    let mut permissions = Vec::new();
    let mut seen = Names::new("topic permission");
    for entry in entries {
        let known = known_user(source, &entry.user, users, problems);
        let vhost = vhost_of(source, entry.vhost.as_ref(), vhosts, problems);
        let user = entry.user.get_ref();
        let expand = |text: &Spanned<String>| {
            let vhost = vhost.as_deref().unwrap_or_default();
            text.get_ref()
                .replace("{username}", user)
                .replace("{vhost}", vhost)
        };
        let (write, read) = (expand(&entry.write), expand(&entry.read));
        let write = regex(source, problems, "write", &entry.write, &write);
        let read = regex(source, problems, "read", &entry.read, &read);
        let (Some(vhost), Some(write), Some(read), true) = (vhost, write, read, known) else {
            continue;
        };
        let exchange = entry.exchange.get_ref();
        let shown = format!("for user '{user}' on exchange '{exchange}' in vhost '{vhost}'");
        let key = format!("{user}\0{vhost}\0{exchange}");
        problems.extend(seen.add(source, key, &entry.user, &shown));
        permissions.push(TopicPermission {
            user: user.clone(),
            vhost,
            exchange: exchange.clone(),
            write,
            read,
        });
    }
    permissions
}

/// Warns of users that can log in but open no vhost.
pub(super) fn warn_unpermitted(
    source: &Source<'_>,
    users: &[User],
    permissions: &[Permission],
    warnings: &mut Vec<Problem>,
) {
    for user in users {
        if !permissions.iter().any(|p| p.user == user.name) {
            warnings.push(source.whole(format!(
                "user '{}' has no [[permissions]]: it can log in but open no vhost",
                user.name
            )));
        }
    }
}

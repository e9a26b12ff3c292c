//! The plan's users, permissions and topic permissions: each document user added or replaced
//! by name (others kept), each permission set for its (user, vhost), each topic permission
//! for its (user, vhost, exchange). References must name a user and vhost the import leaves.

use super::super::model::Definitions;
use super::super::users::{permission_from_def, topic_permission_from_def, user_from_def};
use super::Checker;
use crate::server::Users;

impl Checker<'_> {
    pub(super) fn users(&mut self, users: &Users, defs: &Definitions) {
        if defs.users.is_none() && defs.permissions.is_none() && defs.topic_permissions.is_none() {
            return;
        }
        let mut list = users.list();
        for def in defs.users.iter().flatten() {
            let existing = list.iter().position(|u| u.name == def.name);
            match user_from_def(def, existing.map(|i| &list[i])) {
                Ok(Ok(user)) => match existing {
                    Some(i) => list[i] = user,
                    None => list.push(user),
                },
                Ok(Err(skipped)) => self.warn(skipped),
                Err(problem) => self.problems.push(problem),
            }
        }
        let known = |user: &str| list.iter().any(|u| u.name == user);
        let mut permissions = users.permissions();
        for def in defs.permissions.iter().flatten() {
            let what = format!("permission of user '{}' in vhost '{}'", def.user, def.vhost);
            if !known(&def.user) {
                self.problems
                    .push(format!("{what}: no user '{}'", def.user));
                continue;
            }
            if !self.known_vhost(&def.vhost, &what) {
                continue;
            }
            match permission_from_def(def) {
                Ok(permission) => {
                    permissions.retain(|p| !(p.user == def.user && p.vhost == def.vhost));
                    permissions.push(permission);
                }
                Err(problem) => self.problems.push(problem),
            }
        }
        let mut topics = users.topic_permissions();
        for def in defs.topic_permissions.iter().flatten() {
            let what = format!(
                "topic permission of user '{}' on exchange '{}' in vhost '{}'",
                def.user, def.exchange, def.vhost
            );
            if !known(&def.user) {
                self.problems
                    .push(format!("{what}: no user '{}'", def.user));
                continue;
            }
            if !self.known_vhost(&def.vhost, &what) {
                continue;
            }
            match topic_permission_from_def(def) {
                Ok(topic) => {
                    topics.retain(|t| {
                        !(t.user == def.user && t.vhost == def.vhost && t.exchange == def.exchange)
                    });
                    topics.push(topic);
                }
                Err(problem) => self.problems.push(problem),
            }
        }
        self.plan.users = Some((list, permissions, topics));
    }
}

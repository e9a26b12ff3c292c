//! Changes to the users one at a time (the management API's PUT and DELETE on users and
//! permissions), and the password check of its Basic authentication. Each change is made under
//! the accounts' write lock and announced as a replacement (see [`Users::replace`]): open
//! connections re-check their grant, and those of a deleted user close.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::auth::Accounts;
use super::{Permission, User, Users};

impl Users {
    /// The user `name` if `password` is theirs and they may come in from `peer` (the loopback
    /// rule applies to HTTP as to AMQP, as in RabbitMQ).
    pub fn check_password(&self, name: &str, password: &str, peer: IpAddr) -> Option<User> {
        let accounts = self.inner.accounts.read();
        let user = accounts.users.iter().find(|u| u.name == name)?;
        let allowed = !user.loopback_only || peer.is_loopback();
        (allowed && user.password.matches(password)).then(|| user.clone())
    }

    /// The user `name`, if there is one.
    pub fn user(&self, name: &str) -> Option<User> {
        let accounts = self.inner.accounts.read();
        accounts.users.iter().find(|u| u.name == name).cloned()
    }

    /// Adds `user`, or replaces the one of that name; true if it is new.
    pub fn put_user(&self, user: User) -> bool {
        self.change(
            |accounts| match accounts.users.iter_mut().find(|u| u.name == user.name) {
                Some(existing) => {
                    *existing = user;
                    false
                }
                None => {
                    accounts.users.push(user);
                    true
                }
            },
        )
    }

    /// Removes the user `name` and their permissions; false if there was none.
    pub fn delete_user(&self, name: &str) -> bool {
        self.change(|accounts| {
            let before = accounts.users.len();
            accounts.users.retain(|u| u.name != name);
            accounts.permissions.retain(|p| p.user != name);
            accounts.topic_permissions.retain(|p| p.user != name);
            accounts.users.len() != before
        })
    }

    /// Sets what `permission.user` may do in `permission.vhost`; true if they had no entry.
    pub fn set_permission(&self, permission: Permission) -> bool {
        self.change(|accounts| {
            let existing = accounts
                .permissions
                .iter_mut()
                .find(|p| p.user == permission.user && p.vhost == permission.vhost);
            match existing {
                Some(existing) => {
                    *existing = permission;
                    false
                }
                None => {
                    accounts.permissions.push(permission);
                    true
                }
            }
        })
    }

    /// Removes `user`'s permissions in `vhost`; false if there were none.
    pub fn clear_permission(&self, user: &str, vhost: &str) -> bool {
        self.change(|accounts| {
            let before = accounts.permissions.len();
            accounts
                .permissions
                .retain(|p| !(p.user == user && p.vhost == vhost));
            accounts
                .topic_permissions
                .retain(|p| !(p.user == user && p.vhost == vhost));
            accounts.permissions.len() != before
        })
    }

    /// Removes every permission in `vhost` (it is being deleted).
    pub fn clear_vhost(&self, vhost: &str) {
        self.change(|accounts| {
            accounts.permissions.retain(|p| p.vhost != vhost);
            accounts.topic_permissions.retain(|p| p.vhost != vhost);
        });
    }

    /// Applies `edit` under the write lock, then announces the change.
    fn change<T>(&self, edit: impl FnOnce(&mut Accounts) -> T) -> T {
        let result = edit(&mut self.inner.accounts.write());
        let generation = self.inner.generation.fetch_add(1, Ordering::Release) + 1;
        self.inner.changed.send_replace(generation);
        result
    }
}

//! The accounts as the cluster's metadata group replicates them: vhosts, users and permissions
//! created, changed or deleted at run time (the management API, a definitions import) on any
//! node. [`AccountChange`] is one such change; [`AccountRecord`] is what the changes leave,
//! the last word on each vhost, user and permission, so that a node restoring a snapshot
//! applies the same state as one that replayed every change.
//!
//! Owns that record; never applies a change (the broker opens and deletes vhosts, the
//! definitions layer changes the users).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::definitions::model::{PermissionDef, UserDef};

/// One change of the accounts, made on one node and applied on all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountChange {
    PutVhost(String),
    /// The vhost and everything in it, its permissions too.
    DeleteVhost(String),
    /// A user as RabbitMQ's definitions have one (its password as a hash).
    PutUser(UserDef),
    /// The user and their permissions.
    DeleteUser(String),
    SetPermission(PermissionDef),
    ClearPermission {
        user: String,
        vhost: String,
    },
}

/// The last word on each vhost, user and permission changed through the cluster (`None`:
/// deleted).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AccountRecord {
    vhosts: BTreeMap<String, bool>,
    users: BTreeMap<String, Option<UserDef>>,
    /// By user, then vhost.
    permissions: BTreeMap<String, BTreeMap<String, Option<PermissionDef>>>,
}

impl AccountRecord {
    pub fn record(&mut self, change: &AccountChange) {
        match change {
            AccountChange::PutVhost(name) => {
                self.vhosts.insert(name.clone(), true);
            }
            AccountChange::DeleteVhost(name) => {
                self.vhosts.insert(name.clone(), false);
                for by_vhost in self.permissions.values_mut() {
                    by_vhost.remove(name);
                }
            }
            AccountChange::PutUser(user) => {
                self.users.insert(user.name.clone(), Some(user.clone()));
            }
            AccountChange::DeleteUser(name) => {
                self.users.insert(name.clone(), None);
                self.permissions.remove(name);
            }
            AccountChange::SetPermission(permission) => {
                self.permissions
                    .entry(permission.user.clone())
                    .or_default()
                    .insert(permission.vhost.clone(), Some(permission.clone()));
            }
            AccountChange::ClearPermission { user, vhost } => {
                self.permissions
                    .entry(user.clone())
                    .or_default()
                    .insert(vhost.clone(), None);
            }
        }
    }

    /// The changes that bring a node to this record: vhosts, then users, then permissions.
    pub fn replay(&self) -> Vec<AccountChange> {
        let vhosts = self.vhosts.iter().map(|(name, present)| match present {
            true => AccountChange::PutVhost(name.clone()),
            false => AccountChange::DeleteVhost(name.clone()),
        });
        let users = self.users.iter().map(|(name, user)| match user {
            Some(user) => AccountChange::PutUser(user.clone()),
            None => AccountChange::DeleteUser(name.clone()),
        });
        let permissions = self.permissions.iter().flat_map(|(user, by_vhost)| {
            by_vhost.iter().map(|(vhost, permission)| match permission {
                Some(permission) => AccountChange::SetPermission(permission.clone()),
                None => AccountChange::ClearPermission {
                    user: user.clone(),
                    vhost: vhost.clone(),
                },
            })
        });
        vhosts.chain(users).chain(permissions).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(user: &str, vhost: &str) -> PermissionDef {
        PermissionDef {
            user: user.into(),
            vhost: vhost.into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: "".into(),
        }
    }

    #[test]
    fn the_last_word_on_each_stands_and_deletes_take_permissions_along() {
        let mut record = AccountRecord::default();
        record.record(&AccountChange::PutVhost("a".into()));
        record.record(&AccountChange::PutVhost("b".into()));
        record.record(&AccountChange::SetPermission(permission("u", "a")));
        record.record(&AccountChange::SetPermission(permission("u", "b")));
        record.record(&AccountChange::SetPermission(permission("w", "b")));
        record.record(&AccountChange::DeleteVhost("b".into()));
        record.record(&AccountChange::DeleteUser("w".into()));
        record.record(&AccountChange::ClearPermission {
            user: "v".into(),
            vhost: "a".into(),
        });
        assert_eq!(
            record.replay(),
            vec![
                AccountChange::PutVhost("a".into()),
                AccountChange::DeleteVhost("b".into()),
                AccountChange::DeleteUser("w".into()),
                AccountChange::SetPermission(permission("u", "a")),
                AccountChange::ClearPermission {
                    user: "v".into(),
                    vhost: "a".into()
                },
            ]
        );
    }
}

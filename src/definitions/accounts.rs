//! Changing the accounts (a vhost, a user, a permission) at run time, in one place for the
//! management API, a definitions import and the cluster: [`change`] writes the change to the
//! cluster's metadata group first when the node is in one (so a change the cluster refused
//! changes nothing), then makes it here; every node of the cluster, this one too, applies it
//! again when its replica of the metadata group applies it ([`apply`], through the broker's
//! [`AccountSink`]), which leaves what is already there as it is.
//!
//! Owns the order of those steps; never decides whether a change is allowed (the API has
//! checked it) and never touches a vhost's contents (the broker opens and deletes vhosts).

use std::sync::Arc;

use super::overlay::Overlay;
use super::users::{permission_def, permission_from_def, user_def, user_from_def};
use crate::broker::quorum::accounts::AccountChange;
use crate::broker::quorum::meta::Change;
use crate::broker::{AccountSink, Broker};
use crate::server::{Permission, User, Users};

/// A change of the accounts, made here and (on a cluster) on every node; `Err` says why it was
/// not made.
pub async fn change(
    broker: &Broker,
    users: &Users,
    overlay: &Overlay,
    change: AccountChange,
) -> Result<(), String> {
    replicate(broker, &change).await?;
    match &change {
        AccountChange::PutVhost(name) => {
            broker
                .add_vhost(name)
                .map_err(|e| format!("cannot create vhost '{name}': {e}"))?;
        }
        AccountChange::DeleteVhost(name) => {
            broker.delete_vhost(name).await;
        }
        _ => {}
    }
    apply(users, overlay, &change);
    Ok(())
}

/// Writes a change to the cluster's metadata group (nothing off a cluster).
pub async fn replicate(broker: &Broker, change: &AccountChange) -> Result<(), String> {
    let Some(node) = broker.cluster() else {
        return Ok(());
    };
    node.change(Change::Account(change.clone()))
        .await
        .map_err(|e| format!("not changed: the cluster did not take the change: {e}"))
}

/// What applies the cluster's account changes on this node.
pub fn sink(users: Users, overlay: Arc<Overlay>) -> AccountSink {
    Box::new(move |change| apply(&users, &overlay, change))
}

/// Applies a change to the users and permissions and records it in the data directory (the
/// broker has made its vhost part).
pub fn apply(users: &Users, overlay: &Overlay, change: &AccountChange) {
    match change {
        AccountChange::PutVhost(name) => overlay.put_vhost(name),
        AccountChange::DeleteVhost(name) => {
            // Dropping its permissions is a change of the users: its open connections close.
            users.clear_vhost(name);
            overlay.delete_vhost(name);
        }
        AccountChange::PutUser(def) => match user_from_def(def, users.user(&def.name).as_ref()) {
            Ok(Ok(user)) => {
                overlay.put_user(&user);
                users.put_user(user);
            }
            Ok(Err(why)) | Err(why) => tracing::warn!("account change not applied: {why}"),
        },
        AccountChange::DeleteUser(name) => {
            users.delete_user(name);
            overlay.delete_user(name);
        }
        AccountChange::SetPermission(def) => match permission_from_def(def) {
            Ok(permission) => {
                overlay.set_permission(&permission);
                users.set_permission(permission);
            }
            Err(why) => tracing::warn!("account change not applied: {why}"),
        },
        AccountChange::ClearPermission { user, vhost } => {
            users.clear_permission(user, vhost);
            overlay.clear_permission(user, vhost);
        }
    }
}

pub fn put_user(user: &User) -> AccountChange {
    AccountChange::PutUser(user_def(user))
}

pub fn set_permission(permission: &Permission) -> AccountChange {
    AccountChange::SetPermission(permission_def(permission))
}

/// Writes the accounts an import brought (made here already) to the cluster's metadata group,
/// for every node to make (nothing off a cluster).
pub async fn replicate_import(
    broker: &Broker,
    users: &Users,
    defs: &super::Definitions,
) -> Result<(), String> {
    if broker.cluster().is_none() {
        return Ok(());
    }
    let vhosts = defs.vhosts.iter().flatten();
    let mut changes: Vec<AccountChange> = vhosts
        .map(|v| AccountChange::PutVhost(v.name.clone()))
        .collect();
    for def in defs.users.iter().flatten() {
        if let Some(user) = users.user(&def.name) {
            changes.push(put_user(&user));
        }
    }
    for def in defs.permissions.iter().flatten() {
        changes.push(AccountChange::SetPermission(def.clone()));
    }
    for change in &changes {
        replicate(broker, change).await?;
    }
    Ok(())
}

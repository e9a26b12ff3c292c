//! Accounts changed at run time (through the management API or a definitions import): users,
//! vhosts and permissions, kept in the data directory (`accounts.json`) so that they outlive a
//! restart, and applied over the configuration file's accounts at start and after every reload
//! (what an operator did on the running broker wins over the file).
//!
//! Owns only that record: each change is written at once (a temporary file, fsync, rename) under
//! one mutex, off the message path (changes are rare). It never decides what a change may be:
//! the API has checked it before it records it. A file that cannot be read is logged and set
//! aside (`accounts.json.unreadable`), never silently dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::model::{PermissionDef, UserDef};
use super::users::{permission_from_def, user_def, user_from_def};
use crate::broker::Broker;
use crate::server::{Permission, User, Users};

/// The record, as written.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Changes {
    /// Users added or changed (the last word on each).
    users: Vec<UserDef>,
    deleted_users: Vec<String>,
    vhosts: Vec<String>,
    deleted_vhosts: Vec<String>,
    permissions: Vec<PermissionDef>,
    /// (user, vhost) pairs whose permission was cleared.
    cleared_permissions: Vec<(String, String)>,
}

/// The run-time account changes of one data directory.
#[derive(Debug)]
pub struct Overlay {
    path: Option<PathBuf>,
    changes: Mutex<Changes>,
}

impl Overlay {
    /// Reads `accounts.json` in `data_dir` (nothing if there is none); `None` for a broker
    /// without a data directory keeps changes in memory only.
    pub fn open(data_dir: Option<&Path>) -> Overlay {
        let path = data_dir.map(|dir| dir.join("accounts.json"));
        let changes = path.as_deref().map(read).unwrap_or_default();
        Overlay {
            path,
            changes: Mutex::new(changes),
        }
    }

    /// Applies the record over what the broker and users hold now (the file's accounts).
    pub fn apply(&self, broker: &Broker, users: &Users) {
        let changes = self.changes.lock().clone();
        for name in &changes.vhosts {
            if let Err(e) = broker.add_vhost(name) {
                error!(vhost = %name, error = %e, "cannot open a vhost made through the API");
            }
        }
        for name in &changes.deleted_vhosts {
            broker.remove_vhost(name);
        }
        let mut list = users.list();
        for def in &changes.users {
            let existing = list.iter().find(|u| u.name == def.name);
            match user_from_def(def, existing) {
                Ok(Ok(user)) => put(&mut list, user),
                Ok(Err(why)) | Err(why) => warn!("accounts.json: {why}"),
            }
        }
        list.retain(|u| !changes.deleted_users.contains(&u.name));
        let mut permissions = users.permissions();
        permissions.retain(|p| {
            !changes.deleted_users.contains(&p.user)
                && !changes.deleted_vhosts.contains(&p.vhost)
                && !changes
                    .cleared_permissions
                    .iter()
                    .any(|(u, v)| *u == p.user && *v == p.vhost)
        });
        for def in &changes.permissions {
            match permission_from_def(def) {
                Ok(permission) => {
                    permissions.retain(|p| !(p.user == def.user && p.vhost == def.vhost));
                    permissions.push(permission);
                }
                Err(why) => warn!("accounts.json: {why}"),
            }
        }
        let topics = users.topic_permissions();
        users.replace_all(list, permissions, topics);
    }

    pub fn put_user(&self, user: &User) {
        self.change(|c| {
            c.users.retain(|u| u.name != user.name);
            c.users.push(user_def(user));
            c.deleted_users.retain(|n| *n != user.name);
        });
    }

    pub fn delete_user(&self, name: &str) {
        self.change(|c| {
            c.users.retain(|u| u.name != name);
            c.permissions.retain(|p| p.user != name);
            c.cleared_permissions.retain(|(u, _)| u != name);
            if !c.deleted_users.iter().any(|n| n == name) {
                c.deleted_users.push(name.to_owned());
            }
        });
    }

    pub fn put_vhost(&self, name: &str) {
        self.change(|c| {
            c.deleted_vhosts.retain(|n| n != name);
            if !c.vhosts.iter().any(|n| n == name) {
                c.vhosts.push(name.to_owned());
            }
        });
    }

    pub fn delete_vhost(&self, name: &str) {
        self.change(|c| {
            c.vhosts.retain(|n| n != name);
            c.permissions.retain(|p| p.vhost != name);
            c.cleared_permissions.retain(|(_, v)| v != name);
            if !c.deleted_vhosts.iter().any(|n| n == name) {
                c.deleted_vhosts.push(name.to_owned());
            }
        });
    }

    pub fn set_permission(&self, permission: &Permission) {
        let def = super::users::permission_def(permission);
        self.change(|c| {
            c.permissions
                .retain(|p| !(p.user == def.user && p.vhost == def.vhost));
            c.cleared_permissions
                .retain(|(u, v)| !(*u == def.user && *v == def.vhost));
            c.permissions.push(def);
        });
    }

    pub fn clear_permission(&self, user: &str, vhost: &str) {
        self.change(|c| {
            c.permissions
                .retain(|p| !(p.user == user && p.vhost == vhost));
            c.cleared_permissions
                .push((user.to_owned(), vhost.to_owned()));
        });
    }

    /// Records what an import brought: its users, vhosts and permissions.
    pub fn imported(&self, defs: &super::Definitions, users: &Users) {
        for def in defs.users.iter().flatten() {
            if let Some(user) = users.user(&def.name) {
                self.put_user(&user);
            }
        }
        for vhost in defs.vhosts.iter().flatten() {
            self.put_vhost(&vhost.name);
        }
        for def in defs.permissions.iter().flatten() {
            if let Ok(permission) = permission_from_def(def) {
                self.set_permission(&permission);
            }
        }
    }

    /// Edits the record and writes it.
    fn change(&self, edit: impl FnOnce(&mut Changes)) {
        let mut changes = self.changes.lock();
        edit(&mut changes);
        if let Some(path) = &self.path {
            if let Err(e) = write(path, &changes) {
                error!(file = %path.display(), error = %e, "cannot save account changes: they will be lost at restart");
            }
        }
    }
}

fn put(list: &mut Vec<User>, user: User) {
    match list.iter_mut().find(|u| u.name == user.name) {
        Some(existing) => *existing = user,
        None => list.push(user),
    }
}

fn read(path: &Path) -> Changes {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Changes::default(),
        Err(e) => {
            error!(file = %path.display(), error = %e, "cannot read account changes");
            return Changes::default();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(changes) => {
            info!(file = %path.display(), "account changes made at run time applied over the configuration");
            changes
        }
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            error!(file = %path.display(), error = %e, moved_to = %aside.display(), "account changes unreadable: set aside");
            let _ = std::fs::rename(path, aside);
            Changes::default()
        }
    }
}

fn write(path: &Path, changes: &Changes) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(changes).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

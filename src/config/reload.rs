//! Reload: on SIGHUP the file is read and checked again; an invalid file changes nothing (its
//! problems are logged). A valid one is applied as a difference against the broker: what is new
//! is declared; what came from the file and is gone from it is deleted (never what clients
//! declared); an entry that would need an existing exchange or queue redeclared with other
//! properties is refused and logged, and the rest applied. Vhosts new in the file are created and
//! those gone from it deleted with their queues; users and permissions are replaced (the
//! connections of a deleted user or vhost are closed with 320); vhost limits and the alarm
//! thresholds are updated; the other server settings need a restart, and the log says so.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::apply::{self, Existing, Owned};
use super::settings::Overrides;
use super::{load, Config, Settings, Topology};
use crate::broker::Broker;
use crate::definitions::overlay::Overlay;
use crate::server::alarms::Thresholds;
use crate::server::{TlsSetup, Users};

/// What a reload needs: the file, the running state, and what the file owns in the broker.
pub struct Reloader {
    pub path: PathBuf,
    pub overrides: Overrides,
    /// The settings in effect (command-line overrides included).
    pub settings: Settings,
    pub vhosts: Vec<String>,
    pub owned: Owned,
    pub broker: Arc<Broker>,
    pub users: Users,
    pub thresholds: Arc<Thresholds>,
    /// The TLS listeners' certificates, reread on every reload (`None`: no TLS listeners).
    pub tls: Option<TlsSetup>,
    /// Account changes made at run time, applied again over the file's after each reload.
    pub accounts: Option<Arc<Overlay>>,
}

/// What one reload did, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub declared: usize,
    pub deleted: usize,
    pub refused: usize,
}

impl Reloader {
    /// Re-reads the file and applies it; `None` if it was invalid (nothing changed).
    pub fn reload(&mut self) -> Option<Outcome> {
        info!(file = %self.path.display(), "reloading the configuration");
        let config = match load(&self.path) {
            Ok(config) => config,
            Err(report) => {
                for problem in &report.problems {
                    error!("{problem}");
                }
                error!(
                    problems = report.problems.len(),
                    "the configuration is invalid: nothing was changed"
                );
                return None;
            }
        };
        for warning in &config.warnings {
            warn!("{warning}");
        }
        self.apply_settings(&config);
        let outcome = self.apply_topology(&config);
        info!(
            declared = outcome.declared,
            deleted = outcome.deleted,
            refused = outcome.refused,
            "configuration reloaded"
        );
        Some(outcome)
    }

    fn apply_settings(&mut self, config: &Config) {
        let mut settings = config.settings.clone();
        settings.override_with(&self.overrides);
        for name in settings.needing_restart(&self.settings) {
            warn!(
                setting = name,
                "server setting changed: it takes effect at the next restart"
            );
        }
        if settings.memory_high_watermark != self.settings.memory_high_watermark {
            self.thresholds
                .memory_high_watermark
                .store(settings.memory_high_watermark, Ordering::Relaxed);
            info!(
                bytes = settings.memory_high_watermark,
                "memory_high_watermark changed"
            );
        }
        if settings.disk_free_limit != self.settings.disk_free_limit {
            self.thresholds
                .disk_free_limit
                .store(settings.disk_free_limit, Ordering::Relaxed);
            info!(bytes = settings.disk_free_limit, "disk_free_limit changed");
        }
        self.reload_tls(&settings);
        self.settings = settings;
        for vhost in config.vhosts.iter().filter(|v| !self.vhosts.contains(v)) {
            match self.broker.add_vhost(vhost) {
                Ok(_) => info!(%vhost, "vhost created"),
                Err(e) => error!(%vhost, error = %e, "creating the vhost failed"),
            }
        }
        for vhost in self.vhosts.iter().filter(|v| !config.vhosts.contains(v)) {
            // Its connections close (320) once the users are replaced below.
            if self.broker.remove_vhost(vhost).is_some() {
                info!(%vhost, "vhost deleted with its queues: its connections are closed");
            }
        }
        self.vhosts = config.vhosts.clone();
        self.users.replace_all(
            config.users.clone(),
            config.permissions.clone(),
            config.topic_permissions.clone(),
        );
        if let Some(accounts) = &self.accounts {
            accounts.apply(&self.broker, &self.users);
        }
        for name in &config.vhosts {
            let Some(vhost) = self.broker.vhost(name) else {
                continue;
            };
            let limits = config
                .vhost_limits
                .iter()
                .find(|(vhost, _)| vhost == name)
                .map_or_else(Default::default, |(_, limits)| *limits);
            if vhost.limits() != limits {
                info!(%name, ?limits, "vhost limits changed");
                vhost.set_limits(limits);
            }
        }
        info!(
            users = config.users.len(),
            permissions = config.permissions.len(),
            "users and permissions replaced"
        );
    }

    /// Rereads the certificate, key and CA (their files may have changed under the same names):
    /// new TLS connections get them; if they cannot be read, the ones in force stay.
    fn reload_tls(&self, settings: &Settings) {
        let (Some(tls), Some(files)) = (&self.tls, &settings.tls) else {
            return;
        };
        match tls.reload(files) {
            Ok(()) => info!(cert = %files.cert.display(), "TLS certificate reloaded"),
            Err(e) => error!(error = %e, "TLS certificate not reloaded: the one in force stays"),
        }
    }

    fn apply_topology(&mut self, config: &Config) -> Outcome {
        let mut outcome = Outcome::default();
        let topology = &config.topology;
        let mut kept = Owned::default();
        self.apply_exchanges(topology, &mut kept, &mut outcome);
        self.apply_queues(topology, &mut kept, &mut outcome);
        self.apply_bindings(topology, &mut kept, &mut outcome);
        outcome.deleted = self.delete_dropped(&kept);
        self.owned = kept;
        outcome
    }

    /// The file's exchanges: missing ones declared, different ones refused (and logged).
    fn apply_exchanges(&self, topology: &Topology, kept: &mut Owned, outcome: &mut Outcome) {
        let broker = &self.broker;
        for def in &topology.exchanges {
            let Some(vhost) = broker.vhost(&def.vhost) else {
                continue;
            };
            match apply::compare_exchange(&vhost, def) {
                Existing::Missing => match apply::declare_exchange(&vhost, def) {
                    Ok(()) => {
                        info!(origin = %def.origin, vhost = %def.vhost, exchange = %def.name, "exchange declared");
                        outcome.declared += 1;
                        kept.exchanges.insert(def.id());
                    }
                    Err(e) => {
                        warn!(origin = %def.origin, error = %e, "exchange not declared");
                        outcome.refused += 1;
                    }
                },
                Existing::Equal => {
                    if self.owned.exchanges.contains(&def.id()) {
                        kept.exchanges.insert(def.id());
                    }
                }
                Existing::Different {
                    declared_as,
                    exists_as,
                    reason,
                } => {
                    let what = format!("exchange '{}' in vhost '{}'", def.name, def.vhost);
                    warn!(
                        "{}",
                        refusal(&def.origin, &what, &declared_as, &exists_as, &reason)
                    );
                    outcome.refused += 1;
                    if self.owned.exchanges.contains(&def.id()) {
                        kept.exchanges.insert(def.id());
                    }
                }
            }
        }
    }

    /// The file's queues: missing ones declared, different ones refused (and logged).
    fn apply_queues(&self, topology: &Topology, kept: &mut Owned, outcome: &mut Outcome) {
        let broker = &self.broker;
        for def in &topology.queues {
            let Some(vhost) = broker.vhost(&def.vhost) else {
                continue;
            };
            match apply::compare_queue(&vhost, def) {
                Existing::Missing => match apply::declare_queue(&vhost, def) {
                    Ok(()) => {
                        info!(origin = %def.origin, vhost = %def.vhost, queue = %def.name, "queue declared");
                        outcome.declared += 1;
                        kept.queues.insert(def.id());
                    }
                    Err(e) => {
                        warn!(origin = %def.origin, error = %e, "queue not declared");
                        outcome.refused += 1;
                    }
                },
                Existing::Equal => {
                    if self.owned.queues.contains(&def.id()) {
                        kept.queues.insert(def.id());
                    }
                }
                Existing::Different {
                    declared_as,
                    exists_as,
                    reason,
                } => {
                    let what = format!("queue '{}' in vhost '{}'", def.name, def.vhost);
                    warn!(
                        "{}",
                        refusal(&def.origin, &what, &declared_as, &exists_as, &reason)
                    );
                    outcome.refused += 1;
                    if self.owned.queues.contains(&def.id()) {
                        kept.queues.insert(def.id());
                    }
                }
            }
        }
    }

    /// The file's bindings: missing ones added.
    fn apply_bindings(&self, topology: &Topology, kept: &mut Owned, outcome: &mut Outcome) {
        let broker = &self.broker;
        for def in &topology.bindings {
            let Some(vhost) = broker.vhost(&def.vhost) else {
                continue;
            };
            if apply::has_binding(&vhost, def) {
                if self.owned.bindings.contains(&def.id()) {
                    kept.bindings.insert(def.id());
                }
                continue;
            }
            match apply::bind(&vhost, def) {
                Ok(()) => {
                    info!(origin = %def.origin, vhost = %def.vhost, source = %def.source, destination = %def.destination, routing_key = %def.routing_key, "binding added");
                    outcome.declared += 1;
                    kept.bindings.insert(def.id());
                }
                Err(e) => {
                    warn!(origin = %def.origin, error = %e, "binding not added");
                    outcome.refused += 1;
                }
            }
        }
    }

    /// Deletes what the file owned and no longer declares: bindings, then queues, then
    /// exchanges. Returns how many went.
    fn delete_dropped(&self, kept: &Owned) -> usize {
        let mut deleted = 0;
        for id in self.owned.bindings.difference(&kept.bindings) {
            let Some(vhost) = self.broker.vhost(&id.vhost) else {
                continue;
            };
            match apply::unbind(&vhost, id) {
                Ok(()) => {
                    info!(vhost = %id.vhost, source = %id.source, destination = %id.destination, routing_key = %id.routing_key, "binding removed (gone from the file)");
                    deleted += 1;
                }
                Err(e) => {
                    warn!(source = %id.source, destination = %id.destination, error = %e, "binding not removed")
                }
            }
        }
        for (vhost_name, name) in self.owned.queues.difference(&kept.queues) {
            let Some(vhost) = self.broker.vhost(vhost_name) else {
                continue;
            };
            match apply::delete_queue(&vhost, name) {
                Ok(messages) => {
                    info!(vhost = %vhost_name, queue = %name, messages, "queue deleted (gone from the file)");
                    deleted += 1;
                }
                Err(e) => {
                    warn!(vhost = %vhost_name, queue = %name, error = %e, "queue not deleted")
                }
            }
        }
        for (vhost_name, name) in self.owned.exchanges.difference(&kept.exchanges) {
            let Some(vhost) = self.broker.vhost(vhost_name) else {
                continue;
            };
            match apply::delete_exchange(&vhost, name) {
                Ok(()) => {
                    info!(vhost = %vhost_name, exchange = %name, "exchange deleted (gone from the file)");
                    deleted += 1;
                }
                Err(e) => {
                    warn!(vhost = %vhost_name, exchange = %name, error = %e, "exchange not deleted")
                }
            }
        }
        deleted
    }
}

/// The log line for an entry a reload does not apply.
fn refusal(
    origin: &super::Location,
    what: &str,
    declared_as: &str,
    exists_as: &str,
    reason: &str,
) -> String {
    let problem = apply::conflict(
        origin,
        what,
        declared_as,
        exists_as,
        "in the broker now",
        reason,
    );
    format!("{problem}; not applied: it would have to be deleted and declared again (delete it by hand first, or restore its old definition)")
}

/// Reloads on every signal `hangups` receives (SIGHUP, registered by the caller before the
/// broker starts, so that an early one does not end the process), for as long as it runs.
pub async fn on_sighup(mut reloader: Reloader, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        // Declaring and deleting take the vhosts' locks and may touch files: off the runtime.
        reloader = match tokio::task::spawn_blocking(move || {
            reloader.reload();
            reloader
        })
        .await
        {
            Ok(reloader) => reloader,
            Err(e) => {
                error!(error = %e, "the configuration reload failed: reloads stop");
                return;
            }
        };
    }
}

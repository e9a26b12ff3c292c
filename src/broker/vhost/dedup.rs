//! The de-duplication windows of a vhost's queues and exchanges (`broker/dedup.rs`): checking
//! their arguments at declare time (406 with the reason), opening each window (in memory, or
//! for a durable queue or exchange on a store, from its file) and where those files live:
//! `queues/<id>/dedup.log` beside a durable queue's log (deleted with it), and
//! `exchanges/<id>.dedup` for a durable exchange. What a window does to a publish is
//! `publish.rs`'s.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;
use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::Vhost;
use crate::broker::dedup::{self, Dedup};
use crate::broker::exchange::Exchange;
use crate::broker::queue::QueueOptions;
use crate::error::Error;

/// A durable queue's window, in its log's directory.
const QUEUE_FILE: &str = "dedup.log";

impl Vhost {
    /// Refuses invalid de-duplication arguments of a declaration (406).
    pub(super) fn check_dedup(
        &self,
        what: &str,
        name: &ShortStr,
        arguments: &FieldTable,
    ) -> Result<(), Error> {
        dedup::settings(arguments).map(|_| ()).map_err(|refused| {
            Error::PreconditionFailed(format!(
                "invalid arg '{}' for {what} '{name}' in vhost '{}': {}",
                refused.arg, self.name, refused.reason
            ))
        })
    }

    /// The window of a queue declared (or recovered) with `x-message-deduplication`.
    pub(super) fn queue_dedup(
        &self,
        name: &ShortStr,
        options: &QueueOptions,
    ) -> io::Result<Option<Arc<Dedup>>> {
        let Some(settings) = self.dedup_settings("queue", name, &options.arguments) else {
            return Ok(None);
        };
        match &self.store {
            Some((store, dir)) if options.durable && options.exclusive_owner.is_none() => {
                let path = crate::store::queue_dir(dir, name.as_bytes()).join(QUEUE_FILE);
                let dedup = Dedup::durable(settings, Arc::clone(store), &path)?;
                Ok(Some(Arc::new(dedup)))
            }
            _ => Ok(Some(Arc::new(Dedup::in_memory(settings)))),
        }
    }

    /// The window of an exchange declared with `x-message-deduplication`; `fresh` for a new
    /// declaration (a file left by an earlier exchange of that name is emptied first), not
    /// for recovery.
    pub(super) fn exchange_dedup(
        &self,
        exchange: &Exchange,
        fresh: bool,
    ) -> io::Result<Option<Arc<Dedup>>> {
        let Some(settings) = self.dedup_settings("exchange", &exchange.name, &exchange.arguments)
        else {
            return Ok(None);
        };
        match (&self.store, exchange.durable) {
            (Some((store, _)), true) => {
                let path = self.exchange_dedup_path(&exchange.name);
                if fresh {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                let dedup = Dedup::durable(settings, Arc::clone(store), &path)?;
                Ok(Some(Arc::new(dedup)))
            }
            _ => Ok(Some(Arc::new(Dedup::in_memory(settings)))),
        }
    }

    /// A recovered exchange with its window (in memory only if its file cannot be read).
    pub(super) fn with_exchange_dedup(&self, mut exchange: Exchange) -> Exchange {
        exchange.dedup = match self.exchange_dedup(&exchange, false) {
            Ok(dedup) => dedup,
            Err(e) => {
                warn!(vhost = %self.name, exchange = %exchange.name, error = %e, "cannot recover the de-duplication window; starting an empty one");
                dedup::settings(&exchange.arguments)
                    .ok()
                    .flatten()
                    .map(|settings| Arc::new(Dedup::in_memory(settings)))
            }
        };
        exchange
    }

    fn exchange_dedup_path(&self, name: &ShortStr) -> PathBuf {
        let dir = self
            .store
            .as_ref()
            .map(|(_, dir)| dir.clone())
            .unwrap_or_default();
        dir.join("exchanges")
            .join(format!("{}.dedup", crate::store::id(name.as_bytes())))
    }

    fn dedup_settings(
        &self,
        what: &str,
        name: &ShortStr,
        arguments: &FieldTable,
    ) -> Option<dedup::Settings> {
        match dedup::settings(arguments) {
            Ok(settings) => settings,
            Err(refused) => {
                // Declarations check them first; only a recovered definition can get here.
                warn!(vhost = %self.name, %what, %name, %refused, "de-duplication arguments ignored");
                None
            }
        }
    }
}

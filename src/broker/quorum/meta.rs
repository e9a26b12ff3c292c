//! The cluster's metadata group: which quorum queues exist, with their arguments and the nodes
//! that replicate each, the durable exchanges and the bindings every node routes by, and the
//! accounts changed at run time ([`super::accounts`]) ([`MetaMachine`], one Raft group over
//! every node). Declaring or deleting one is a write to
//! it; every node learns of the change when its replica applies it, through the [`Event`]s its
//! machine sends (not replicated: each node's own link).
//!
//! Owns the definitions; never opens a queue itself (the broker does, on the events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::accounts::{AccountChange, AccountRecord};
use crate::cluster::{Machine, NodeId};

/// A quorum queue as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDefinition {
    pub vhost: String,
    pub name: String,
    /// Its `queue.declare` arguments, as an AMQP field table.
    pub arguments: Vec<u8>,
    /// The nodes of its Raft group.
    pub members: Vec<NodeId>,
    /// Numbers its Raft group (and directory): a queue declared again after a delete gets a
    /// new one.
    pub serial: u64,
}

/// A durable exchange every node has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDefinition {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    /// An AMQP field table.
    pub arguments: Vec<u8>,
}

/// A binding every node routes by: to a quorum queue, or between durable exchanges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingDefinition {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    /// To a queue (else to an exchange).
    pub to_queue: bool,
    pub routing_key: String,
    /// An AMQP field table.
    pub arguments: Vec<u8>,
}

/// A change of the routing topology, made on one node and applied on all.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Change {
    DeclareExchange(ExchangeDefinition),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    Bind(BindingDefinition),
    Unbind(BindingDefinition),
    /// A vhost, user or permission; deleting a vhost deletes its quorum queues, exchanges and
    /// bindings.
    Account(AccountChange),
}

impl Change {
    /// The vhost it changes (a user's change: none).
    pub fn vhost(&self) -> Option<&str> {
        match self {
            Change::DeclareExchange(x) => Some(&x.vhost),
            Change::DeleteExchange { vhost, .. } => Some(vhost),
            Change::Bind(b) | Change::Unbind(b) => Some(&b.vhost),
            Change::Account(_) => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Declares the queue unless one of that name exists (`serial` is set by the machine).
    Declare(QueueDefinition),
    Delete {
        vhost: String,
        name: String,
    },
    Change(Change),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The queue of that name: the one declared, or the one that was there.
    Declared(QueueDefinition),
    Deleted(bool),
    Changed,
}

/// A change this node's replica applied.
#[derive(Debug, Clone)]
pub enum Event {
    Declared(QueueDefinition),
    Deleted(QueueDefinition),
    Changed(Change),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MetaMachine {
    /// By vhost, then name.
    queues: BTreeMap<String, BTreeMap<String, QueueDefinition>>,
    next_serial: u64,
    /// By vhost, then name.
    #[serde(default)]
    exchanges: BTreeMap<String, BTreeMap<String, ExchangeDefinition>>,
    #[serde(default)]
    bindings: std::collections::BTreeSet<BindingDefinition>,
    #[serde(default)]
    accounts: AccountRecord,
    #[serde(skip)]
    events: Option<mpsc::UnboundedSender<Event>>,
}

impl MetaMachine {
    pub fn new(events: mpsc::UnboundedSender<Event>) -> MetaMachine {
        MetaMachine {
            events: Some(events),
            ..MetaMachine::default()
        }
    }

    pub fn queue(&self, vhost: &str, name: &str) -> Option<&QueueDefinition> {
        self.queues.get(vhost)?.get(name)
    }

    /// The account changes that bring a node to this record.
    pub fn accounts(&self) -> Vec<AccountChange> {
        self.accounts.replay()
    }

    /// Every quorum queue.
    pub fn all(&self) -> impl Iterator<Item = &QueueDefinition> {
        self.queues.values().flat_map(|q| q.values())
    }

    /// Keeps what a change leaves: the exchanges and bindings a node applies when it starts.
    fn record(&mut self, change: &Change) {
        match change {
            Change::DeclareExchange(exchange) => {
                self.exchanges
                    .entry(exchange.vhost.clone())
                    .or_default()
                    .insert(exchange.name.clone(), exchange.clone());
            }
            Change::DeleteExchange { vhost, name } => {
                if let Some(exchanges) = self.exchanges.get_mut(vhost) {
                    exchanges.remove(name);
                }
                self.bindings.retain(|b| {
                    !(b.vhost == *vhost
                        && (b.source == *name || (!b.to_queue && b.destination == *name)))
                });
            }
            Change::Bind(binding) => {
                self.bindings.insert(binding.clone());
            }
            Change::Unbind(binding) => {
                self.bindings.remove(binding);
            }
            Change::Account(account) => {
                self.accounts.record(account);
                if let AccountChange::DeleteVhost(vhost) = account {
                    self.delete_vhost(vhost);
                }
            }
        }
    }

    /// Forgets a deleted vhost's exchanges and bindings, and deletes its quorum queues.
    fn delete_vhost(&mut self, vhost: &str) {
        self.exchanges.remove(vhost);
        self.bindings.retain(|b| b.vhost != vhost);
        for (_, definition) in self.queues.remove(vhost).unwrap_or_default() {
            self.tell(Event::Deleted(definition));
        }
    }

    fn tell(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

impl Machine for MetaMachine {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command) -> Response {
        match command {
            Command::Declare(definition) => {
                if let Some(existing) = self.queue(&definition.vhost, &definition.name) {
                    return Response::Declared(existing.clone());
                }
                let definition = QueueDefinition {
                    serial: self.next_serial,
                    ..definition.clone()
                };
                self.next_serial += 1;
                self.queues
                    .entry(definition.vhost.clone())
                    .or_default()
                    .insert(definition.name.clone(), definition.clone());
                self.tell(Event::Declared(definition.clone()));
                Response::Declared(definition)
            }
            Command::Delete { vhost, name } => {
                let removed = self
                    .queues
                    .get_mut(vhost)
                    .and_then(|queues| queues.remove(name));
                let deleted = removed.is_some();
                if let Some(definition) = removed {
                    self.bindings.retain(|b| {
                        !(b.vhost == definition.vhost
                            && b.to_queue
                            && b.destination == definition.name)
                    });
                    self.tell(Event::Deleted(definition));
                }
                Response::Deleted(deleted)
            }
            Command::Change(change) => {
                self.record(change);
                self.tell(Event::Changed(change.clone()));
                Response::Changed
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cluster metadata not encoded");
            Vec::new()
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let restored: MetaMachine =
            serde_json::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
        let events = self.events.take();
        *self = MetaMachine { events, ..restored };
        // The broker opens what the snapshot holds as it opens what the log adds: the
        // accounts, exchanges, then queues, then the bindings between them.
        for change in self.accounts.replay() {
            self.tell(Event::Changed(Change::Account(change)));
        }
        let exchanges = self.exchanges.values().flat_map(|x| x.values());
        for exchange in exchanges {
            self.tell(Event::Changed(Change::DeclareExchange(exchange.clone())));
        }
        for definition in self.all() {
            self.tell(Event::Declared(definition.clone()));
        }
        for binding in &self.bindings {
            self.tell(Event::Changed(Change::Bind(binding.clone())));
        }
        Ok(())
    }
}

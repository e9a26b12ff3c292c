//! A connection's outbox for the group commit's reports: which of its publishes (publisher
//! confirms), transactions and batches of durable declarations are safe on disk, or failed to
//! be; and delayed mandatory messages that come back unroutable when they fire. Deliveries come another way:
//! through the consumers' mailbox (`broker::queue::Sink`).
//!
//! Both are opened when first needed ([`Mailboxes`]): the mailbox at the connection's first
//! consumer, the outbox when it first waits for the group commit. An unbounded channel costs
//! its first block of 32 slots up front (2-3 KiB each here), which an idle connection, or one
//! that only publishes without confirms, would otherwise carry for its whole life.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::message::Message;
use crate::broker::queue::{Mail, Sink};

/// A publish awaiting its confirm: (channel, channel epoch, delivery tag).
pub type ConfirmTag = (u16, u64, u64);

/// The group commit synced (or failed to sync) these publishes and commits.
#[derive(Debug)]
pub struct Synced {
    pub tags: Vec<ConfirmTag>,
    /// (channel, epoch) of `tx.commit`s waiting for the sync.
    pub commits: Vec<(u16, u64)>,
    /// The batch of definitions (declarations, bindings, deletions) whose replies wait.
    pub definitions: Option<u64>,
    pub ok: bool,
    /// A delayed mandatory message that was unroutable when it fired: (channel, epoch,
    /// message), to `basic.return`.
    pub returned: Option<(u16, u64, Arc<Message>)>,
}

/// The sending side of a connection's outbox.
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::UnboundedSender<Synced>);

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Synced>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox(tx), rx)
    }

    /// Tells the connection that publisher-confirm tags are safe on disk (or not).
    pub fn synced(&self, tags: Vec<ConfirmTag>, commits: Vec<(u16, u64)>, ok: bool) {
        let _ = self.0.send(Synced {
            tags,
            commits,
            definitions: None,
            ok,
            returned: None,
        });
    }

    /// Hands back a delayed mandatory message of channel `number` (epoch `epoch`) that was
    /// unroutable when it fired.
    pub fn returned(&self, number: u16, epoch: u64, message: Arc<Message>) {
        let _ = self.0.send(Synced {
            tags: Vec::new(),
            commits: Vec::new(),
            definitions: None,
            ok: true,
            returned: Some((number, epoch, message)),
        });
    }

    /// Tells the connection that the definitions its batch `batch` changed are on disk (or not).
    pub fn saved(&self, batch: u64, ok: bool) {
        let _ = self.0.send(Synced {
            tags: Vec::new(),
            commits: Vec::new(),
            definitions: Some(batch),
            ok,
            returned: None,
        });
    }
}

/// The sending ends of a connection's mailbox (deliveries) and outbox (group-commit reports),
/// each opened at its first use. The receiving end of one just opened waits here until the
/// connection task takes it ([`Mailboxes::take_mail`], [`Mailboxes::take_synced`]).
#[derive(Debug)]
pub(crate) struct Mailboxes {
    connection: u64,
    sink: Option<Sink>,
    outbox: Option<Outbox>,
    /// Opened, and not yet taken by the connection task.
    mail: Option<mpsc::UnboundedReceiver<Mail>>,
    synced: Option<mpsc::UnboundedReceiver<Synced>>,
}

impl Mailboxes {
    /// None opened yet, for connection `connection` (its id).
    pub(crate) fn new(connection: u64) -> Mailboxes {
        Mailboxes {
            connection,
            sink: None,
            outbox: None,
            mail: None,
            synced: None,
        }
    }

    /// Where queues send deliveries to this connection's consumers (opened by the first call).
    pub(crate) fn sink(&mut self) -> Sink {
        let connection = self.connection;
        self.sink
            .get_or_insert_with(|| {
                let (sink, mail) = Sink::new(connection);
                self.mail = Some(mail);
                sink
            })
            .clone()
    }

    /// Where the group commit reports to this connection (opened by the first call).
    pub(crate) fn outbox(&mut self) -> Outbox {
        self.outbox
            .get_or_insert_with(|| {
                let (outbox, synced) = Outbox::new();
                self.synced = Some(synced);
                outbox
            })
            .clone()
    }

    /// Whether a receiving end waits to be taken.
    #[inline]
    pub(crate) fn opened(&self) -> bool {
        self.mail.is_some() || self.synced.is_some()
    }

    /// The receiving end of the mailbox, if it was opened since the last call.
    pub(crate) fn take_mail(&mut self) -> Option<mpsc::UnboundedReceiver<Mail>> {
        self.mail.take()
    }

    /// The receiving end of the outbox, if it was opened since the last call.
    pub(crate) fn take_synced(&mut self) -> Option<mpsc::UnboundedReceiver<Synced>> {
        self.synced.take()
    }
}

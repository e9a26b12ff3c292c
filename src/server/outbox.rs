//! A connection's outbox for the group commit's reports: which of its publishes (publisher
//! confirms), transactions and batches of durable declarations are safe on disk, or failed to
//! be. Deliveries come another way:
//! through the consumers' mailbox (`broker::queue::Sink`).

use tokio::sync::mpsc;

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
        });
    }

    /// Tells the connection that the definitions its batch `batch` changed are on disk (or not).
    pub fn saved(&self, batch: u64, ok: bool) {
        let _ = self.0.send(Synced {
            tags: Vec::new(),
            commits: Vec::new(),
            definitions: Some(batch),
            ok,
        });
    }
}

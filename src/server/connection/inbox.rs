//! What other tasks send a connection: its consumers' deliveries and cancellations (the mailbox,
//! fed by queues) and the group commit's reports (the outbox: confirms, commits, and the
//! declarations whose replies wait for the disk). Mail is handled in batches of
//! [`OUTBOX_BATCH`], and not at all while the client leaves too much output unread; a delivery
//! the connection can no longer make goes back to its queue.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::channel;
use super::super::outbox::Synced;
use super::{Connection, OUTBOX_BATCH, WRITE_HIGH_WATER};
use crate::broker::queue::Mail;

/// The receiving ends of what other tasks send a connection: its consumers' deliveries and
/// cancellations (from queues), and the group commit's reports.
pub(super) struct Inbox {
    pub(super) mail: mpsc::UnboundedReceiver<Mail>,
    pub(super) synced: mpsc::UnboundedReceiver<Synced>,
}

impl Connection {
    /// Handles deliveries and cancellations from queues: `first` and up to a batch more.
    pub(super) fn mail(&mut self, first: Mail, mail: &mut mpsc::UnboundedReceiver<Mail>) {
        let now = Instant::now();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(message) = next.take() {
            match (&mut self.channels, message) {
                (Some(channels), Mail::Deliver { consumer, entry }) => {
                    channels.deliver(&mut self.write_buf, consumer, entry, now)
                }
                (Some(channels), Mail::Cancelled { consumer }) => {
                    channels.cancelled(&mut self.write_buf, consumer)
                }
                (None, message) => give_back(message),
            }
            handled += 1;
            if handled < OUTBOX_BATCH && self.write_buf.len() < WRITE_HIGH_WATER {
                next = mail.try_recv().ok();
            }
        }
        if let Some(channels) = &mut self.channels {
            channels.flush(&mut self.write_buf);
        }
    }

    /// The group commit reported on publishes and commits of this connection: their confirms and
    /// commit-oks become due.
    pub(super) fn synced(&mut self, report: Synced) {
        let Some(channels) = &mut self.channels else {
            return;
        };
        let Synced {
            tags,
            commits,
            definitions,
            ok,
        } = report;
        for (channel, epoch, tag) in tags {
            channels.synced(channel, epoch, tag, ok);
        }
        for (channel, epoch) in commits {
            channels.committed(&mut self.write_buf, channel, epoch, ok);
        }
        let saved = match definitions {
            Some(batch) => channels.saved(&mut self.write_buf, batch, ok),
            None => Ok(()),
        };
        channels.flush(&mut self.write_buf);
        if let Err(exception) = saved {
            self.exception(0, exception);
        }
    }
}

/// Returns a delivery this connection can no longer make to its queue.
pub(super) fn give_back(message: Mail) {
    if let Mail::Deliver { consumer, entry } = message {
        consumer.written();
        channel::give_back(consumer, entry);
    }
}

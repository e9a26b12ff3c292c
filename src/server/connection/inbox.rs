//! What other tasks send a connection: its consumers' deliveries and cancellations (the mailbox,
//! fed by queues) and the group commit's reports (the outbox: confirms, commits, and the
//! declarations whose replies wait for the disk). Mail is handled in batches of
//! [`OUTBOX_BATCH`], and not at all while the client leaves too much output unread; a delivery
//! the connection can no longer make goes back to its queue.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::channel;
use super::super::outbox::{Mailboxes, Synced};
use super::{Connection, OUTBOX_BATCH, WRITE_HIGH_WATER};
use crate::broker::queue::Mail;

/// The receiving ends of what other tasks send a connection: its consumers' deliveries and
/// cancellations (from queues), and the group commit's reports; each `None` until its channel
/// is opened (see [`Mailboxes`]).
#[derive(Default)]
pub(super) struct Inbox {
    pub(super) mail: Option<mpsc::UnboundedReceiver<Mail>>,
    pub(super) synced: Option<mpsc::UnboundedReceiver<Synced>>,
}

impl Inbox {
    /// Takes the receiving ends the channels opened since the last turn.
    #[inline]
    pub(super) fn adopt(&mut self, mailboxes: &mut Mailboxes) {
        if mailboxes.opened() {
            self.mail = self.mail.take().or_else(|| mailboxes.take_mail());
            self.synced = self.synced.take().or_else(|| mailboxes.take_synced());
        }
    }
}

/// The next message of `receiver`; never, while it is not opened.
pub(super) async fn recv<T>(receiver: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Handles deliveries and cancellations from queues: `first` and up to a batch more.
    pub(super) fn mail(&mut self, first: Mail, mail: &mut Option<mpsc::UnboundedReceiver<Mail>>) {
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
                (None, message) => channel::give_back_mail(message),
            }
            handled += 1;
            if handled < OUTBOX_BATCH && self.write_buf.len() < WRITE_HIGH_WATER {
                next = mail.as_mut().and_then(|mail| mail.try_recv().ok());
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
            returned,
        } = report;
        if let Some((channel, epoch, message)) = returned {
            channels.return_fired(&mut self.write_buf, channel, epoch, &message);
        }
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

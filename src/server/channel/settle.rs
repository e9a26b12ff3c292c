//! Settling deliveries: `basic.ack`, `nack`, `reject` and `recover`, a transaction's settles at
//! commit, the late settle of a delivery the unacked timeout took back, and giving back what
//! never reached the client. Acks record in a queue's log that stored messages are gone;
//! requeues put messages back at their original places; rejects without requeue dead-letter.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::unacked::{Delivery, TakenBack};
use super::{Channel, Channels, Mode, Settle};
use crate::broker::message::Entry;
use crate::broker::queue::Queue;
use crate::broker::queue::{ChannelCredit, Consumer, Mail};
use crate::broker::vhost::Vhost;
use crate::error::Error;

impl Channels {
    /// `basic.recover`: every unacked delivery goes back to its queue, marked redelivered (and
    /// so do those the unacked timeout had parked away from this channel: the client asks for
    /// them again).
    pub(super) fn recover(&mut self, number: u16, requeue: bool) -> Result<(), Error> {
        if !requeue {
            return Err(Error::NotImplemented("requeue=false".into()));
        }
        let channel = self.open(number)?;
        let mut deliveries = Vec::new();
        channel.unacked.take_all(&mut deliveries);
        let late = channel.unacked.has_taken_back();
        settle(&self.session.vhost, deliveries, Settle::Requeue);
        if late {
            self.settle_late(number, 0, u64::MAX, Settle::Requeue)?;
        }
        self.open(number)?.wake_consumers();
        Ok(())
    }

    /// `basic.ack`, `nack` and `reject`. Tag 0 with `multiple` means every unacked delivery; an
    /// unknown tag is a 406, except one the unacked timeout already took back (ignored).
    pub(super) fn settle_tags(
        &mut self,
        number: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
    ) -> Result<(), Error> {
        let channel = self.open(number)?;
        let mut taken = Vec::new();
        if multiple && tag == 0 {
            channel.unacked.take_all(&mut taken);
        } else if multiple {
            if !channel.unacked.contains(tag) && !channel.unacked.was_taken_back(tag) {
                return Err(unknown_tag(tag));
            }
            channel.unacked.take_through(tag, &mut taken);
        } else {
            match channel.unacked.take(tag) {
                Some(delivery) => taken.push(delivery),
                None if channel.unacked.was_taken_back(tag) => {
                    return self.settle_late(number, tag, tag, how);
                }
                None => return Err(unknown_tag(tag)),
            }
        }
        if let Mode::Tx(tx) = &mut channel.mode {
            tx.settles.extend(taken.into_iter().map(|d| (d, how)));
            return Ok(());
        }
        if multiple && channel.unacked.has_taken_back() {
            let through = if tag == 0 { u64::MAX } else { tag };
            self.settle_late(number, 0, through, how)?;
        }
        if how == Settle::Ack {
            self.counts.acknowledged += taken.len() as u64;
        }
        settle(&self.session.vhost, taken, how);
        self.open(number)?.wake_consumers();
        Ok(())
    }

    /// Settles, late, the deliveries with tags `from..=through` that the unacked timeout took
    /// back: those still parked in their queues (nobody else took them) are acked, requeued or
    /// rejected. In a transaction the record stays (their messages go back to the queue when the
    /// channel closes): a transaction cannot hold what the channel no longer has. Out of line:
    /// the usual ack never comes here.
    #[cold]
    #[inline(never)]
    fn settle_late(
        &mut self,
        number: u16,
        from: u64,
        through: u64,
        how: Settle,
    ) -> Result<(), Error> {
        let channel = self.open(number)?;
        if matches!(channel.mode, Mode::Tx(_)) {
            return Ok(());
        }
        let mut taken_back = Vec::new();
        channel
            .unacked
            .take_taken_back(from, through, &mut taken_back);
        let holder = Arc::clone(&channel.credit);
        settle_taken_back(&self.session.vhost, &holder, taken_back, how);
        self.open(number)?.wake_consumers();
        Ok(())
    }
}

fn unknown_tag(tag: u64) -> Error {
    Error::PreconditionFailed(format!("unknown delivery tag {tag}"))
}

/// Applies a committed transaction's acks, nacks and rejects, in the order they were made.
pub(super) fn settle_committed(vhost: &Vhost, channel: &Channel, settles: Vec<(Delivery, Settle)>) {
    let mut run = Vec::new();
    let mut run_how = Settle::Ack;
    for (delivery, how) in settles {
        if how != run_how && !run.is_empty() {
            settle(vhost, std::mem::take(&mut run), run_how);
        }
        run_how = how;
        run.push(delivery);
    }
    settle(vhost, run, run_how);
    channel.wake_consumers();
}

/// Settles deliveries the unacked timeout had taken back from the channel `holder`, late: those
/// still parked in their queues (no other consumer took them) are acked, dead-lettered and
/// dropped, or requeued.
pub(super) fn settle_taken_back(
    vhost: &Vhost,
    holder: &Arc<ChannelCredit>,
    taken: Vec<TakenBack>,
    how: Settle,
) {
    let mut index = 0;
    while index < taken.len() {
        let queue = Arc::clone(&taken[index].queue);
        let mut seqs = Vec::new();
        while let Some(record) = taken.get(index).filter(|r| Arc::ptr_eq(&r.queue, &queue)) {
            seqs.push(record.seq);
            index += 1;
        }
        let mut entries = queue.unpark(holder, &seqs);
        settle_run(vhost, &queue, &mut entries, how);
    }
}

/// Returns a delivery that never reached the client to its queue, with its credit (its place in
/// the outbox has already been counted as written).
pub(crate) fn give_back(consumer: Arc<Consumer>, entry: Entry) {
    if !consumer.no_ack {
        consumer.settled(1);
    }
    consumer.queue.return_unsent(entry);
}

/// Gives back a delivery that came from the mailbox and can no longer be made (a cancellation
/// needs nothing more).
pub(crate) fn give_back_mail(message: Mail) {
    if let Mail::Deliver { consumer, entry } = message {
        consumer.written();
        give_back(consumer, entry);
    }
}

/// Closes a connection's mailbox and gives back every delivery still in it (its consumers are
/// gone from their queues by then, so nothing new arrives).
pub(crate) fn return_mail(mail: &mut mpsc::UnboundedReceiver<Mail>) {
    mail.close();
    while let Ok(message) = mail.try_recv() {
        give_back_mail(message);
    }
}

/// Settles deliveries: frees their consumers' credit, and acks, rejects (the vhost dead-letters)
/// or requeues them, one queue lock per run of deliveries from the same queue.
pub(super) fn settle(vhost: &Vhost, deliveries: Vec<Delivery>, how: Settle) {
    let mut run: Vec<Entry> = Vec::new();
    let mut run_queue: Option<Arc<Queue>> = None;
    for delivery in deliveries {
        if let Some(consumer) = &delivery.consumer {
            consumer.settled(1);
        }
        let same = run_queue
            .as_ref()
            .is_some_and(|q| Arc::ptr_eq(q, &delivery.queue));
        if !same {
            if let Some(queue) = run_queue.take() {
                settle_run(vhost, &queue, &mut run, how);
            }
            run_queue = Some(delivery.queue);
        }
        run.push(delivery.entry);
    }
    if let Some(queue) = run_queue {
        settle_run(vhost, &queue, &mut run, how);
    }
}

/// Settles a run of one queue's entries: requeued, acked (the stored ones recorded as gone), or
/// rejected (the vhost dead-letters them).
fn settle_run(vhost: &Vhost, queue: &Arc<Queue>, run: &mut Vec<Entry>, how: Settle) {
    match how {
        Settle::Requeue => queue.requeue(run.drain(..)),
        Settle::Ack => queue.settle(run.drain(..)),
        Settle::Reject => vhost.reject(queue, std::mem::take(run)),
    }
}

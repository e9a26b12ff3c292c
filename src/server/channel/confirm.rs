//! Publisher confirms of one channel: which publishes are safe, which wait for the group commit,
//! and the acks and nacks still to send.
//!
//! A publish is safe when it is in every queue it was routed to and, for a persistent message in
//! a durable queue, synced to disk. Safe publishes are acked in order with one `basic.ack`
//! (`multiple` when it covers more than one): an ack never covers a tag still waiting for its
//! sync. Publishes that failed are nacked one by one, before the next ack, and no ack ever names
//! a nacked tag (clients such as lapin treat that as a second confirm of the same publish).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use bytes::BytesMut;
use warren_protocol::method::encode_method;
use warren_protocol::spec::{basic, AMQPClass};

/// The confirm state of a channel in confirm mode.
#[derive(Debug)]
pub(super) struct Confirms {
    /// The delivery tag of the next publish.
    next_tag: u64,
    /// Every tag up to this one has been acked or nacked to the client.
    acked_through: u64,
    /// Tags waiting for the group commit.
    waiting: BTreeSet<u64>,
    /// Tags to nack at the next flush.
    nacks: Vec<u64>,
    /// Nacked tags above `acked_through`: the next ack must not name them.
    nacked: BTreeSet<u64>,
    /// The channel is on the connection's list of channels to flush.
    scheduled: bool,
    /// How many tags wait, as of the last flush (the management API's `messages_unconfirmed`).
    unconfirmed: Arc<AtomicU32>,
}

/// What became of one publish, for its confirm: the broker's answer to the publish.
pub(super) use crate::broker::vhost::Safety as Outcome;

impl Confirms {
    pub fn new() -> Confirms {
        Confirms {
            next_tag: 1,
            acked_through: 0,
            waiting: BTreeSet::new(),
            nacks: Vec::new(),
            nacked: BTreeSet::new(),
            scheduled: false,
            unconfirmed: Arc::default(),
        }
    }

    /// The count of publishes waiting for their confirm, updated at each flush.
    pub fn unconfirmed(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.unconfirmed)
    }

    /// Marks the channel for the next flush; true if it was not marked yet (the caller then
    /// puts it on the list of channels to flush).
    pub fn schedule(&mut self) -> bool {
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// Records a publish; returns its delivery tag.
    pub fn published(&mut self, outcome: Outcome) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        match outcome {
            Outcome::Safe => {}
            Outcome::Syncing => {
                self.waiting.insert(tag);
            }
            Outcome::Failed => self.nacks.push(tag),
        }
        tag
    }

    /// The group commit reported on `tag`.
    pub fn synced(&mut self, tag: u64, ok: bool) {
        if self.waiting.remove(&tag) && !ok {
            self.nacks.push(tag);
        }
    }

    /// Writes the nacks and the one ack now due.
    /// Returns how many publishes it confirmed (acked; nacks are not counted).
    pub fn flush(&mut self, out: &mut BytesMut, number: u16) -> u64 {
        self.scheduled = false;
        let mut confirmed = 0;
        for tag in self.nacks.drain(..) {
            self.nacked.insert(tag);
            let nack = basic::Nack {
                delivery_tag: tag,
                multiple: false,
                requeue: false,
            };
            encode_method(
                out,
                number,
                &AMQPClass::Basic(basic::AMQPMethod::Nack(nack)),
            );
        }
        let limit = match self.waiting.first() {
            Some(first) => first - 1,
            None => self.next_tag - 1,
        };
        // The ack names the highest safe tag that was not nacked; the nacked tags it spans are
        // already confirmed, so it covers only the others.
        let mut through = limit;
        while through > self.acked_through && self.nacked.contains(&through) {
            through -= 1;
        }
        if through > self.acked_through {
            let spanned_nacks = self.nacked.range(self.acked_through + 1..=through).count() as u64;
            let covered = through - self.acked_through - spanned_nacks;
            let ack = warren_protocol::method::Ack {
                delivery_tag: through,
                multiple: covered > 1,
            };
            warren_protocol::method::encode_ack(out, number, &ack);
            confirmed = covered;
        }
        if limit > self.acked_through {
            self.acked_through = limit;
            self.nacked = self.nacked.split_off(&(limit + 1));
        }
        let waiting = u32::try_from(self.waiting.len()).unwrap_or(u32::MAX);
        self.unconfirmed.store(waiting, Relaxed);
        confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::frame::parse_frame;
    use warren_protocol::method::{decode_method, Method};

    /// The (tag, multiple, is_ack) of every ack/nack written.
    fn sent(out: &mut BytesMut) -> Vec<(u64, bool, bool)> {
        let mut seen = Vec::new();
        while let Ok(Some(frame)) = parse_frame(out, 131_072) {
            match decode_method(&frame.payload) {
                Ok(Method::Ack(ack)) => seen.push((ack.delivery_tag, ack.multiple, true)),
                Ok(Method::Other(AMQPClass::Basic(basic::AMQPMethod::Nack(nack)))) => {
                    seen.push((nack.delivery_tag, nack.multiple, false))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        seen
    }

    #[test]
    fn an_ack_never_covers_a_tag_waiting_for_its_sync() {
        let mut confirms = Confirms::new();
        let mut out = BytesMut::new();
        assert_eq!(confirms.published(Outcome::Safe), 1);
        assert_eq!(confirms.published(Outcome::Syncing), 2);
        assert_eq!(confirms.published(Outcome::Safe), 3);
        confirms.flush(&mut out, 1);
        assert_eq!(sent(&mut out), [(1, false, true)]);
        confirms.synced(2, true);
        confirms.flush(&mut out, 1);
        assert_eq!(sent(&mut out), [(3, true, true)]);
        confirms.flush(&mut out, 1);
        assert_eq!(sent(&mut out), []);
    }

    #[test]
    fn failures_are_nacked_alone_before_the_next_ack() {
        let mut confirms = Confirms::new();
        let mut out = BytesMut::new();
        confirms.published(Outcome::Syncing);
        confirms.published(Outcome::Failed);
        confirms.published(Outcome::Safe);
        confirms.synced(1, false);
        confirms.flush(&mut out, 1);
        assert_eq!(
            sent(&mut out),
            [(2, false, false), (1, false, false), (3, false, true)]
        );
    }

    #[test]
    fn no_ack_names_a_nacked_tag() {
        let mut confirms = Confirms::new();
        let mut out = BytesMut::new();
        for outcome in [Outcome::Safe, Outcome::Safe, Outcome::Failed, Outcome::Safe] {
            confirms.published(outcome);
        }
        confirms.published(Outcome::Failed);
        confirms.flush(&mut out, 1);
        // 3 and 5 nacked; one ack through 4 covers 1, 2 and 4.
        assert_eq!(
            sent(&mut out),
            [(3, false, false), (5, false, false), (4, true, true)]
        );
        confirms.published(Outcome::Failed);
        confirms.flush(&mut out, 1);
        assert_eq!(sent(&mut out), [(6, false, false)], "nothing left to ack");
        confirms.published(Outcome::Safe);
        confirms.flush(&mut out, 1);
        assert_eq!(sent(&mut out), [(7, false, true)]);
    }
}

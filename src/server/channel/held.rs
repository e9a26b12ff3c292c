//! Replies that wait for the definitions log to reach the disk, and the output of their channel
//! held behind them.
//!
//! A declare, bind, unbind or delete of something durable appends to its vhost's definitions
//! log (`broker/vhost/changes.rs`); its `*-ok` means "on disk", so it is sent only after a group
//! commit covers it. The channel does not wait for that: it goes on with the frames that follow,
//! and what it sends meanwhile (later replies, deliveries, confirms, a `channel.close`) is kept
//! behind the waiting reply, in order, so a client sees its replies in the order of its requests.
//! Other channels are not held. A client that sends many declarations before it reads their
//! replies gets them all written by one `pwrite` and synced by one `fdatasync` per batch of input,
//! as publisher confirms are.
//!
//! Owned by the connection's channel table (no lock). It never writes or syncs anything itself:
//! at the end of a batch the table writes the logs that were appended to and registers one
//! group-commit callback ([`Channels::save_definitions`]), whose report releases what it covered
//! ([`Channels::saved`]); a report of a failure is a connection exception (541), as a failed
//! save of a waiting declare is.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use tracing::error;
use warren_protocol::method::encode_method;
use warren_protocol::spec::AMQPClass;

use super::Channels;
use crate::broker::vhost::Unsaved;
use crate::error::{Error, Exception};

/// Output held per channel behind replies waiting for the group commit, and the changes still to
/// be written.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// The channels with held output (few: a map would cost more than the scan).
    channels: Vec<(u16, Output)>,
    /// Changes appended by this batch of input, to be written at its end (one per log).
    unsaved: Vec<Unsaved>,
    /// The number of the batch whose save the next flush registers: replies held now wait for
    /// it. Reports come back in this order (one group commit, one outbox).
    batch: u64,
}

/// One channel's held output.
#[derive(Debug, Default)]
pub(super) struct Output {
    out: BytesMut,
    /// (batch, offset in `out` of the reply waiting for that batch), oldest first.
    waits: VecDeque<(u64, usize)>,
}

impl Held {
    /// Nothing is held on any channel (the common case: one test per write).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    fn take(&mut self, number: u16) -> Option<Output> {
        let index = self.channels.iter().position(|(n, _)| *n == number)?;
        Some(self.channels.swap_remove(index).1)
    }

    /// Puts back what [`Held::take`] took, with whatever was held meanwhile after it.
    fn put_back(&mut self, number: u16, mut output: Output) {
        if let Some(later) = self.take(number) {
            let base = output.out.len();
            output.out.extend_from_slice(&later.out);
            let shifted = later
                .waits
                .into_iter()
                .map(|(batch, at)| (batch, base + at));
            output.waits.extend(shifted);
        }
        self.channels.push((number, output));
    }

    /// Writes into `out` what the save of every batch up to `batch` released.
    fn release(&mut self, out: &mut BytesMut, batch: u64) {
        self.channels.retain_mut(|(_, held)| {
            while held.waits.front().is_some_and(|&(b, _)| b <= batch) {
                held.waits.pop_front();
            }
            let Some(&(_, at)) = held.waits.front() else {
                out.extend_from_slice(&held.out);
                return false;
            };
            out.extend_from_slice(&held.out[..at]);
            held.out.advance(at);
            for wait in &mut held.waits {
                wait.1 -= at;
            }
            true
        });
    }
}

impl Channels {
    /// Runs `write` with the buffer where channel `number`'s output goes now: `out`, or the
    /// channel's held output while a reply of it waits for the group commit.
    pub(super) fn output<R>(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        write: impl FnOnce(&mut Channels, &mut BytesMut) -> R,
    ) -> R {
        if self.held.is_empty() {
            return write(self, out);
        }
        let Some(mut held) = self.held.take(number) else {
            return write(self, out);
        };
        let result = write(self, &mut held.out);
        self.held.put_back(number, held);
        result
    }

    /// Answers a method of channel `number` with `reply` (none when `nowait`), after `unsaved`
    /// is on disk: the reply and all the channel's output after it are held until the end of
    /// this batch's group commit.
    pub(super) fn reply_saved(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        reply: Option<AMQPClass>,
        unsaved: Unsaved,
    ) {
        if unsaved.is_empty() {
            if let Some(reply) = reply {
                encode_method(out, number, &reply);
            }
            return;
        }
        if !self.held.unsaved.iter().any(|u| u.same_log(&unsaved)) {
            self.held.unsaved.push(unsaved);
        }
        let Some(reply) = reply else {
            return;
        };
        // Always into the channel's own held output (`out` may be the connection's): whatever
        // the channel writes after this is kept behind it, [`Channels::output`] merging.
        let batch = self.held.batch;
        let held = match self.held.channels.iter().position(|(n, _)| *n == number) {
            Some(index) => &mut self.held.channels[index].1,
            None => {
                self.held.channels.push((number, Output::default()));
                let last = self.held.channels.len() - 1;
                &mut self.held.channels[last].1
            }
        };
        held.waits.push_back((batch, held.out.len()));
        encode_method(&mut held.out, number, &reply);
    }

    /// The end of a batch: writes the definitions logs this batch appended to and asks the group
    /// commit to report on them (one callback); the report comes back through the outbox.
    pub(super) fn save_definitions(&mut self) {
        if self.held.unsaved.is_empty() {
            return;
        }
        let batch = self.held.batch;
        self.held.batch += 1;
        let mut store = None;
        let mut written = true;
        for unsaved in self.held.unsaved.drain(..) {
            match unsaved.write() {
                Ok(Some(at)) => store = Some(std::sync::Arc::clone(at)),
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "writing the durable definitions failed");
                    written = false;
                }
            }
        }
        let outbox = self.session.mailboxes.outbox();
        match store.filter(|_| written) {
            Some(store) => store
                .syncer
                .notify(Box::new(move |result| outbox.saved(batch, result.is_ok()))),
            None => outbox.saved(batch, written),
        }
    }

    /// The group commit reported on the save of batch `batch`: what waited for it is written to
    /// `out`; a failure is a connection exception (what was answered is not known to be safe).
    pub(crate) fn saved(
        &mut self,
        out: &mut BytesMut,
        batch: u64,
        ok: bool,
    ) -> Result<(), Exception> {
        if !ok {
            let error = Error::Internal("cannot save the durable definitions".into());
            return Err(Exception::from(error));
        }
        self.held.release(out, batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(out: &[u8], waits: &[(u64, usize)]) -> Output {
        Output {
            out: BytesMut::from(out),
            waits: waits.iter().copied().collect(),
        }
    }

    #[test]
    fn a_report_releases_up_to_the_next_reply_still_waiting() {
        let mut table = Held::default();
        table
            .channels
            .push((1, held(b"abcdef", &[(0, 0), (1, 2), (3, 4)])));
        table.channels.push((2, held(b"xy", &[(0, 1)])));
        let mut out = BytesMut::new();
        table.release(&mut out, 0);
        assert_eq!(&out[..], b"abxy" as &[u8]);
        // Channel 2 is released whole: its later output goes straight out.
        assert_eq!(table.channels.len(), 1);
        table.release(&mut out, 2);
        assert_eq!(&out[..], b"abxycd" as &[u8]);
        table.release(&mut out, 3);
        assert_eq!(&out[..], b"abxycdef" as &[u8]);
        assert!(table.is_empty());
    }

    #[test]
    fn output_held_meanwhile_goes_behind_what_was_held() {
        let mut table = Held::default();
        table.channels.push((1, held(b"ab", &[(0, 0)])));
        let taken = table.take(1).expect("held");
        table.channels.push((1, held(b"cd", &[(1, 1)])));
        table.put_back(1, taken);
        let (_, merged) = &table.channels[0];
        assert_eq!(&merged.out[..], b"abcd" as &[u8]);
        assert_eq!(merged.waits, [(0, 0), (1, 3)]);
    }
}

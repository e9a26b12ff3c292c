//! What waits for the end of a batch of input or mail, and for the group commit: the logs the
//! publishes appended to (flushed once per batch), publisher confirms that became due, and
//! publishes and `tx.commit`s whose answer waits for their messages to be synced, and the
//! definitions logs that durable declarations appended to (`held.rs`). Registers one
//! group-commit callback per flush (two with declarations), never one per publish; never syncs
//! anything itself.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use warren_protocol::method::encode_method;
use warren_protocol::spec::AMQPClass;

use super::{Channel, ChannelState, Channels, Mode};
use crate::error::{Error, Exception};
use crate::server::outbox::ConfirmTag;
use crate::server::registry::ChannelInfo;
use crate::store::Store;

/// Replies that wait for the group commit: publisher confirms and `tx.commit-ok`s.
#[derive(Debug)]
pub(super) struct SyncWait {
    store: Arc<Store>,
    pub(super) tags: Vec<ConfirmTag>,
    /// (channel, epoch) of commits to answer.
    pub(super) commits: Vec<(u16, u64)>,
}

impl Channels {
    /// Sends the publisher confirms that became due since the last flush, and asks the group
    /// commit to report on the publishes that wait for it (one callback for all of them).
    pub(crate) fn flush(&mut self, out: &mut BytesMut) {
        // The logs first: what the publishes appended reaches the files (one write per log)
        // and the group commit before anyone waits for it.
        let mut flushed = true;
        for queue in self.publishing.unflushed.drain(..) {
            flushed &= queue.flush_log().is_ok();
        }
        self.save_definitions();
        if let Some(wait) = self.awaiting_sync.take() {
            let outbox = self.session.mailboxes.outbox();
            let SyncWait {
                store,
                tags,
                commits,
            } = wait;
            if flushed {
                store.syncer.notify(Box::new(move |result| {
                    outbox.synced(tags, commits, result.is_ok())
                }));
            } else {
                outbox.synced(tags, commits, false);
            }
        }
        let mut due = std::mem::take(&mut self.confirms_due);
        for &number in &due {
            self.output(out, number, |channels, out| {
                if let Some(Channel {
                    state: ChannelState::Open,
                    mode: Mode::Confirm(confirms),
                    ..
                }) = channels.slot_mut(number)
                {
                    channels.counts.confirmed += confirms.flush(out, number);
                }
            });
        }
        due.clear();
        self.confirms_due = due;
        // The counters reach the registry once per flush, never per message.
        self.session.entry.publish_counts(&self.counts);
        if self.channels_changed {
            self.channels_changed = false;
            self.session.entry.set_channels(self.channel_infos());
        }
    }

    /// What the management API shows of each open channel.
    #[cold]
    fn channel_infos(&self) -> Vec<ChannelInfo> {
        let open = self.slots.iter().enumerate().filter_map(|(number, slot)| {
            let channel = slot.as_ref().filter(|c| c.state == ChannelState::Open)?;
            Some(ChannelInfo {
                number: u16::try_from(number).ok()?,
                confirm: matches!(channel.mode, Mode::Confirm(_)),
                transactional: matches!(channel.mode, Mode::Tx(_)),
                prefetch: channel.consumer_prefetch,
                global_prefetch: channel.credit.global_prefetch.load(Relaxed),
                consumers: u32::try_from(channel.consumers.len()).unwrap_or(u32::MAX),
                credit: Arc::clone(&channel.credit),
                unconfirmed: match &channel.mode {
                    Mode::Confirm(confirms) => Some(confirms.unconfirmed()),
                    _ => None,
                },
            })
        });
        open.collect()
    }

    /// Where publishes and commits waiting for `store`'s group commit are gathered until the
    /// next flush.
    pub(super) fn wait_for_sync(&mut self, store: Arc<Store>) -> &mut SyncWait {
        self.awaiting_sync.get_or_insert_with(|| SyncWait {
            store,
            tags: Vec::new(),
            commits: Vec::new(),
        })
    }

    /// The group commit reported on a transaction of channel `number`: answer its commit (or
    /// fail the channel: what it committed is not known to be safe).
    pub(crate) fn committed(&mut self, out: &mut BytesMut, number: u16, epoch: u64, ok: bool) {
        self.output(out, number, |channels, out| {
            channels.answer_commit(out, number, epoch, ok)
        })
    }

    fn answer_commit(&mut self, out: &mut BytesMut, number: u16, epoch: u64, ok: bool) {
        let current = matches!(
            self.slot_mut(number),
            Some(channel) if channel.epoch == epoch && channel.state == ChannelState::Open
        );
        if !current {
            return;
        }
        if ok {
            let ok = AMQPClass::Tx(warren_protocol::spec::tx::AMQPMethod::CommitOk(
                warren_protocol::spec::tx::CommitOk {},
            ));
            encode_method(out, number, &ok);
        } else {
            let error = Error::Internal("writing the committed messages to disk failed".into());
            let exception = Exception {
                error,
                class_id: 90,
                method_id: 20,
            };
            self.close_with(out, number, &exception);
        }
    }

    /// The group commit reported on a publish of channel `number`.
    pub(crate) fn synced(&mut self, number: u16, epoch: u64, tag: u64, ok: bool) {
        if let Some(Channel {
            state: ChannelState::Open,
            mode: Mode::Confirm(confirms),
            epoch: current,
            ..
        }) = self.slot_mut(number)
        {
            if *current == epoch {
                confirms.synced(tag, ok);
                if confirms.schedule() {
                    self.confirms_due.push(number);
                }
            }
        }
    }
}

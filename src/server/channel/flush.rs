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
use crate::broker::quorum::Quorum;
use crate::error::{Error, Exception};
use crate::server::outbox::ConfirmTag;
use crate::server::registry::ChannelInfo;
use crate::store::sync::Callback;
use crate::store::Store;

/// Replies that wait for the group commit: publisher confirms and `tx.commit-ok`s.
#[derive(Debug)]
pub(super) struct SyncWait {
    /// The group commit they wait for, if any of them wrote to a log.
    store: Option<Arc<Store>>,
    /// The quorum queues whose commits they wait for.
    quorums: Vec<Arc<Quorum>>,
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
                quorums,
                tags,
                commits,
            } = wait;
            if !flushed {
                outbox.synced(tags, commits, false);
            } else if let (Some(store), true) = (&store, quorums.is_empty()) {
                // The common case, one report: no joiner.
                store.syncer.notify(Box::new(move |result| {
                    outbox.synced(tags, commits, result.is_ok())
                }));
            } else {
                let done = Joined::new(move |ok| outbox.synced(tags, commits, ok));
                if let Some(store) = store {
                    store.syncer.notify(done.part());
                }
                for quorum in quorums {
                    quorum.notify(done.part());
                }
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

    /// Where publishes and commits waiting for `store`'s group commit (and the commits of
    /// `quorums`) are gathered until the next flush.
    pub(super) fn wait_for_sync(
        &mut self,
        store: Option<Arc<Store>>,
        quorums: Vec<Arc<Quorum>>,
    ) -> &mut SyncWait {
        let wait = self.awaiting_sync.get_or_insert_with(|| SyncWait {
            store: None,
            quorums: Vec::new(),
            tags: Vec::new(),
            commits: Vec::new(),
        });
        if wait.store.is_none() {
            wait.store = store;
        }
        for quorum in quorums {
            if !wait.quorums.iter().any(|q| Arc::ptr_eq(q, &quorum)) {
                wait.quorums.push(quorum);
            }
        }
        wait
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

/// One report made of several: the group commit's and each quorum queue's. The last to report
/// (the parts, and the joiner itself when it is dropped, after making them) calls `done`, told
/// whether every part succeeded.
struct Joined {
    state: Arc<JoinedState>,
}

/// What runs once every part has reported: told whether all succeeded.
type Done = Box<dyn FnOnce(bool) + Send>;

struct JoinedState {
    /// Parts not reported yet, the joiner counted as one until it is dropped.
    pending: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
    done: parking_lot::Mutex<Option<Done>>,
}

impl JoinedState {
    fn report(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Relaxed);
        }
        if self
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            if let Some(done) = self.done.lock().take() {
                done(!self.failed.load(Relaxed));
            }
        }
    }
}

impl Joined {
    fn new(done: impl FnOnce(bool) + Send + 'static) -> Joined {
        Joined {
            state: Arc::new(JoinedState {
                pending: std::sync::atomic::AtomicUsize::new(1),
                failed: std::sync::atomic::AtomicBool::new(false),
                done: parking_lot::Mutex::new(Some(Box::new(done))),
            }),
        }
    }

    /// A part's callback.
    fn part(&self) -> Callback {
        self.state.pending.fetch_add(1, Relaxed);
        let state = Arc::clone(&self.state);
        Box::new(move |result: std::io::Result<()>| state.report(result.is_ok()))
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.state.report(true);
    }
}

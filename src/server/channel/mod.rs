//! The channels of one connection: which numbers are open or closing, and what each channel does
//! with the frames addressed to it and the deliveries its consumers receive.
//!
//! Owned by the connection task (no locks of its own). Frames come in through
//! [`Channels::handle`]; deliveries from queues through [`Channels::deliver`]; replies and
//! deliveries are encoded into the connection's output buffer. Errors come back as
//! [`Exception`]s, whose scope (channel or connection) the connection acts on; a channel exception
//! is answered here by [`Channels::close_with`].
//!
//! The methods live beside this file by class: `declare` (exchange and queue), `basic` (publish,
//! consume, get, qos, ack and friends, confirm and tx). A channel that closes, for any reason,
//! gives every unacked delivery back to its queue and cancels its consumers at once
//! ([`Channels::release`]): nothing it held is lost, nothing waits for the socket to go.

mod basic;
mod confirm;
mod content;
mod declare;
mod settle;
mod timeout;
mod unacked;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{decode_method, encode_method, Method, ShortStr};
use warren_protocol::spec::{channel, AMQPClass};

use crate::broker::message::{Entry, Message, Stamp};
use crate::broker::queue::Queue;
use crate::broker::queue::{ChannelCredit, Consumer, Sink};
use crate::broker::vhost::{PublishScratch, Vhost};
use crate::error::{Error, Exception};
use crate::server::outbox::{ConfirmTag, Outbox};
use crate::server::UnackedTimeoutAction;
use crate::store::Store;

use content::{Content, Progress};
pub(crate) use settle::give_back;
use settle::{settle, settle_taken_back};
use unacked::{Delivery, Unacked};

/// Server settings a channel applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_message_size: u64,
    pub unacked_timeout: Duration,
    pub unacked_timeout_action: UnackedTimeoutAction,
}

/// What every channel of a connection shares: the vhost, the connection's identity and outbox.
#[derive(Debug)]
pub(crate) struct Session {
    pub vhost: Arc<Vhost>,
    /// The authenticated user: a published `user-id` property must name it.
    pub user: String,
    /// Identifies the connection as the owner of exclusive queues.
    pub connection: u64,
    pub outbox: Outbox,
    /// The connection's mailbox, where its consumers' deliveries go.
    pub sink: Sink,
    pub frame_max: u32,
    /// The client understands a server-sent `basic.cancel`.
    pub cancel_notify: bool,
    pub limits: Limits,
}

/// Replies that wait for the group commit: publisher confirms and `tx.commit-ok`s.
#[derive(Debug)]
struct SyncWait {
    store: Arc<Store>,
    tags: Vec<ConfirmTag>,
    /// (channel, epoch) of commits to answer.
    commits: Vec<(u16, u64)>,
}

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Open,
    /// The server sent `channel.close`; everything but `close`/`close-ok` is dropped until the
    /// client's `close-ok` frees the number.
    Closing,
}

/// Publisher-side mode: plain, confirms (`confirm.select`) or transactions (`tx.select`).
#[derive(Debug, Default)]
enum Mode {
    #[default]
    Plain,
    Confirm(confirm::Confirms),
    Tx(Tx),
}

/// Work held until `tx.commit`.
#[derive(Debug, Default)]
struct Tx {
    /// Message, mandatory, how queues hold it.
    publishes: Vec<(Arc<Message>, bool, Stamp)>,
    settles: Vec<(Delivery, Settle)>,
}

/// What an ack, nack or reject does with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    /// Rejected without requeue: dead-lettered where the queue says so, else dropped.
    Reject,
}

#[derive(Debug)]
struct Channel {
    /// Tells this channel from an earlier one that had the same number (for replies that arrive
    /// later, such as group-commit confirms).
    epoch: u64,
    state: ChannelState,
    /// A publish whose content is still arriving.
    content: Option<Content>,
    credit: Arc<ChannelCredit>,
    /// `basic.qos` with `global=false`: the prefetch of consumers started from now on.
    consumer_prefetch: u32,
    consumers: HashMap<ShortStr, Arc<Consumer>>,
    next_delivery_tag: u64,
    unacked: Unacked,
    /// The last queue declared on this channel, for methods that name the queue "".
    last_queue: Option<ShortStr>,
    /// The hidden queue of this channel's direct reply-to consumer.
    reply_queue: Option<ShortStr>,
    mode: Mode,
}

impl Channel {
    fn new(epoch: u64) -> Channel {
        Channel {
            epoch,
            state: ChannelState::Open,
            content: None,
            credit: Arc::new(ChannelCredit::default()),
            consumer_prefetch: 0,
            consumers: HashMap::new(),
            next_delivery_tag: 1,
            unacked: Unacked::default(),
            last_queue: None,
            reply_queue: None,
            mode: Mode::Plain,
        }
    }

    fn take_delivery_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// Asks the queues of starved consumers to dispatch again, after credit was freed.
    fn wake_consumers(&self) {
        for consumer in self.consumers.values() {
            if consumer.take_starved() {
                consumer.queue.dispatch();
            }
        }
    }
}

/// The channel table of one connection, indexed by channel number (1..=channel_max).
#[derive(Debug)]
pub(crate) struct Channels {
    slots: Vec<Option<Channel>>,
    channel_max: u16,
    session: Session,
    /// The publishes' buffers and what they leave to do: logs to flush at the next
    /// [`Channels::flush`], queues that push back (taken by [`Channels::take_pressured`]), and
    /// how many messages went into queues (counted down by [`Channels::spent`]).
    publishing: PublishScratch,
    /// Channels with publisher confirms to send at the next [`Channels::flush`].
    confirms_due: Vec<u16>,
    /// Publishes waiting for the group commit, registered with it as one callback at the next
    /// [`Channels::flush`]: (channel, epoch, delivery tag).
    awaiting_sync: Option<SyncWait>,
    /// A message was published on this connection (resource alarms block publishers only).
    published: bool,
    next_epoch: u64,
}

fn reply(out: &mut BytesMut, number: u16, method: channel::AMQPMethod) {
    encode_method(out, number, &AMQPClass::Channel(method));
}

impl Channels {
    pub(crate) fn new(channel_max: u16, session: Session) -> Channels {
        Channels {
            slots: Vec::new(),
            channel_max,
            session,
            publishing: PublishScratch::default(),
            confirms_due: Vec::new(),
            awaiting_sync: None,
            published: false,
            next_epoch: 1,
        }
    }

    /// Whether a message was ever published on this connection.
    pub(crate) fn has_published(&self) -> bool {
        self.published
    }

    /// Whether this connection's publishes have put `budget` messages into queues since this
    /// last said so (the count then starts again).
    pub(crate) fn spent(&mut self, budget: usize) -> bool {
        let spent = self.publishing.enqueued >= budget;
        if spent {
            self.publishing.enqueued = 0;
        }
        spent
    }

    /// Moves the queues that pushed back on this connection's publishes into `into`.
    pub(crate) fn take_pressured(&mut self, into: &mut Vec<Arc<Queue>>) {
        into.append(&mut self.publishing.pressured);
    }

    fn slot_mut(&mut self, number: u16) -> Option<&mut Channel> {
        self.slots.get_mut(number as usize).and_then(Option::as_mut)
    }

    /// The open channel `number` (methods are only dispatched to open channels).
    fn open(&mut self, number: u16) -> Result<&mut Channel, Error> {
        match self.slot_mut(number) {
            Some(channel) if channel.state == ChannelState::Open => Ok(channel),
            _ => Err(Error::ChannelNotOpen(number)),
        }
    }

    fn free(&mut self, number: u16) {
        self.release(number);
        if let Some(slot) = self.slots.get_mut(number as usize) {
            *slot = None;
        }
    }

    /// Sends `channel.close` for a channel exception, gives back what the channel held, and drops
    /// its further traffic until `close-ok`.
    pub(crate) fn close_with(&mut self, out: &mut BytesMut, number: u16, exception: &Exception) {
        let (code, _) = exception.error.reply();
        self.release(number);
        if let Some(channel) = self.slot_mut(number) {
            channel.state = ChannelState::Closing;
            channel.content = None;
        }
        reply(
            out,
            number,
            channel::AMQPMethod::Close(channel::Close {
                reply_code: code as u16,
                reply_text: exception.error.reply_text().into(),
                class_id: exception.class_id,
                method_id: exception.method_id,
            }),
        );
    }

    /// Cancels the channel's consumers and requeues everything it holds unacked (including acks
    /// of an uncommitted transaction, which never happened).
    fn release(&mut self, number: u16) {
        let Some(channel) = self.slot_mut(number) else {
            return;
        };
        let consumers = std::mem::take(&mut channel.consumers);
        let mut deliveries = Vec::new();
        if let Mode::Tx(tx) = &mut channel.mode {
            deliveries.extend(tx.settles.drain(..).map(|(d, _)| d));
            tx.publishes.clear();
        }
        channel.unacked.take_all(&mut deliveries);
        let mut taken_back = Vec::new();
        channel
            .unacked
            .take_taken_back(0, u64::MAX, &mut taken_back);
        let holder = Arc::clone(&channel.credit);
        let vhost = Arc::clone(&self.session.vhost);
        for consumer in consumers.into_values() {
            consumer.deactivate();
            if consumer.queue.remove_consumer(&consumer) {
                vhost.delete_if_unused(&consumer.queue);
            }
        }
        settle(&vhost, deliveries, Settle::Requeue);
        // What is still parked away from this channel is an ordinary requeued message now.
        settle_taken_back(&vhost, &holder, taken_back, Settle::Requeue);
    }

    /// Closes every channel (the connection is going away).
    pub(crate) fn release_all(&mut self) {
        for number in 0..self.slots.len() {
            self.release(number as u16);
        }
        self.slots.clear();
    }

    /// Handles one frame on channel `number` (never 0).
    pub(crate) fn handle(
        &mut self,
        out: &mut BytesMut,
        frame: Frame,
        now: Instant,
    ) -> Result<(), Exception> {
        let number = frame.channel;
        if number > self.channel_max {
            return Err(Error::ChannelMax {
                channel: number,
                channel_max: self.channel_max,
            }
            .into());
        }
        let max = self.session.limits.max_message_size;
        let Some(channel) = self.slot_mut(number) else {
            return self.handle_unopened(out, frame);
        };
        if channel.state == ChannelState::Closing {
            return self.handle_closing(out, frame);
        }
        if let Some(content) = channel.content.take() {
            let publish_error = |error: Error| Exception {
                error,
                class_id: 60,
                method_id: 40,
            };
            return match content.accept(frame, max).map_err(publish_error)? {
                Progress::More(content) => {
                    channel.content = Some(content);
                    Ok(())
                }
                Progress::Done(complete) => {
                    self.publish(out, number, complete).map_err(publish_error)
                }
            };
        }
        if frame.frame_type != FrameType::Method {
            return Err(Error::UnexpectedFrame(format!(
                "content frame on channel {number} without a content-bearing method"
            ))
            .into());
        }
        let method = decode_method(&frame.payload).map_err(Error::from)?;
        let (class_id, method_id) = method.ids();
        if (class_id, method_id) == (60, 10) {
            // basic.qos: the decoded form drops prefetch_size, which RabbitMQ refuses unless 0.
            if let Some(size) = frame.payload.get(4..8).filter(|size| size != &[0; 4]) {
                let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                return Err(Exception {
                    error: Error::NotImplemented(format!("prefetch_size!=0 ({size})")),
                    class_id,
                    method_id,
                });
            }
        }
        self.handle_method(out, number, method, now)
            .map_err(|error| Exception {
                error,
                class_id,
                method_id,
            })
    }

    fn handle_unopened(&mut self, out: &mut BytesMut, frame: Frame) -> Result<(), Exception> {
        let number = frame.channel;
        if frame.frame_type != FrameType::Method {
            return Err(Error::ChannelNotOpen(number).into());
        }
        let method = decode_method(&frame.payload).map_err(Error::from)?;
        let (class_id, method_id) = method.ids();
        match method {
            Method::Other(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                let index = number as usize;
                if self.slots.len() <= index {
                    self.slots.resize_with(index + 1, || None);
                }
                self.slots[index] = Some(Channel::new(self.next_epoch));
                self.next_epoch += 1;
                reply(out, number, channel::AMQPMethod::OpenOk(channel::OpenOk {}));
                Ok(())
            }
            _ => Err(Exception {
                error: Error::ChannelNotOpen(number),
                class_id,
                method_id,
            }),
        }
    }

    fn handle_closing(&mut self, out: &mut BytesMut, frame: Frame) -> Result<(), Exception> {
        if frame.frame_type != FrameType::Method {
            return Ok(());
        }
        match decode_method(&frame.payload) {
            Ok(Method::Other(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)))) => {
                self.free(frame.channel)
            }
            Ok(Method::Other(AMQPClass::Channel(channel::AMQPMethod::Close(_)))) => {
                // Both sides closed at once: answer, and the channel is gone.
                reply(
                    out,
                    frame.channel,
                    channel::AMQPMethod::CloseOk(channel::CloseOk {}),
                );
                self.free(frame.channel);
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: Method,
        now: Instant,
    ) -> Result<(), Error> {
        match method {
            Method::Publish(publish) => self.start_publish(number, publish),
            Method::Ack(ack) => {
                self.settle_tags(number, ack.delivery_tag, ack.multiple, Settle::Ack)
            }
            Method::Other(AMQPClass::Channel(method)) => self.channel_method(out, number, method),
            Method::Other(AMQPClass::Exchange(method)) => self.exchange_method(out, number, method),
            Method::Other(AMQPClass::Queue(method)) => self.queue_method(out, number, method),
            Method::Other(AMQPClass::Basic(method)) => self.basic_method(out, number, method, now),
            Method::Other(AMQPClass::Confirm(method)) => self.confirm_method(out, number, method),
            Method::Other(AMQPClass::Tx(method)) => self.tx_method(out, number, method),
            Method::Other(AMQPClass::Connection(_)) => Err(Error::CommandInvalid(format!(
                "connection method on channel {number}"
            ))),
            other => {
                let (class_id, method_id) = other.ids();
                Err(Error::NotImplemented(format!(
                    "method {class_id}.{method_id} is not supported"
                )))
            }
        }
    }

    fn channel_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: channel::AMQPMethod,
    ) -> Result<(), Error> {
        match method {
            channel::AMQPMethod::Open(_) => Err(Error::ChannelAlreadyOpen(number)),
            channel::AMQPMethod::Close(_) => {
                self.free(number);
                reply(
                    out,
                    number,
                    channel::AMQPMethod::CloseOk(channel::CloseOk {}),
                );
                Ok(())
            }
            channel::AMQPMethod::Flow(flow) => {
                let channel = self.open(number)?;
                channel
                    .credit
                    .flow
                    .store(flow.active, std::sync::atomic::Ordering::SeqCst);
                if flow.active {
                    channel.wake_consumers();
                }
                let ok = channel::FlowOk {
                    active: flow.active,
                };
                reply(out, number, channel::AMQPMethod::FlowOk(ok));
                Ok(())
            }
            // The answer to a server-sent flow; Warren never sends one.
            channel::AMQPMethod::FlowOk(_) => Ok(()),
            channel::AMQPMethod::CloseOk(_) | channel::AMQPMethod::OpenOk(_) => Err(
                Error::CommandInvalid(format!("unexpected channel method on channel {number}")),
            ),
        }
    }

    /// Writes a delivery from a queue to one of this connection's consumers, or gives it back
    /// to the queue if the consumer was cancelled or its channel closed meanwhile.
    pub(crate) fn deliver(
        &mut self,
        out: &mut BytesMut,
        consumer: Arc<Consumer>,
        entry: Entry,
        now: Instant,
    ) {
        let window_freed = consumer.written();
        let frame_max = self.session.frame_max;
        let timeout = self
            .session
            .limits
            .timeout(consumer.timeout, &consumer.queue);
        let channel = match self.slot_mut(consumer.channel) {
            Some(channel) if consumer.is_active() && channel.state == ChannelState::Open => channel,
            _ => return give_back(consumer, entry),
        };
        let tag = channel.take_delivery_tag();
        basic::encode_delivery(out, consumer.channel, &consumer.tag, tag, &entry, frame_max);
        // Dispatch again once half the window is free, or once this consumer stops holding up
        // a queue that pushes back on its publishers.
        if window_freed || (consumer.queue.flow.under_pressure() && !consumer.behind()) {
            consumer.queue.dispatch();
        }
        if consumer.no_ack {
            return;
        }
        let queue = Arc::clone(&consumer.queue);
        let delivery = Delivery {
            tag,
            entry,
            queue,
            consumer: Some(consumer),
        };
        channel.unacked.push(delivery, timeout, now);
    }

    /// The consumer's queue was deleted: forget the consumer and tell the client.
    pub(crate) fn cancelled(&mut self, out: &mut BytesMut, consumer: Arc<Consumer>) {
        if !consumer.is_active() {
            return;
        }
        consumer.deactivate();
        let cancel_notify = self.session.cancel_notify;
        if let Some(channel) = self.slot_mut(consumer.channel) {
            if channel.state == ChannelState::Open {
                channel.consumers.remove(&consumer.tag);
                if cancel_notify {
                    basic::send_cancel(out, consumer.channel, &consumer.tag);
                }
            }
        }
    }

    /// Sends the publisher confirms that became due since the last flush, and asks the group
    /// commit to report on the publishes that wait for it (one callback for all of them).
    pub(crate) fn flush(&mut self, out: &mut BytesMut) {
        // The logs first: what the publishes appended reaches the files (one write per log)
        // and the group commit before anyone waits for it.
        let mut flushed = true;
        for queue in self.publishing.unflushed.drain(..) {
            flushed &= queue.flush_log().is_ok();
        }
        if let Some(wait) = self.awaiting_sync.take() {
            let outbox = self.session.outbox.clone();
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
            if let Some(Channel {
                state: ChannelState::Open,
                mode: Mode::Confirm(confirms),
                ..
            }) = self.slot_mut(number)
            {
                confirms.flush(out, number);
            }
        }
        due.clear();
        self.confirms_due = due;
    }

    /// Where publishes and commits waiting for `store`'s group commit are gathered until the
    /// next flush.
    fn wait_for_sync(&mut self, store: Arc<Store>) -> &mut SyncWait {
        self.awaiting_sync.get_or_insert_with(|| SyncWait {
            store,
            tags: Vec::new(),
            commits: Vec::new(),
        })
    }

    /// The group commit reported on a transaction of channel `number`: answer its commit (or
    /// fail the channel: what it committed is not known to be safe).
    pub(crate) fn committed(&mut self, out: &mut BytesMut, number: u16, epoch: u64, ok: bool) {
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

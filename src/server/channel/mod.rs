//! The channels of one connection: which numbers are open or closing, and what each channel does
//! with the frames addressed to it and the deliveries its consumers receive.
//!
//! Owned by the connection task (no locks of its own). Frames come in through
//! [`Channels::handle`]; deliveries from queues through [`Channels::deliver`]; replies and
//! deliveries are encoded into the connection's output buffer. Errors come back as
//! [`Exception`]s, whose scope (channel or connection) the connection acts on; a channel exception
//! is answered here by [`Channels::close_with`].
//!
//! The methods live beside this file by class: `lifecycle` (the channel class: open, flow,
//! close), `declare` (exchange and queue), `basic` (publish, consume, get, qos, ack and friends,
//! confirm and tx). A channel that closes, for any reason, gives every unacked delivery back to
//! its queue and cancels its consumers at once ([`Channels::release`], in `lifecycle`): nothing it
//! held is lost, nothing waits for the socket to go. Deliveries from queues are written by
//! `deliver`; what waits for the end of a batch or for the group commit is sent by `flush`.

mod basic;
mod confirm;
mod content;
mod declare;
mod deliver;
mod flush;
mod held;
mod lifecycle;
mod permit;
mod settle;
mod timeout;
mod unacked;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{decode_method, Method, ShortStr};
use warren_protocol::spec::AMQPClass;

use crate::broker::delays::ReturnAddress;
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::Queue;
use crate::broker::queue::{ChannelCredit, Consumer};
use crate::broker::vhost::{PublishScratch, Vhost};
use crate::error::{Error, Exception};
use crate::server::access::Access;
use crate::server::outbox::Mailboxes;
use crate::server::UnackedTimeoutAction;

use content::{Content, Progress};
use flush::SyncWait;
pub(crate) use settle::{give_back, give_back_mail, return_mail};
use unacked::{Delivery, Unacked};

/// The server settings a channel applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSettings {
    pub max_message_size: u64,
    pub unacked_timeout: Duration,
    pub unacked_timeout_action: UnackedTimeoutAction,
}

/// What every channel of a connection shares: the vhost, the connection's identity and outbox.
#[derive(Debug)]
pub(crate) struct Session {
    pub vhost: Arc<Vhost>,
    /// What the user may do in the vhost.
    pub access: Access,
    /// The authenticated user: a published `user-id` property must name it.
    pub user: String,
    /// Identifies the connection as the owner of exclusive queues.
    pub connection: u64,
    /// The connection's mailbox (where its consumers' deliveries go) and outbox (where the
    /// group commit reports), opened when first used.
    pub mailboxes: Mailboxes,
    pub frame_max: u32,
    /// The client understands a server-sent `basic.cancel`.
    pub cancel_notify: bool,
    pub limits: ChannelSettings,
    /// The connection's registry entry: its counters are stored there at each flush.
    pub entry: Arc<crate::server::registry::ConnectionEntry>,
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
    /// Where a mandatory message held by a delayed-message exchange comes back to if it is
    /// unroutable when it fires (made at this channel's first mandatory publish; the vhost
    /// keeps only a weak reference, so closing the channel ends it).
    returns: Option<Arc<ReturnAddress>>,
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
            returns: None,
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
    /// Boxed: a table sized for a high channel number holds a pointer per number below it,
    /// not a whole channel (and a vector's first growth makes room for four).
    slots: Vec<Option<Box<Channel>>>,
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
    /// Replies waiting for the definitions log to reach the disk, and their channels' output
    /// held behind them.
    held: held::Held,
    /// A message was published on this connection (resource alarms block publishers only).
    published: bool,
    next_epoch: u64,
    /// Messages counted for the management API (stored in the registry at each flush).
    counts: crate::server::registry::Counts,
    /// A channel opened or closed, or changed its mode, prefetch or consumers: the registry's
    /// list of channels is renewed at the next flush.
    channels_changed: bool,
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
            held: held::Held::default(),
            published: false,
            next_epoch: 1,
            counts: Default::default(),
            channels_changed: false,
        }
    }

    /// The connection's mailbox and outbox, whose receiving ends the connection task takes.
    #[inline]
    pub(crate) fn mailboxes(&mut self) -> &mut Mailboxes {
        &mut self.session.mailboxes
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
        self.slots
            .get_mut(number as usize)
            .and_then(Option::as_deref_mut)
    }

    /// The open channel `number` (methods are only dispatched to open channels).
    fn open(&mut self, number: u16) -> Result<&mut Channel, Error> {
        match self.slot_mut(number) {
            Some(channel) if channel.state == ChannelState::Open => Ok(channel),
            _ => Err(Error::ChannelNotOpen(number)),
        }
    }

    /// A frame on a channel number above `channel_max`: refused (530). When as many channels as
    /// `channel_max` are open, in RabbitMQ's words.
    #[cold]
    fn over_channel_max(&self, number: u16) -> Error {
        let open = self.slots.iter().filter(|slot| slot.is_some()).count();
        match open >= usize::from(self.channel_max) {
            true => Error::NotAllowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            )),
            false => Error::ChannelMax {
                channel: number,
                channel_max: self.channel_max,
            },
        }
    }

    /// Handles one frame on channel `number` (never 0).
    #[inline]
    pub(crate) fn handle(
        &mut self,
        out: &mut BytesMut,
        frame: Frame,
        now: Instant,
    ) -> Result<(), Exception> {
        let number = frame.channel;
        self.output(out, number, |channels, out| {
            channels.handle_frame(out, frame, now)
        })
    }

    fn handle_frame(
        &mut self,
        out: &mut BytesMut,
        frame: Frame,
        now: Instant,
    ) -> Result<(), Exception> {
        let number = frame.channel;
        if number > self.channel_max {
            return Err(self.over_channel_max(number).into());
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
            Method::Other(AMQPClass::Channel(method)) => {
                self.channels_changed = true;
                self.channel_method(out, number, method)
            }
            Method::Other(AMQPClass::Exchange(method)) => self.exchange_method(out, number, method),
            Method::Other(AMQPClass::Queue(method)) => self.queue_method(out, number, method),
            Method::Other(AMQPClass::Basic(method)) => {
                self.channels_changed = true;
                self.basic_method(out, number, method, now)
            }
            Method::Other(AMQPClass::Confirm(method)) => {
                self.channels_changed = true;
                self.confirm_method(out, number, method)
            }
            Method::Other(AMQPClass::Tx(method)) => {
                self.channels_changed = true;
                self.tx_method(out, number, method)
            }
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
}

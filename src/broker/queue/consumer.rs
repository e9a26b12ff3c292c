//! Consumers as a queue sees them: the [`Consumer`] handle a queue dispatches to, the credit that
//! bounds what it may hand over, and the [`Sink`] its deliveries go into (its connection's
//! mailbox, drained by the connection task).
//!
//! A queue decides *which* consumer gets a message, under its own lock, and hands the delivery to
//! that consumer's sink; the connection task assigns the delivery tag and writes the frames.
//! Credit (prefetch, channel-wide prefetch, `channel.flow`, and a bound on deliveries not yet
//! written to the socket) is kept in atomics so that the queue can check it without touching the
//! connection's state. This module never locks anything.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use warren_protocol::method::ShortStr;

use super::super::message::Entry;
use super::Queue;

/// How many deliveries may wait in an outbox for one consumer before its queue stops handing it
/// more: the bound that keeps a no-ack consumer on a slow socket from draining a queue into RAM.
pub const UNSENT_WINDOW: u32 = 1024;

/// What queues send to a consumer's connection.
#[derive(Debug)]
pub enum Mail {
    /// A message for one of the connection's consumers.
    Deliver {
        consumer: Arc<Consumer>,
        entry: Entry,
    },
    /// The consumer's queue was deleted: tell the client (`basic.cancel`) and forget it.
    Cancelled { consumer: Arc<Consumer> },
}

/// Where a consumer's deliveries go: the sending side of its connection's mailbox (unbounded:
/// what one consumer may have in it is bounded by its credit). The queue hands a delivery over
/// under its lock and never waits; the connection task drains the mailbox between its reads.
#[derive(Debug, Clone)]
pub struct Sink {
    tx: mpsc::UnboundedSender<Mail>,
    /// The connection it belongs to (its id: the management API names consumers' connections).
    connection: u64,
}

impl Sink {
    pub fn new(connection: u64) -> (Sink, mpsc::UnboundedReceiver<Mail>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Sink { tx, connection }, rx)
    }

    /// Hands a delivery to the consumer's connection; gives the entry back if that has ended.
    #[inline]
    fn deliver(&self, consumer: Arc<Consumer>, entry: Entry) -> Result<(), Entry> {
        match self.tx.send(Mail::Deliver { consumer, entry }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Mail::Deliver { entry, .. })) => Err(entry),
            Err(_) => Ok(()),
        }
    }

    /// Tells the connection that the consumer's queue is gone.
    fn cancelled(&self, consumer: Arc<Consumer>) {
        let _ = self.tx.send(Mail::Cancelled { consumer });
    }
}

/// Credit shared by all consumers of one channel.
#[derive(Debug)]
pub struct ChannelCredit {
    /// `basic.qos` with `global=true`: unacked deliveries allowed across the channel (0: no limit).
    pub global_prefetch: AtomicU32,
    /// Unacked deliveries to the channel's consumers.
    unacked: AtomicU32,
    /// `channel.flow`: the client wants deliveries.
    pub flow: AtomicBool,
}

impl ChannelCredit {
    /// Unacked deliveries to the channel's consumers now.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(SeqCst)
    }
}

impl Default for ChannelCredit {
    fn default() -> Self {
        ChannelCredit {
            global_prefetch: AtomicU32::new(0),
            unacked: AtomicU32::new(0),
            flow: AtomicBool::new(true),
        }
    }
}

/// One `basic.consume`: what the queue needs to hand it messages.
#[derive(Debug)]
pub struct Consumer {
    pub channel: u16,
    pub tag: ShortStr,
    pub queue: Arc<Queue>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// `x-priority` of basic.consume: consumers of a higher priority get messages first; lower
    /// ones only while all higher ones are out of credit.
    pub priority: i64,
    /// `x-consumer-timeout` of basic.consume (RabbitMQ 3.12+): how long its deliveries may stay
    /// unacked, before the queue's argument and the server default; zero: for ever.
    pub timeout: Option<Duration>,
    /// One of its deliveries passed the unacked timeout (reported once per consumer).
    timed_out: AtomicBool,
    /// Per-consumer prefetch (0: no limit): set at `basic.consume`, and changed by a later
    /// `basic.qos` with `global=false` on its channel.
    prefetch: AtomicU32,
    unacked: AtomicU32,
    /// Deliveries in the outbox, not yet written.
    unsent: AtomicU32,
    /// Set by the queue when it had a message but no credit (prefetch, flow) for this consumer;
    /// whoever frees credit clears it and asks the queue to dispatch again.
    starved: AtomicBool,
    /// Like `starved`, when the unsent window was the limit: cleared by the connection once it
    /// has written half the window.
    window_starved: AtomicBool,
    /// Cleared when the consumer is cancelled or its channel closes: deliveries still in the
    /// outbox then go back to the queue.
    active: AtomicBool,
    pub credit: Arc<ChannelCredit>,
    sink: Sink,
}

impl Consumer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel: u16,
        tag: ShortStr,
        queue: Arc<Queue>,
        no_ack: bool,
        exclusive: bool,
        prefetch: u32,
        credit: Arc<ChannelCredit>,
        sink: Sink,
    ) -> Consumer {
        Consumer {
            channel,
            tag,
            queue,
            no_ack,
            exclusive,
            priority: 0,
            timeout: None,
            timed_out: AtomicBool::new(false),
            prefetch: AtomicU32::new(prefetch),
            unacked: AtomicU32::new(0),
            unsent: AtomicU32::new(0),
            starved: AtomicBool::new(false),
            window_starved: AtomicBool::new(false),
            active: AtomicBool::new(true),
            credit,
            sink,
        }
    }

    /// Its deliveries not yet settled.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(SeqCst)
    }

    /// The id of the connection it belongs to.
    pub fn connection(&self) -> u64 {
        self.sink.connection
    }

    /// Its prefetch now (0: no limit).
    pub fn prefetch(&self) -> u32 {
        self.prefetch.load(SeqCst)
    }

    /// Sets the consumer's `x-priority` (before it is added to its queue).
    pub fn with_priority(mut self, priority: i64) -> Consumer {
        self.priority = priority;
        self
    }

    /// Sets the consumer's `x-consumer-timeout` (before it is added to its queue).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Consumer {
        self.timeout = timeout;
        self
    }

    /// Changes the prefetch (`basic.qos`, `global=false`); true when that gave it credit it
    /// lacked, so that the caller asks its queue to dispatch again.
    pub fn set_prefetch(&self, prefetch: u32) -> bool {
        let before = self.prefetch.swap(prefetch, SeqCst);
        let raised = before != 0 && (prefetch == 0 || prefetch > before);
        raised && self.take_starved()
    }

    /// Marks that one of its deliveries passed its unacked timeout; true the first time.
    pub fn note_timed_out(&self) -> bool {
        !self.timed_out.swap(true, SeqCst)
    }

    /// Takes credit for one delivery, or marks the consumer starved. Called by the queue under
    /// its lock, so only releases race with it.
    pub(crate) fn try_take(&self) -> bool {
        if self.has_credit() {
            self.take();
            return true;
        }
        let flag = if self.unsent.load(SeqCst) >= UNSENT_WINDOW {
            &self.window_starved
        } else {
            &self.starved
        };
        flag.store(true, SeqCst);
        // Credit freed between the check and the flag would find no flag: look once more.
        if self.has_credit() {
            flag.store(false, SeqCst);
            self.take();
            return true;
        }
        false
    }

    /// Whether the broker, not the client, is what holds this consumer back: its outbox window
    /// is full, or it is at its prefetch limit while at least half of what it holds has not even
    /// been written to its socket yet (a client slow to ack has everything written). The queue
    /// then pushes back on its publishers (see [`super::flow`]).
    pub(crate) fn behind(&self) -> bool {
        if !self.credit.flow.load(SeqCst) {
            return false;
        }
        let unsent = self.unsent.load(SeqCst);
        if unsent >= UNSENT_WINDOW {
            return true;
        }
        if self.no_ack || unsent == 0 {
            return false;
        }
        let unacked = self.unacked.load(SeqCst);
        let prefetch = self.prefetch.load(SeqCst);
        let at_limit = prefetch != 0 && unacked >= prefetch;
        at_limit && 2 * unsent >= unacked
    }

    /// Deliveries in the outbox, not yet written.
    pub fn unsent(&self) -> u32 {
        self.unsent.load(SeqCst)
    }

    fn has_credit(&self) -> bool {
        if !self.credit.flow.load(SeqCst) || self.unsent.load(SeqCst) >= UNSENT_WINDOW {
            return false;
        }
        if self.no_ack {
            return true;
        }
        let prefetch = self.prefetch.load(SeqCst);
        if prefetch != 0 && self.unacked.load(SeqCst) >= prefetch {
            return false;
        }
        let global = self.credit.global_prefetch.load(SeqCst);
        global == 0 || self.credit.unacked.load(SeqCst) < global
    }

    fn take(&self) {
        self.unsent.fetch_add(1, SeqCst);
        if !self.no_ack {
            self.unacked.fetch_add(1, SeqCst);
            self.credit.unacked.fetch_add(1, SeqCst);
        }
    }

    /// Takes credit for a delivery another party decided on (a quorum queue's machine, which
    /// keeps the consumer within its prefetch itself).
    pub(crate) fn take_assigned(&self) {
        self.take();
    }

    /// Pushes a delivery to the connection; false (and the credit returned) if it has gone.
    #[inline]
    pub(crate) fn send(self: &Arc<Self>, entry: Entry) -> Result<(), Entry> {
        self.sink
            .deliver(Arc::clone(self), entry)
            .inspect_err(|_| self.give_back())
    }

    /// Returns the credit of a [`Consumer::try_take`] that delivered nothing.
    pub(crate) fn give_back(&self) {
        self.written();
        if !self.no_ack {
            self.settled(1);
        }
    }

    /// Tells the connection that the consumer's queue is gone.
    pub(crate) fn cancel(self: &Arc<Self>) {
        self.sink.cancelled(Arc::clone(self));
    }

    /// A delivery left the outbox (written, or dropped for a closed channel). True when the
    /// queue held back deliveries for the window and half of it is free now: the caller asks the
    /// queue to dispatch again.
    pub fn written(&self) -> bool {
        let unsent = self.unsent.fetch_sub(1, SeqCst) - 1;
        unsent <= UNSENT_WINDOW / 2
            && self.window_starved.load(SeqCst)
            && self.window_starved.swap(false, SeqCst)
    }

    /// `n` deliveries were acked, rejected, requeued or taken back.
    pub fn settled(&self, n: u32) {
        self.unacked.fetch_sub(n, SeqCst);
        self.credit.unacked.fetch_sub(n, SeqCst);
    }

    /// Whether the consumer still takes deliveries (not cancelled, channel open).
    pub fn is_active(&self) -> bool {
        self.active.load(SeqCst)
    }

    /// Marks the consumer cancelled: its undelivered messages go back to the queue.
    pub fn deactivate(&self) {
        self.active.store(false, SeqCst);
    }

    /// Clears the starved flag; true if the queue should be asked to dispatch again.
    pub fn take_starved(&self) -> bool {
        self.starved.load(SeqCst) && self.starved.swap(false, SeqCst)
    }
}

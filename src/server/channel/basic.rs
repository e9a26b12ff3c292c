//! The basic class, publisher confirms and transactions: publishing (routing, mandatory returns,
//! confirms), consuming, `basic.get`, prefetch, and settling deliveries (ack, nack, reject,
//! recover).
//!
//! Routing one publish takes the topology's read lock once, into a reusable buffer, then appends
//! the one shared message to each queue: no per-destination copy of anything but an `Arc`.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use warren_protocol::content::{
    encode_body, encode_content_header, encode_properties, publish_checks, ContentHeader,
};
use warren_protocol::method::{
    encode_deliver, encode_method, Deliver, Publish, ShortStr, CLASS_BASIC,
};
use warren_protocol::spec::{basic, confirm, tx, AMQPClass};
use warren_protocol::types::FieldTable;

use super::confirm::{Confirms, Outcome};
use super::content::{Complete, Content};
use super::settle::settle_committed;
use super::unacked::Delivery;
use super::{Channel, ChannelState, Channels, Mode, Settle, Tx};
use crate::broker::arguments::{consume_priority, consume_timeout, parse_expiration};
use crate::broker::delays::ReturnAddress;
use crate::broker::message::{now_ms, Entry, Message, Stamp};
use crate::broker::queue::ConsumeRefused;
use crate::broker::queue::Consumer;
use crate::broker::stream::args as stream_args;
use crate::broker::stream::{Filter, Start};
use crate::broker::vhost::{QueueDeclare, Routed};
use crate::error::{Error, ReplyCode};
use crate::server::access::{Perm, Resource};

/// The pseudo-queue of direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn send(out: &mut BytesMut, number: u16, method: basic::AMQPMethod) {
    encode_method(out, number, &AMQPClass::Basic(method));
}

/// Writes basic.deliver with the message's content.
pub(super) fn encode_delivery(
    out: &mut BytesMut,
    number: u16,
    consumer_tag: &ShortStr,
    delivery_tag: u64,
    entry: &Entry,
    frame_max: u32,
) {
    let message = &entry.message;
    let deliver = Deliver {
        consumer_tag: consumer_tag.as_bytes(),
        delivery_tag,
        redelivered: entry.redelivered,
        exchange: message.exchange_bytes(),
        routing_key: message.routing_key_bytes(),
    };
    encode_deliver(out, number, &deliver);
    encode_content_header(
        out,
        number,
        message.body().len() as u64,
        message.properties(),
    );
    encode_body(out, number, message.body(), frame_max);
}

/// `basic.return` 312 NO_ROUTE with the message's content.
fn write_return(out: &mut BytesMut, number: u16, message: &Message, frame_max: u32) {
    let code = ReplyCode::NoRoute;
    let ret = basic::Return {
        reply_code: code as u16,
        reply_text: code.name().into(),
        exchange: message.exchange().into(),
        routing_key: message.routing_key().into(),
    };
    send(out, number, basic::AMQPMethod::Return(ret));
    let body = message.body();
    encode_content_header(out, number, body.len() as u64, message.properties());
    encode_body(out, number, body, frame_max);
}

/// Tells the client that the server cancelled one of its consumers.
pub(super) fn send_cancel(out: &mut BytesMut, number: u16, consumer_tag: &ShortStr) {
    let cancel = basic::Cancel {
        consumer_tag: consumer_tag.as_str().into(),
        nowait: true,
    };
    send(out, number, basic::AMQPMethod::Cancel(cancel));
}

impl Channels {
    pub(super) fn start_publish(&mut self, number: u16, publish: Publish) -> Result<(), Error> {
        if publish.immediate {
            return Err(Error::NotImplemented("immediate=true".into()));
        }
        self.open(number)?.content = Some(Content::new(publish));
        self.published = true;
        Ok(())
    }

    /// A whole message has arrived: route it (or hold it for the transaction) and confirm it.
    pub(super) fn publish(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        complete: Complete,
    ) -> Result<(), Error> {
        let Complete {
            publish,
            mut properties,
            body,
        } = complete;
        let (stamp, direct_reply) = self.check_properties(&properties)?;
        if direct_reply {
            properties = self.direct_reply_to(number, &properties)?;
        }
        self.permit_publish(&publish)?;
        let message = Arc::new(Message::new(
            publish.exchange.as_bytes(),
            publish.routing_key.as_bytes(),
            &properties,
            body,
        ));
        if matches!(self.open(number)?.mode, Mode::Tx(_)) {
            self.session.vhost.check_publish(message.exchange_bytes())?;
            if let Mode::Tx(tx) = &mut self.open(number)?.mode {
                tx.publishes.push((message, publish.mandatory, stamp));
            }
            return Ok(());
        }
        let routed = self.route(out, number, &message, publish.mandatory, stamp)?;
        let channel = self.open(number)?;
        let epoch = channel.epoch;
        if let Mode::Confirm(confirms) = &mut channel.mode {
            let outcome = routed.safety;
            let tag = confirms.published(outcome);
            let newly_due = confirms.schedule();
            if outcome == Outcome::Syncing && (routed.store.is_some() || !routed.quorums.is_empty())
            {
                self.wait_for_sync(routed.store, routed.quorums)
                    .tags
                    .push((number, epoch, tag));
            }
            if newly_due {
                self.confirms_due.push(number);
            }
        }
        Ok(())
    }

    /// Direct reply-to: a publish whose reply-to is `amq.rabbitmq.reply-to` gets the name of this
    /// channel's reply consumer's queue instead, so that the answer comes straight back to it.
    fn direct_reply_to(&mut self, number: u16, properties: &Bytes) -> Result<Bytes, Error> {
        let Some(name) = self.open(number)?.reply_queue.clone() else {
            return Err(Error::PreconditionFailed(
                "fast reply consumer does not exist".into(),
            ));
        };
        let header = ContentHeader {
            class_id: CLASS_BASIC,
            body_size: 0,
            properties: properties.clone(),
        };
        let decoded = header
            .decode_properties()
            .map_err(|e| Error::PreconditionFailed(format!("invalid properties: {e}")))?;
        Ok(encode_properties(
            &decoded.with_reply_to(name.as_str().into()),
        ))
    }

    /// RabbitMQ's checks of a published message's properties (406 on failure); how queues are
    /// to hold it (persistent, time to live, priority), and whether its reply-to asks for
    /// direct reply-to.
    fn check_properties(&self, properties: &[u8]) -> Result<(Stamp, bool), Error> {
        let checks = publish_checks(properties);
        if let Some(user_id) = checks.user_id {
            if user_id != self.session.user.as_bytes() {
                return Err(Error::PreconditionFailed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    String::from_utf8_lossy(user_id),
                    self.session.user
                )));
            }
        }
        if let Some(mode) = checks.delivery_mode.filter(|mode| !matches!(mode, 1 | 2)) {
            return Err(Error::PreconditionFailed(format!(
                "invalid message: {{delivery_mode_unknown,{mode}}}"
            )));
        }
        let ttl = match checks.expiration {
            None => None,
            Some(expiration) => Some(parse_expiration(expiration).map_err(|reason| {
                Error::PreconditionFailed(format!(
                    "invalid expiration '{}': {reason}",
                    String::from_utf8_lossy(expiration)
                ))
            })?),
        };
        let direct_reply = checks.reply_to == Some(DIRECT_REPLY_TO.as_bytes());
        let stamp = Stamp {
            persistent: checks.delivery_mode == Some(2),
            ttl,
            priority: checks.priority.unwrap_or(0),
        };
        Ok((stamp, direct_reply))
    }

    /// Publishes a message (one call into the vhost); returns it to the publisher
    /// (`basic.return` 312) if it was mandatory and reached no queue.
    fn route(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        message: &Arc<Message>,
        mandatory: bool,
        stamp: Stamp,
    ) -> Result<Routed, Error> {
        let returns = match mandatory {
            true => Some(self.return_address(number)?),
            false => None,
        };
        let routed = self.session.vhost.publish_from(
            message,
            stamp,
            returns.as_ref(),
            &mut self.publishing,
        )?;
        self.counts.received += 1;
        self.counts.routed += u64::from(routed.routed);
        if !routed.routed && mandatory {
            write_return(out, number, message, self.session.frame_max);
        }
        Ok(routed)
    }

    /// The channel's return address for delayed mandatory messages (made at its first use):
    /// it reaches this channel through the connection's outbox.
    fn return_address(&mut self, number: u16) -> Result<Arc<ReturnAddress>, Error> {
        if let Some(address) = &self.open(number)?.returns {
            return Ok(Arc::clone(address));
        }
        let outbox = self.session.mailboxes.outbox();
        let channel = self.open(number)?;
        let epoch = channel.epoch;
        let address = ReturnAddress::new(move |message| outbox.returned(number, epoch, message));
        channel.returns = Some(Arc::clone(&address));
        Ok(address)
    }

    /// A delayed mandatory message published on channel `number` was unroutable when it
    /// fired: `basic.return` it, if that channel is still the one that published it.
    pub(crate) fn return_fired(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        epoch: u64,
        message: &Message,
    ) {
        let frame_max = self.session.frame_max;
        self.output(out, number, |channels, out| {
            if matches!(
                channels.slot_mut(number),
                Some(channel) if channel.epoch == epoch && channel.state == ChannelState::Open
            ) {
                write_return(out, number, message, frame_max);
            }
        })
    }

    pub(super) fn basic_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: basic::AMQPMethod,
        now: Instant,
    ) -> Result<(), Error> {
        use basic::AMQPMethod as B;
        match method {
            B::Qos(qos) => self.qos(out, number, qos),
            B::Consume(consume) => self.consume(out, number, consume),
            B::Cancel(cancel) => {
                self.cancel(number, cancel.consumer_tag.as_str())?;
                if !cancel.nowait {
                    let ok = basic::CancelOk {
                        consumer_tag: cancel.consumer_tag,
                    };
                    send(out, number, B::CancelOk(ok));
                }
                Ok(())
            }
            B::Get(get) => self.get(out, number, get, now),
            B::Ack(ack) => self.settle_tags(number, ack.delivery_tag, ack.multiple, Settle::Ack),
            B::Reject(reject) => {
                let how = if reject.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.settle_tags(number, reject.delivery_tag, false, how)
            }
            B::Nack(nack) => {
                let how = if nack.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.settle_tags(number, nack.delivery_tag, nack.multiple, how)
            }
            B::Recover(recover) => {
                self.recover(number, recover.requeue)?;
                send(out, number, B::RecoverOk(basic::RecoverOk {}));
                Ok(())
            }
            B::RecoverAsync(recover) => self.recover(number, recover.requeue),
            _ => Err(Error::CommandInvalid(
                "this basic method is not sent by clients".into(),
            )),
        }
    }

    fn qos(&mut self, out: &mut BytesMut, number: u16, qos: basic::Qos) -> Result<(), Error> {
        let channel = self.open(number)?;
        let count = u32::from(qos.prefetch_count);
        if qos.global {
            channel.credit.global_prefetch.store(count, SeqCst);
            channel.wake_consumers();
        } else {
            // The prefetch of consumers started from now on, and (unlike RabbitMQ, which keeps
            // their old one) of the channel's running consumers too: the spec's per-channel
            // reading, on which kombu/Celery rely against any broker but RabbitMQ (a worker
            // raises the prefetch this way for every ETA task it holds).
            channel.consumer_prefetch = count;
            for consumer in channel.consumers.values() {
                if consumer.set_prefetch(count) {
                    consumer.queue.dispatch();
                }
            }
        }
        send(out, number, basic::AMQPMethod::QosOk(basic::QosOk {}));
        Ok(())
    }

    /// The queue a method names, or the channel's last declared queue for "".
    pub(super) fn queue_name(&mut self, number: u16, name: &str) -> Result<ShortStr, Error> {
        if !name.is_empty() {
            return Ok(ShortStr::copy_from_str(name));
        }
        self.open(number)?
            .last_queue
            .clone()
            .ok_or_else(|| Error::NotFound("no previously declared queue".into()))
    }

    /// Direct reply-to: consuming from `amq.rabbitmq.reply-to` (no-ack only, once per channel)
    /// makes a hidden exclusive, auto-delete queue named `amq.rabbitmq.reply-to.<random>` for
    /// this channel; publishes with that reply-to are rewritten to its name.
    fn reply_queue(&mut self, number: u16, no_ack: bool) -> Result<ShortStr, Error> {
        if !no_ack {
            return Err(Error::PreconditionFailed(
                "reply consumer cannot acknowledge".into(),
            ));
        }
        if self.open(number)?.reply_queue.is_some() {
            return Err(Error::PreconditionFailed(
                "reply consumer already set".into(),
            ));
        }
        let name = self
            .session
            .vhost
            .generate_name(&format!("{DIRECT_REPLY_TO}."));
        let declare = QueueDeclare {
            name: name.clone(),
            server_named: true,
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: FieldTable::default(),
        };
        self.session
            .vhost
            .declare_queue(declare, self.session.connection)?;
        self.open(number)?.reply_queue = Some(name.clone());
        Ok(name)
    }

    fn consume(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        consume: basic::Consume,
    ) -> Result<(), Error> {
        let name = match consume.queue.as_str() {
            DIRECT_REPLY_TO => self.reply_queue(number, consume.no_ack)?,
            other => {
                let name = self.queue_name(number, other)?;
                self.permit(Perm::Read, Resource::Queue, name.as_bytes())?;
                name
            }
        };
        let queue = self.session.vhost.queue(&name, self.session.connection)?;
        let stream_start = match queue.stream() {
            Some(_) => Some(self.stream_consume(number, &name, &consume)?),
            None => None,
        };
        let priority = consume_priority(&consume.arguments).map_err(|reason| {
            Error::PreconditionFailed(format!(
                "invalid arg 'x-priority' for queue '{name}' in vhost '{}': {reason}",
                self.session.vhost.name
            ))
        })?;
        let timeout = consume_timeout(&consume.arguments).map_err(|reason| {
            Error::PreconditionFailed(format!(
                "invalid arg 'x-consumer-timeout' for queue '{name}' in vhost '{}': {reason}",
                self.session.vhost.name
            ))
        })?;
        let tag = if consume.consumer_tag.as_str().is_empty() {
            self.session.vhost.generate_name("amq.ctag-")
        } else {
            ShortStr::copy_from_str(consume.consumer_tag.as_str())
        };
        let sink = self.session.mailboxes.sink();
        let vhost_name = self.session.vhost.name.clone();
        let channel = self.open(number)?;
        if channel.consumers.contains_key(&tag) {
            return Err(Error::NotAllowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let consumer = Arc::new(
            Consumer::new(
                number,
                tag.clone(),
                Arc::clone(&queue),
                consume.no_ack,
                consume.exclusive,
                channel.consumer_prefetch,
                Arc::clone(&channel.credit),
                sink,
            )
            .with_priority(priority)
            .with_timeout(timeout),
        );
        // Registered on the channel first: the queue may hand it messages at once.
        channel.consumers.insert(tag.clone(), Arc::clone(&consumer));
        let added = match (queue.stream(), stream_start) {
            (Some(stream), Some((start, filter))) => stream
                .subscribe(Arc::clone(&consumer), start, filter)
                .map_err(ConsumeRefused::from),
            _ => queue.add_consumer(Arc::clone(&consumer)),
        };
        if let Err(refused) = added {
            channel.consumers.remove(&tag);
            consumer.deactivate();
            return Err(match refused {
                ConsumeRefused::ExclusiveInUse => Error::AccessRefused(format!(
                    "queue '{name}' in vhost '{vhost_name}' in exclusive use"
                )),
                ConsumeRefused::Deleted => {
                    Error::NotFound(format!("no queue '{name}' in vhost '{vhost_name}'"))
                }
            });
        }
        // It may have delivered messages held in memory: the rate sampler looks at it.
        self.session.vhost.activity().touched(&queue);
        if !consume.nowait {
            let ok = basic::ConsumeOk {
                consumer_tag: tag.as_str().into(),
            };
            send(out, number, basic::AMQPMethod::ConsumeOk(ok));
        }
        Ok(())
    }

    /// RabbitMQ's conditions on a stream consumer (a prefetch, manual acks) and where it starts
    /// (`x-stream-offset`) and what it filters (`x-stream-filter`).
    fn stream_consume(
        &mut self,
        number: u16,
        name: &ShortStr,
        consume: &basic::Consume,
    ) -> Result<(Start, Option<Filter>), Error> {
        let vhost = self.session.vhost.name.clone();
        if self.open(number)?.consumer_prefetch == 0 {
            return Err(Error::PreconditionFailed(format!(
                "consumer prefetch count is not set for 'queue '{name}' in vhost '{vhost}''"
            )));
        }
        if consume.no_ack {
            return Err(Error::NotImplemented(format!(
                "automatic acknowledgement not supported by stream queues queue '{name}' in \
                 vhost '{vhost}'"
            )));
        }
        let start = stream_args::start(&consume.arguments, now_ms()).map_err(|reason| {
            Error::PreconditionFailed(format!(
                "failed consuming from stream queue '{name}' in vhost '{vhost}': {reason}"
            ))
        })?;
        Ok((start, Filter::from_arguments(&consume.arguments)))
    }

    /// `basic.cancel`; an unknown tag is not an error.
    fn cancel(&mut self, number: u16, tag: &str) -> Result<(), Error> {
        let channel = self.open(number)?;
        let Some(consumer) = channel.consumers.remove(tag.as_bytes()) else {
            return Ok(());
        };
        consumer.deactivate();
        if channel.reply_queue.as_ref() == Some(&consumer.queue.name) {
            channel.reply_queue = None;
        }
        if consumer.queue.remove_consumer(&consumer) {
            self.session.vhost.delete_if_unused(&consumer.queue);
        }
        Ok(())
    }

    fn get(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        get: basic::Get,
        now: Instant,
    ) -> Result<(), Error> {
        let name = self.queue_name(number, get.queue.as_str())?;
        self.permit(Perm::Read, Resource::Queue, name.as_bytes())?;
        let queue = self.session.vhost.queue(&name, self.session.connection)?;
        if queue.stream().is_some() {
            return Err(Error::NotImplemented(format!(
                "basic.get not supported by stream queues queue '{name}' in vhost '{}'",
                self.session.vhost.name
            )));
        }

        let frame_max = self.session.frame_max;
        let timeout = self.session.limits.timeout(None, &queue);
        let vhost = Arc::clone(&self.session.vhost);
        let channel = self.open(number)?;
        let Some((entry, message_count)) = queue.get(get.no_ack, &channel.credit) else {
            send(out, number, basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
            return Ok(());
        };
        vhost.activity().touched(&queue);
        let tag = channel.take_delivery_tag();
        let redelivered = u64::from(entry.redelivered);
        let message = &entry.message;
        let ok = basic::GetOk {
            delivery_tag: tag,
            redelivered: entry.redelivered,
            exchange: message.exchange().into(),
            routing_key: message.routing_key().into(),
            message_count,
        };
        send(out, number, basic::AMQPMethod::GetOk(ok));
        encode_content_header(
            out,
            number,
            message.body().len() as u64,
            message.properties(),
        );
        encode_body(out, number, message.body(), frame_max);
        if !get.no_ack {
            let delivery = Delivery {
                tag,
                entry,
                queue,
                consumer: None,
            };
            channel.unacked.push(delivery, timeout, now);
        }
        self.count_delivery(redelivered);
        Ok(())
    }

    pub(super) fn confirm_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: confirm::AMQPMethod,
    ) -> Result<(), Error> {
        let confirm::AMQPMethod::Select(select) = method else {
            return Err(Error::CommandInvalid(
                "confirm.select-ok from a client".into(),
            ));
        };
        let channel = self.open(number)?;
        match channel.mode {
            Mode::Tx(_) => {
                return Err(Error::PreconditionFailed(
                    "cannot switch from tx to confirm mode".into(),
                ))
            }
            Mode::Plain => channel.mode = Mode::Confirm(Confirms::new()),
            Mode::Confirm(_) => {}
        }
        if !select.nowait {
            let ok = AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {}));
            encode_method(out, number, &ok);
        }
        Ok(())
    }

    pub(super) fn tx_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: tx::AMQPMethod,
    ) -> Result<(), Error> {
        let channel = self.open(number)?;
        let reply = match method {
            tx::AMQPMethod::Select(_) => {
                match channel.mode {
                    Mode::Confirm(_) => {
                        return Err(Error::PreconditionFailed(
                            "cannot switch from confirm to tx mode".into(),
                        ))
                    }
                    Mode::Plain => channel.mode = Mode::Tx(Tx::default()),
                    Mode::Tx(_) => {}
                }
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let tx = take_tx(channel)?;
                let epoch = channel.epoch;
                let vhost = Arc::clone(&self.session.vhost);
                settle_committed(&vhost, self.open(number)?, tx.settles);
                let mut store = None;
                let mut quorums = Vec::new();
                for (message, mandatory, stamp) in tx.publishes {
                    let routed = self.route(out, number, &message, mandatory, stamp)?;
                    store = store.or(routed.store);
                    quorums.extend(routed.quorums);
                }
                if store.is_some() || !quorums.is_empty() {
                    // commit-ok once the committed persistent messages are on disk.
                    self.wait_for_sync(store, quorums)
                        .commits
                        .push((number, epoch));
                    return Ok(());
                }
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                let tx = take_tx(channel)?;
                for (delivery, _) in tx.settles {
                    channel.unacked.restore(delivery);
                }
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            _ => {
                return Err(Error::CommandInvalid(
                    "tx reply method from a client".into(),
                ))
            }
        };
        encode_method(out, number, &AMQPClass::Tx(reply));
        Ok(())
    }
}

/// Takes the channel's pending transaction, leaving an empty one (the channel stays
/// transactional).
fn take_tx(channel: &mut Channel) -> Result<Tx, Error> {
    match &mut channel.mode {
        Mode::Tx(tx) => Ok(std::mem::take(tx)),
        _ => Err(Error::PreconditionFailed(
            "channel is not transactional".into(),
        )),
    }
}

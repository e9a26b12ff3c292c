//! A channel's life: `channel.open` on a free number, `flow`, and `close` from either side (a
//! client's close, or a channel exception answered by [`Channels::close_with`]), then `close-ok`
//! freeing the number. Whatever way a channel closes, [`Channels::release`] gives back at once
//! every unacked delivery it held and cancels its consumers: nothing it held is lost, nothing
//! waits for the socket to go. Never handles a method of another class.

use std::sync::Arc;

use bytes::BytesMut;
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{decode_method, encode_method, Method};
use warren_protocol::spec::{channel, AMQPClass};

use super::settle::{settle, settle_taken_back};
use super::{Channel, ChannelState, Channels, Mode, Settle};
use crate::error::{Error, Exception};

fn reply(out: &mut BytesMut, number: u16, method: channel::AMQPMethod) {
    encode_method(out, number, &AMQPClass::Channel(method));
}

impl Channels {
    fn free(&mut self, number: u16) {
        self.release(number);
        if let Some(slot) = self.slots.get_mut(number as usize) {
            *slot = None;
        }
    }

    /// Sends `channel.close` for a channel exception, gives back what the channel held, and drops
    /// its further traffic until `close-ok`.
    pub(crate) fn close_with(&mut self, out: &mut BytesMut, number: u16, exception: &Exception) {
        self.output(out, number, |channels, out| {
            channels.close_channel(out, number, exception)
        })
    }

    fn close_channel(&mut self, out: &mut BytesMut, number: u16, exception: &Exception) {
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
        self.channels_changed = true;
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

    /// Closes every channel (the connection is going away). A mailbox opened since the
    /// connection task last took it is emptied here: nothing else would give back what it holds.
    pub(crate) fn release_all(&mut self) {
        for number in 0..self.slots.len() {
            self.release(number as u16);
        }
        self.slots.clear();
        if let Some(mut mail) = self.session.mailboxes.take_mail() {
            super::return_mail(&mut mail);
        }
    }

    pub(super) fn handle_unopened(
        &mut self,
        out: &mut BytesMut,
        frame: Frame,
    ) -> Result<(), Exception> {
        let number = frame.channel;
        if frame.frame_type != FrameType::Method {
            return Err(Error::ChannelNotOpen(number).into());
        }
        self.channels_changed = true;
        let method = decode_method(&frame.payload).map_err(Error::from)?;
        let (class_id, method_id) = method.ids();
        match method {
            Method::Other(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                let index = number as usize;
                if self.slots.len() <= index {
                    self.slots.resize_with(index + 1, || None);
                }
                self.slots[index] = Some(Box::new(Channel::new(self.next_epoch)));
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

    pub(super) fn handle_closing(
        &mut self,
        out: &mut BytesMut,
        frame: Frame,
    ) -> Result<(), Exception> {
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

    pub(super) fn channel_method(
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
}

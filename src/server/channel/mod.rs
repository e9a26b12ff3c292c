//! The channels of one connection: which numbers are open, closing or free, and what each channel
//! does with the frames addressed to it.
//!
//! Owned by the connection task (no locks). Replies are written into the connection's output
//! buffer; errors come back as [`Exception`]s, whose scope (channel or connection) the connection
//! acts on. Channel numbers above the negotiated `channel_max` are refused.

use bytes::BytesMut;
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{decode_method, encode_method, Method};
use warren_protocol::spec::{channel, AMQPClass};

use crate::error::{Error, Exception};

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Open,
    /// The server sent `channel.close`; everything but `close`/`close-ok` is dropped until the
    /// client's `close-ok` frees the number.
    Closing,
}

#[derive(Debug)]
struct Channel {
    state: ChannelState,
    /// `channel.flow`: whether the client wants deliveries on this channel.
    flow_active: bool,
}

/// The channel table of one connection, indexed by channel number (1..=channel_max).
#[derive(Debug, Default)]
pub(crate) struct Channels {
    slots: Vec<Option<Channel>>,
    channel_max: u16,
}

fn reply(out: &mut BytesMut, number: u16, method: channel::AMQPMethod) {
    encode_method(out, number, &AMQPClass::Channel(method));
}

impl Channels {
    pub(crate) fn new(channel_max: u16) -> Channels {
        Channels {
            slots: Vec::new(),
            channel_max,
        }
    }

    fn slot(&self, number: u16) -> Option<&Channel> {
        self.slots.get(number as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, number: u16) -> Option<&mut Channel> {
        self.slots.get_mut(number as usize).and_then(Option::as_mut)
    }

    fn free(&mut self, number: u16) {
        if let Some(slot) = self.slots.get_mut(number as usize) {
            *slot = None;
        }
    }

    /// Sends `channel.close` for a channel exception and drops the channel's further traffic.
    pub(crate) fn close_with(&mut self, out: &mut BytesMut, number: u16, exception: &Exception) {
        let (code, _) = exception.error.reply();
        if let Some(channel) = self.slot_mut(number) {
            channel.state = ChannelState::Closing;
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

    /// Handles one frame on channel `number` (never 0).
    pub(crate) fn handle(&mut self, out: &mut BytesMut, frame: Frame) -> Result<(), Exception> {
        let number = frame.channel;
        if number > self.channel_max {
            return Err(Error::ChannelMax {
                channel: number,
                channel_max: self.channel_max,
            }
            .into());
        }
        let state = self.slot(number).map(|c| c.state);
        if frame.frame_type != FrameType::Method {
            return match state {
                Some(ChannelState::Closing) => Ok(()),
                Some(ChannelState::Open) => Err(Error::UnexpectedFrame(format!(
                    "content frame on channel {number} without a content-bearing method"
                ))
                .into()),
                None => Err(Error::ChannelNotOpen(number).into()),
            };
        }
        let method = decode_method(&frame.payload).map_err(Error::from)?;
        let (class_id, method_id) = method.ids();
        let at_method = |error: Error| Exception {
            error,
            class_id,
            method_id,
        };
        match state {
            None => match method {
                Method::Other(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    let index = number as usize;
                    if self.slots.len() <= index {
                        self.slots.resize_with(index + 1, || None);
                    }
                    self.slots[index] = Some(Channel {
                        state: ChannelState::Open,
                        flow_active: true,
                    });
                    reply(out, number, channel::AMQPMethod::OpenOk(channel::OpenOk {}));
                    Ok(())
                }
                _ => Err(at_method(Error::ChannelNotOpen(number))),
            },
            Some(ChannelState::Closing) => {
                match method {
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                        self.free(number)
                    }
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                        // Both sides closed at once: answer, and the channel is gone.
                        reply(
                            out,
                            number,
                            channel::AMQPMethod::CloseOk(channel::CloseOk {}),
                        );
                        self.free(number);
                    }
                    _ => {}
                }
                Ok(())
            }
            Some(ChannelState::Open) => self.handle_open(out, number, method).map_err(at_method),
        }
    }

    fn handle_open(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: Method,
    ) -> Result<(), Error> {
        match method {
            Method::Other(AMQPClass::Channel(method)) => match method {
                channel::AMQPMethod::Open(_) => Err(Error::ChannelAlreadyOpen(number)),
                channel::AMQPMethod::Close(_) => {
                    reply(
                        out,
                        number,
                        channel::AMQPMethod::CloseOk(channel::CloseOk {}),
                    );
                    self.free(number);
                    Ok(())
                }
                channel::AMQPMethod::Flow(flow) => {
                    if let Some(channel) = self.slot_mut(number) {
                        channel.flow_active = flow.active;
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
            },
            Method::Other(AMQPClass::Connection(_)) => Err(Error::CommandInvalid(format!(
                "connection method on channel {number}"
            ))),
            other => {
                let (class_id, method_id) = other.ids();
                Err(Error::NotImplemented(format!(
                    "method {class_id}.{method_id} is not supported yet"
                )))
            }
        }
    }
}

//! Assembling a published message from its frames: `basic.publish`, one content header, then body
//! frames until the header's body size is reached.
//!
//! A body that arrives in one frame stays a slice of the read buffer (no copy); a body split over
//! several frames is gathered into one buffer grown as frames arrive, never sized from the
//! header's claim alone. The declared size is checked against the server's maximum before any
//! body byte is accepted. Owns only the message under assembly; routing is the channel's job.

use bytes::{Bytes, BytesMut};
use warren_protocol::content::decode_content_header;
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{Publish, CLASS_BASIC};

use crate::error::Error;

/// A message between its `basic.publish` and its last body frame.
#[derive(Debug)]
pub(crate) struct Content {
    pub publish: Publish,
    /// Property flags and list, once the header has arrived.
    properties: Option<Bytes>,
    body_size: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

/// A complete message.
#[derive(Debug)]
pub(crate) struct Complete {
    pub publish: Publish,
    pub properties: Bytes,
    pub body: Bytes,
}

/// What a content frame did.
#[derive(Debug)]
pub(crate) enum Progress {
    More(Content),
    Done(Complete),
}

impl Content {
    pub fn new(publish: Publish) -> Content {
        Content {
            publish,
            properties: None,
            body_size: 0,
            body: Body::Empty,
        }
    }

    fn received(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len() as u64,
            Body::Many(buf) => buf.len() as u64,
        }
    }

    /// Takes the next frame of this message. `channel` names it in error texts.
    #[inline]
    pub fn accept(mut self, frame: Frame, max_size: u64) -> Result<Progress, Error> {
        let channel = frame.channel;
        match (frame.frame_type, &self.properties) {
            (FrameType::Header, None) => {
                let header = decode_content_header(&frame.payload)?;
                if header.class_id != CLASS_BASIC {
                    return Err(Error::UnexpectedFrame(format!(
                        "content header for class {} on channel {channel}, expected class 60",
                        header.class_id
                    )));
                }
                if header.body_size > max_size {
                    return Err(too_large(channel, header.body_size, max_size));
                }
                self.body_size = header.body_size;
                self.properties = Some(header.properties);
            }
            (FrameType::Body, Some(_)) => {
                let total = self.received() + frame.payload.len() as u64;
                if total > self.body_size {
                    return Err(Error::UnexpectedFrame(format!(
                        "body frames on channel {channel} carry more than the {} bytes the content \
                         header announced",
                        self.body_size
                    )));
                }
                self.body = match self.body {
                    Body::Empty if total == self.body_size => Body::One(frame.payload),
                    Body::Empty => Body::Many(BytesMut::from(&frame.payload[..])),
                    Body::One(first) => {
                        let mut buf = BytesMut::from(&first[..]);
                        buf.extend_from_slice(&frame.payload);
                        Body::Many(buf)
                    }
                    Body::Many(mut buf) => {
                        buf.extend_from_slice(&frame.payload);
                        Body::Many(buf)
                    }
                };
            }
            (FrameType::Header, Some(_)) => {
                return Err(Error::UnexpectedFrame(format!(
                    "second content header on channel {channel}"
                )))
            }
            (_, None) => {
                return Err(Error::UnexpectedFrame(format!(
                    "expected content header for class 60 on channel {channel}, got another frame"
                )))
            }
            (_, Some(_)) => {
                return Err(Error::UnexpectedFrame(format!(
                    "expected content body on channel {channel}, got another frame"
                )))
            }
        }
        if self.received() < self.body_size {
            return Ok(Progress::More(self));
        }
        let body = match self.body {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Many(buf) => buf.freeze(),
        };
        Ok(Progress::Done(Complete {
            publish: self.publish,
            properties: self.properties.unwrap_or_default(),
            body,
        }))
    }
}

/// A message over `max_message_size`: logged, and refused with RabbitMQ's 406. Out of line, so
/// that the frame path stays small.
#[cold]
fn too_large(channel: u16, size: u64, max_size: u64) -> Error {
    tracing::warn!(
        channel,
        size,
        max_size,
        "message refused: over max_message_size"
    );
    Error::PreconditionFailed(format!(
        "message size {size} is larger than configured max size {max_size}"
    ))
}

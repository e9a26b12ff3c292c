//! # warren-protocol
//!
//! The AMQP 0-9-1 wire codec used by the Warren broker: bytes in, frames and methods out, and back.
//!
//! Layers, each in its own module:
//! - [`frame`]: the frame envelope (type, channel, size, payload, frame-end octet). The only place that
//!   knows frame layout. Streaming: it tells "need more bytes" from "malformed", and checks every size
//!   against `frame_max` before waiting for or reading the payload.
//! - [`method`]: method frame payloads. Hand-written fast paths for the hot methods
//!   (basic.publish, basic.ack, basic.deliver); everything else goes through `amq-protocol`'s
//!   generated spec types ([`spec::AMQPClass`]).
//! - [`content`]: content header frames and bodies; bodies split at the negotiated `frame_max`.
//! - [`table`]: a bounded, allocation-free check of encoded field tables (nesting depth), run before
//!   `amq-protocol`'s recursive parser ever sees untrusted input.
//!
//! This crate never does I/O, never spawns, and knows nothing of the broker: no queues, no sockets.

pub mod content;
pub mod error;
pub mod frame;
pub mod method;
pub mod table;

pub use error::{FrameError, MethodError};

/// The `amq-protocol` spec types (classes, methods, properties), re-exported so that the broker
/// speaks one dialect.
pub mod spec {
    pub use amq_protocol::protocol::*;
}

/// AMQP field types (`FieldTable`, `ShortString`, `AMQPValue`, ...), re-exported from `amq-protocol`.
pub mod types {
    pub use amq_protocol::types::*;
}

//! Method frame payloads: `class-id:u16 method-id:u16 arguments`.
//!
//! Decoding: basic.publish and basic.ack, the two methods a busy client sends per message, have
//! hand-written decoders that borrow the frame buffer ([`ShortStr`] is a `Bytes` slice) and allocate
//! nothing. Every other method is decoded by `amq-protocol` into a [`spec::AMQPClass`], after the
//! ids are checked against the 0-9-1 method list and any field table in the arguments has passed the
//! bounded [`table`] check.
//!
//! Encoding: [`encode_method`] writes any `AMQPClass` as a method frame; [`encode_deliver`],
//! [`encode_publish`] and [`encode_ack`] are allocation-free fast paths for the per-message methods.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::MethodError;
use crate::frame::{begin_frame, end_frame, FrameType};
use crate::spec::{self, AMQPClass};
use crate::table::{check_short_string, check_table};

pub const CLASS_CONNECTION: u16 = 10;
pub const CLASS_CHANNEL: u16 = 20;
pub const CLASS_ACCESS: u16 = 30;
pub const CLASS_EXCHANGE: u16 = 40;
pub const CLASS_QUEUE: u16 = 50;
pub const CLASS_BASIC: u16 = 60;
pub const CLASS_CONFIRM: u16 = 85;
pub const CLASS_TX: u16 = 90;

const BASIC_PUBLISH: u16 = 40;
const BASIC_DELIVER: u16 = 60;
const BASIC_ACK: u16 = 80;

/// An AMQP short string (at most 255 bytes, UTF-8) that shares the frame's buffer.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ShortStr(Bytes);

impl ShortStr {
    /// Wraps bytes that are valid UTF-8 and at most 255 bytes long.
    pub fn new(bytes: Bytes) -> Option<ShortStr> {
        (bytes.len() <= 255 && std::str::from_utf8(&bytes).is_ok()).then_some(ShortStr(bytes))
    }

    /// Wraps a static string, cut to at most 255 bytes on a character boundary.
    pub fn from_static(s: &'static str) -> ShortStr {
        ShortStr(Bytes::from_static(truncate_short(s).as_bytes()))
    }

    /// Copies a string, cut to at most 255 bytes on a character boundary.
    pub fn copy_from_str(s: &str) -> ShortStr {
        ShortStr(Bytes::copy_from_slice(truncate_short(s).as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text. Checked at construction, so the fallback never shows.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// `Bytes` hashes as its byte slice, so maps keyed by `ShortStr` can be searched with `&[u8]`.
impl std::borrow::Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// basic.publish, decoded without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub mandatory: bool,
    pub immediate: bool,
}

/// basic.ack (client to server: consumer acks; server to client: publisher confirms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub delivery_tag: u64,
    pub multiple: bool,
}

/// basic.deliver's arguments, borrowed for encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deliver<'a> {
    /// Short strings as bytes (the broker holds them as validated bytes; at most 255 are written).
    pub consumer_tag: &'a [u8],
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
}

/// A decoded method frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Publish(Publish),
    Ack(Ack),
    /// Any other method, as `amq-protocol`'s spec type.
    Other(AMQPClass),
}

impl Method {
    /// (class id, method id), for errors and logs.
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::Publish(_) => (CLASS_BASIC, BASIC_PUBLISH),
            Method::Ack(_) => (CLASS_BASIC, BASIC_ACK),
            Method::Other(class) => (class.get_amqp_class_id(), class.get_amqp_method_id()),
        }
    }
}

/// Every method AMQP 0-9-1 (with RabbitMQ's extensions) defines, by class.
fn is_known(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        CLASS_CONNECTION => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        CLASS_CHANNEL => &[10, 11, 20, 21, 40, 41],
        CLASS_ACCESS => &[10, 11],
        CLASS_EXCHANGE => &[10, 11, 20, 21, 30, 31, 40, 51],
        CLASS_QUEUE => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        CLASS_BASIC => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        CLASS_CONFIRM => &[10, 11],
        CLASS_TX => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}

/// The arguments that come before a method's field table, for the methods that carry one.
enum Arg {
    Octets(usize),
    ShortString,
}

#[rustfmt::skip]
fn args_before_table(class_id: u16, method_id: u16) -> Option<&'static [Arg]> {
    use Arg::{Octets, ShortString as S};
    Some(match (class_id, method_id) {
        (CLASS_CONNECTION, 10) => &[Octets(2)],                         // start: version major, minor
        (CLASS_CONNECTION, 11) => &[],                                  // start-ok: client-properties first
        (CLASS_EXCHANGE, 10) => &[Octets(2), S, S, Octets(1)],          // declare
        (CLASS_EXCHANGE, 30 | 40) => &[Octets(2), S, S, S, Octets(1)],  // bind, unbind
        (CLASS_QUEUE, 10) => &[Octets(2), S, Octets(1)],                // declare
        (CLASS_QUEUE, 20) => &[Octets(2), S, S, S, Octets(1)],          // bind
        (CLASS_QUEUE, 50) => &[Octets(2), S, S, S],                     // unbind
        (CLASS_BASIC, 20) => &[Octets(2), S, S, Octets(1)],             // consume
        _ => return None,
    })
}

/// Runs the bounded table check on the one field table a method may carry.
fn check_method_table(class_id: u16, method_id: u16, mut args: &[u8]) -> Result<(), MethodError> {
    let Some(before) = args_before_table(class_id, method_id) else {
        return Ok(());
    };
    let syntax = |reason| MethodError::syntax(class_id, method_id, reason);
    for arg in before {
        args = match arg {
            Arg::Octets(n) => args
                .get(*n..)
                .ok_or_else(|| syntax("arguments truncated"))?,
            Arg::ShortString => check_short_string(args).map_err(|_| syntax("bad short string"))?,
        };
    }
    check_table(args, 0).map_err(|_| syntax("bad field table"))?;
    Ok(())
}

/// Reads a short string at the front of `args` as a slice of the frame buffer.
fn short_str(args: &Bytes, at: usize) -> Option<(ShortStr, usize)> {
    let len = *args.get(at)? as usize;
    let end = at + 1 + len;
    if end > args.len() {
        return None;
    }
    Some((ShortStr::new(args.slice(at + 1..end))?, end))
}

fn decode_publish(args: &Bytes) -> Option<Publish> {
    // ticket:u16, exchange, routing-key, bits(mandatory, immediate)
    let (exchange, at) = short_str(args, 2)?;
    let (routing_key, at) = short_str(args, at)?;
    let bits = *args.get(at)?;
    if at + 1 != args.len() {
        return None;
    }
    Some(Publish {
        exchange,
        routing_key,
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

fn decode_ack(args: &[u8]) -> Option<Ack> {
    let tag: [u8; 8] = args.get(..8)?.try_into().ok()?;
    if args.len() != 9 {
        return None;
    }
    Some(Ack {
        delivery_tag: u64::from_be_bytes(tag),
        multiple: args[8] & 1 != 0,
    })
}

/// Decodes a method frame payload.
pub fn decode_method(payload: &Bytes) -> Result<Method, MethodError> {
    if payload.len() < 4 {
        return Err(MethodError::syntax(
            0,
            0,
            "method frame shorter than its ids",
        ));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let truncated = || MethodError::syntax(class_id, method_id, "malformed arguments");
    match (class_id, method_id) {
        (CLASS_BASIC, BASIC_PUBLISH) => {
            return decode_publish(&payload.slice(4..))
                .map(Method::Publish)
                .ok_or_else(truncated)
        }
        (CLASS_BASIC, BASIC_ACK) => {
            return decode_ack(&payload[4..])
                .map(Method::Ack)
                .ok_or_else(truncated)
        }
        _ => {}
    }
    if !is_known(class_id, method_id) {
        return Err(MethodError::Unknown {
            class_id,
            method_id,
        });
    }
    check_method_table(class_id, method_id, &payload[4..])?;
    match spec::parse_class(&payload[..]) {
        Ok(([], class)) => Ok(Method::Other(class)),
        Ok(_) => Err(MethodError::syntax(
            class_id,
            method_id,
            "trailing bytes after arguments",
        )),
        Err(_) => Err(truncated()),
    }
}

/// Writes `class` as a method frame on `channel`.
pub fn encode_method(out: &mut BytesMut, channel: u16, class: &AMQPClass) {
    // amq-protocol's generators need a rewindable writer (for table lengths): a Vec is one.
    // Control methods only; the per-message ones have the fast paths below.
    let args = match cookie_factory::gen(spec::gen_class(class), Vec::with_capacity(64)) {
        Ok((args, _)) => args,
        // Writing to a Vec cannot run out of room; the generators have no other failure.
        Err(_) => return,
    };
    crate::frame::encode_frame(out, FrameType::Method, channel, &args);
}

/// The longest prefix of `s` that fits a short string (255 bytes) and is still UTF-8: cutting at
/// byte 255 could split a character, and a peer rejects the frame for it.
pub fn truncate_short(s: &str) -> &str {
    if s.len() <= 255 {
        return s;
    }
    let mut end = 255;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_short_str(out: &mut BytesMut, s: &str) {
    let bytes = truncate_short(s).as_bytes();
    out.put_u8(bytes.len() as u8);
    out.put_slice(bytes);
}

/// Writes the bytes of a UTF-8 string; more than 255 are cut on a character boundary.
fn put_short_bytes(out: &mut BytesMut, bytes: &[u8]) {
    let mut cut = bytes.len().min(255);
    // A UTF-8 continuation byte (0b10xx_xxxx) is never where a character starts.
    while cut < bytes.len() && cut > 0 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    let bytes = &bytes[..cut];
    out.put_u8(bytes.len() as u8);
    out.put_slice(bytes);
}

/// Writes basic.deliver without going through the generic encoder.
pub fn encode_deliver(out: &mut BytesMut, channel: u16, deliver: &Deliver<'_>) {
    out.reserve(
        32 + deliver.consumer_tag.len() + deliver.exchange.len() + deliver.routing_key.len(),
    );
    let start = begin_frame(out, FrameType::Method, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(BASIC_DELIVER);
    put_short_bytes(out, deliver.consumer_tag);
    out.put_u64(deliver.delivery_tag);
    out.put_u8(deliver.redelivered as u8);
    put_short_bytes(out, deliver.exchange);
    put_short_bytes(out, deliver.routing_key);
    end_frame(out, start);
}

/// Writes basic.publish (used by load generators and tests; the broker never sends it).
pub fn encode_publish(out: &mut BytesMut, channel: u16, publish: &Publish) {
    out.reserve(24 + publish.exchange.as_bytes().len() + publish.routing_key.as_bytes().len());
    let start = begin_frame(out, FrameType::Method, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(BASIC_PUBLISH);
    out.put_u16(0);
    put_short_str(out, publish.exchange.as_str());
    put_short_str(out, publish.routing_key.as_str());
    out.put_u8(publish.mandatory as u8 | (publish.immediate as u8) << 1);
    end_frame(out, start);
}

/// Writes basic.ack (a publisher confirm from the server, or a consumer ack from a client).
pub fn encode_ack(out: &mut BytesMut, channel: u16, ack: &Ack) {
    out.reserve(21);
    let start = begin_frame(out, FrameType::Method, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(BASIC_ACK);
    out.put_u64(ack.delivery_tag);
    out.put_u8(ack.multiple as u8);
    end_frame(out, start);
}

//! Messages as the broker holds them: one immutable, reference-counted [`Message`] per publish,
//! shared by every queue it was routed to, and one small [`Entry`] per queue that places it.
//!
//! Owns nothing but the message bytes. Never copies a message per queue: routing to N queues
//! costs N `Arc` clones. A message is built once from the frames it arrived in: its exchange
//! name, routing key, properties and (small) body are copied into one allocation of their own,
//! so that a queued message never keeps the connection's 64 KiB read buffer alive for a few
//! bytes; a large body is kept as the received slice (no copy).

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::store::log::Position;

/// Bodies at least this large are kept as received instead of copied.
const SHARED_BODY_MIN: usize = 4096;

/// A published message: where it was published and its content, byte for byte.
#[derive(Debug)]
pub struct Message {
    /// Exchange name, routing key, properties and a small body, back to back.
    data: Box<[u8]>,
    exchange_len: u8,
    routing_key_len: u8,
    properties_len: u32,
    /// A large body, as received.
    shared_body: Option<Bytes>,
}

impl Message {
    /// `exchange` and `routing_key` are short strings' bytes (valid UTF-8, ≤ 255 bytes: checked
    /// by the codec; longer ones are cut).
    pub fn new(exchange: &[u8], routing_key: &[u8], properties: &[u8], body: Bytes) -> Message {
        let exchange = &exchange[..exchange.len().min(255)];
        let routing_key = &routing_key[..routing_key.len().min(255)];
        let properties_len = u32::try_from(properties.len()).unwrap_or(u32::MAX);
        let properties = &properties[..properties_len as usize];
        let (inline, shared_body) = match body.len() >= SHARED_BODY_MIN {
            true => (&[][..], Some(body.clone())),
            false => (&body[..], None),
        };
        let mut data = Vec::with_capacity(
            exchange.len() + routing_key.len() + properties.len() + inline.len(),
        );
        data.extend_from_slice(exchange);
        data.extend_from_slice(routing_key);
        data.extend_from_slice(properties);
        data.extend_from_slice(inline);
        Message {
            data: data.into_boxed_slice(),
            exchange_len: exchange.len() as u8,
            routing_key_len: routing_key.len() as u8,
            properties_len,
            shared_body,
        }
    }

    fn text(&self, from: usize, len: u8) -> &str {
        // Built from `&str`s cut at most at 255 bytes of valid short strings.
        std::str::from_utf8(&self.data[from..from + len as usize]).unwrap_or_default()
    }

    pub fn exchange(&self) -> &str {
        self.text(0, self.exchange_len)
    }

    pub fn routing_key(&self) -> &str {
        self.text(self.exchange_len as usize, self.routing_key_len)
    }

    /// The exchange name's bytes (the hot paths: no UTF-8 check per use).
    pub fn exchange_bytes(&self) -> &[u8] {
        &self.data[..self.exchange_len as usize]
    }

    pub fn routing_key_bytes(&self) -> &[u8] {
        let from = self.exchange_len as usize;
        &self.data[from..from + self.routing_key_len as usize]
    }

    /// The content header's property flags and property list, as the publisher sent them.
    pub fn properties(&self) -> &[u8] {
        let from = self.exchange_len as usize + self.routing_key_len as usize;
        &self.data[from..from + self.properties_len as usize]
    }

    pub fn body(&self) -> &[u8] {
        match &self.shared_body {
            Some(body) => body,
            None => {
                let from = self.exchange_len as usize
                    + self.routing_key_len as usize
                    + self.properties_len as usize;
                &self.data[from..]
            }
        }
    }

    /// The body as `Bytes`: a large body is shared (no copy), a small one copied.
    pub fn body_bytes(&self) -> Bytes {
        match &self.shared_body {
            Some(body) => body.clone(),
            None => Bytes::copy_from_slice(self.body()),
        }
    }
}

/// A message's place in one queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the queue: assigned at enqueue, increasing; a requeued entry keeps it so that
    /// it goes back to its original place.
    pub seq: u64,
    pub message: Arc<Message>,
    /// Delivered before (and requeued); sent as `redelivered` on its next delivery.
    pub redelivered: bool,
    /// Where the queue's log holds it (a persistent message in a durable queue).
    pub position: Option<Position>,
    /// Its priority level in a queue with `x-max-priority` (0 elsewhere).
    pub priority: u8,
    /// When it expires (`x-message-ttl` or its `expiration`): milliseconds since the Unix epoch,
    /// or 0 for never. A requeued message keeps it.
    pub expires: u64,
}

/// The wall clock in milliseconds since the Unix epoch: message expiry times are kept in it, so
/// that they mean the same after a restart.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a queue is to hold a published message, read from its properties once per publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// delivery-mode 2: kept in a durable queue's log.
    pub persistent: bool,
    /// The `expiration` property: a time to live in milliseconds.
    pub ttl: Option<u64>,
    /// The `priority` property.
    pub priority: u8,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Entries sort in delivery order: higher priority first, then by `seq` (all priorities are 0
/// outside an `x-max-priority` queue).
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.seq.cmp(&other.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_as_given() {
        for size in [0, 16, SHARED_BODY_MIN - 1, SHARED_BODY_MIN, 100_000] {
            let body = Bytes::from(vec![7u8; size]);
            let message = Message::new(b"amq.topic", b"a.b", &[0x80, 0, 1, b'x'], body.clone());
            assert_eq!(message.exchange(), "amq.topic");
            assert_eq!(message.routing_key(), "a.b");
            assert_eq!(message.exchange_bytes(), b"amq.topic");
            assert_eq!(message.routing_key_bytes(), b"a.b");
            assert_eq!(message.properties(), &[0x80, 0, 1, b'x']);
            assert_eq!(message.body(), &body[..]);
        }
        let empty = Message::new(b"", b"", &[0, 0], Bytes::new());
        assert_eq!((empty.exchange(), empty.routing_key()), ("", ""));
        assert_eq!(empty.properties(), &[0, 0]);
        assert!(empty.body().is_empty());
    }
}

/// Why a queue gave up on a message (and dead-letters it), as `x-death` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    /// Dropped from the head of a queue at its `x-max-length`, or refused by it.
    Maxlen,
    /// Its time to live ran out (`x-message-ttl` or `expiration`).
    Expired,
    /// Returned to a quorum queue more often than its `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Maxlen => "maxlen",
            Reason::Expired => "expired",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

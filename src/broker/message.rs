//! Messages as the broker holds them: one immutable, reference-counted [`Message`] per publish,
//! shared by every queue it was routed to, and one small [`Entry`] per queue that places it.
//!
//! Owns nothing but the message bytes. Never copies a body: routing to N queues costs N `Arc`
//! clones, not N bodies.

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use warren_protocol::method::ShortStr;

/// A published message: where it was published and its content, byte for byte.
#[derive(Debug)]
pub struct Message {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// The content header's property flags and property list, as the publisher sent them.
    pub properties: Bytes,
    pub body: Bytes,
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
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.seq.cmp(&other.seq)
    }
}

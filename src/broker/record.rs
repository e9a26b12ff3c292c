//! How a message is written in a queue's log: one record per message. The store keeps records as
//! opaque bytes; this module is the only one that knows their layout, and it trusts nothing it
//! reads back.
//!
//! A kind byte (1 persistent, 2 transient: paged out, not to be recovered; 3 and 4 the same with
//! an expiry time), the expiry time if any (`u64`, milliseconds since the Unix epoch), exchange,
//! routing key (short strings: `u8` length, bytes), `u32` property length, properties, body.
//! [`Reader`] and [`put_short`] are shared with the definitions' records (`definition.rs`).

use bytes::{BufMut, Bytes};
use warren_protocol::method::ShortStr;
use warren_protocol::table::decode_field_table;
use warren_protocol::types::FieldTable;

use super::message::Message;

const MESSAGE_PERSISTENT: u8 = 1;
const MESSAGE_TRANSIENT: u8 = 2;
const MESSAGE_PERSISTENT_EXPIRING: u8 = 3;
const MESSAGE_TRANSIENT_EXPIRING: u8 = 4;

/// Writes a short string: `u8` length (cut at 255), bytes.
pub(super) fn put_short(out: &mut impl BufMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// A message as its queue's log stores it; `persistent` says whether it is to be recovered,
/// `expires` when it expires (0: never).
pub fn encode_message(message: &Message, persistent: bool, expires: u64) -> Vec<u8> {
    let properties = message.properties();
    let mut out = Vec::with_capacity(encoded_len(message, expires) as usize);
    out.put_u8(match (persistent, expires != 0) {
        (true, false) => MESSAGE_PERSISTENT,
        (false, false) => MESSAGE_TRANSIENT,
        (true, true) => MESSAGE_PERSISTENT_EXPIRING,
        (false, true) => MESSAGE_TRANSIENT_EXPIRING,
    });
    if expires != 0 {
        out.put_u64(expires);
    }
    put_short(&mut out, message.exchange_bytes());
    put_short(&mut out, message.routing_key_bytes());
    out.put_u32(properties.len() as u32);
    out.put_slice(properties);
    out.put_slice(message.body());
    out
}

/// The length of [`encode_message`]'s record for `message`.
pub fn encoded_len(message: &Message, expires: u64) -> u64 {
    (1 + if expires != 0 { 8 } else { 0 }
        + 1
        + message.exchange_bytes().len()
        + 1
        + message.routing_key_bytes().len()
        + 4
        + message.properties().len()
        + message.body().len()) as u64
}

/// A message read back from a log.
#[derive(Debug)]
pub struct StoredMessage {
    pub message: Message,
    /// To be recovered after a restart (else a paged-out copy).
    pub persistent: bool,
    /// When it expires (milliseconds since the Unix epoch), 0 for never.
    pub expires: u64,
}

/// What a queue needs to place a message record without building the message (recovery of a
/// backlog larger than memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    pub persistent: bool,
    pub expires: u64,
    /// The `priority` property (0 if unset).
    pub priority: u8,
    pub body_len: u64,
}

impl RecordSummary {
    /// Packed into the number the log keeps beside a record's position at recovery: the expiry
    /// time in the low 56 bits (ms since the epoch: good for two million years), the priority
    /// in the top 8.
    pub fn pack(&self) -> u64 {
        (self.expires & ((1 << 56) - 1)) | u64::from(self.priority) << 56
    }

    /// (expires, priority) from [`RecordSummary::pack`].
    pub fn unpack(packed: u64) -> (u64, u8) {
        (packed & ((1 << 56) - 1), (packed >> 56) as u8)
    }
}

/// The kind byte and expiry time of a message record; `None` if the record is not one.
fn message_head(r: &mut Reader<'_>) -> Option<(bool, u64)> {
    let (persistent, expiring) = match r.u8()? {
        MESSAGE_PERSISTENT => (true, false),
        MESSAGE_TRANSIENT => (false, false),
        MESSAGE_PERSISTENT_EXPIRING => (true, true),
        MESSAGE_TRANSIENT_EXPIRING => (false, true),
        _ => return None,
    };
    let expires = match expiring {
        true => u64::from_be_bytes(r.take(8)?.try_into().ok()?),
        false => 0,
    };
    Some((persistent, expires))
}

/// Reads a message record's summary; `None` if the record is not a well-formed message.
pub fn summarize_message(record: &[u8]) -> Option<RecordSummary> {
    let mut r = Reader(record);
    let (persistent, expires) = message_head(&mut r)?;
    for _exchange_then_routing_key in 0..2 {
        let len = usize::from(r.u8()?);
        r.take(len)?;
    }
    let len = r.u32()? as usize;
    let properties = r.take(len)?;
    let priority = warren_protocol::content::publish_checks(properties)
        .priority
        .unwrap_or(0);
    Some(RecordSummary {
        persistent,
        expires,
        priority,
        body_len: r.0.len() as u64,
    })
}

/// Whether a log record is a persistent message (to be recovered), from its first byte.
pub fn is_persistent_record(record: &[u8]) -> bool {
    matches!(
        record.first(),
        Some(&MESSAGE_PERSISTENT | &MESSAGE_PERSISTENT_EXPIRING)
    )
}

/// A message read back from a log; `None` if the record is not one.
pub fn decode_message(record: &Bytes) -> Option<StoredMessage> {
    let mut r = Reader(record);
    let (persistent, expires) = message_head(&mut r)?;
    let exchange = r.short()?;
    let routing_key = r.short()?;
    let len = r.u32()? as usize;
    let properties = r.take(len)?;
    let body_at = record.len() - r.0.len();
    let message = Message::new(
        exchange.as_bytes(),
        routing_key.as_bytes(),
        properties,
        record.slice(body_at..),
    );
    Some(StoredMessage {
        message,
        persistent,
        expires,
    })
}

/// Reads a record front to back; every read is bounds-checked (`None` past the end).
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn short(&mut self) -> Option<ShortStr> {
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        ShortStr::new(Bytes::copy_from_slice(bytes))
    }

    pub(super) fn table(&mut self) -> Option<FieldTable> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let encoded = self.take(len.checked_add(4)?)?;
        decode_field_table(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        // Properties: priority 5 (flag bit 11, one octet).
        let properties = [0x08, 0, 5];
        for (size, expires) in [(0, 0), (10, 1_700_000_000_123), (5000, 0), (7, 1)] {
            let body = Bytes::from(vec![3u8; size]);
            let message = Message::new(b"amq.direct", b"key", &properties, body);
            let record = Bytes::from(encode_message(&message, size != 10, expires));
            assert_eq!(record.len() as u64, encoded_len(&message, expires));
            assert_eq!(is_persistent_record(&record), size != 10);
            assert_eq!(
                summarize_message(&record),
                Some(RecordSummary {
                    persistent: size != 10,
                    expires,
                    priority: 5,
                    body_len: size as u64
                })
            );
            let summary = summarize_message(&record).expect("summary");
            assert_eq!(RecordSummary::unpack(summary.pack()), (expires, 5));
            let stored = decode_message(&record).expect("decodes");
            let (back, persistent) = (stored.message, stored.persistent);
            assert_eq!(stored.expires, expires);
            assert_eq!(
                encoded_len(&back, expires),
                encoded_len(&message, expires),
                "settle's length hint"
            );
            assert_eq!(persistent, size != 10);
            assert_eq!(back.exchange(), "amq.direct");
            assert_eq!(back.routing_key(), "key");
            assert_eq!(back.properties(), &properties);
            assert_eq!(back.body(), message.body());
            assert!(decode_message(&record.slice(..9)).is_none());
            assert!(summarize_message(&record[..9]).is_none());
        }
        assert!(decode_message(&Bytes::from_static(&[3, 0, 0])).is_none());
        assert!(decode_message(&Bytes::from_static(&[9, 0, 0, 0])).is_none());
    }
}

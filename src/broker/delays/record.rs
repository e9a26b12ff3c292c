//! What a held delayed message is, as bytes (the payload of a bucket file's record, see
//! `store/delayed.rs`), and the headers that concern it: `x-delay` read at publish, set to minus
//! the delay on the held copy (as the RabbitMQ plugin does, so that a consumer, or a second
//! delayed exchange behind this one, sees it was delayed).
//!
//! ```text
//! due: u64 LE        when it fires, ms since the Unix epoch
//! seq: u64 LE        order among messages due the same millisecond
//! origin: u64 LE     its publisher's return address (0: not mandatory)
//! exchange: u8 len, bytes
//! routing key: u8 len, bytes
//! properties: u32 LE len, bytes (the content header's flags and property list)
//! body: the rest
//! ```

use warren_protocol::content::{decode_headers, with_header};
use warren_protocol::types::AMQPValue;

use crate::broker::message::Message;
use crate::broker::values::integer;

/// The largest delay the plugin accepts (Erlang's timer limit); a larger one routes at once.
pub const MAX_DELAY_MS: u64 = 4_294_967_295;

/// The origin of a retry of a rejected message (`vhost/retry.rs`), not a publisher's: it goes
/// back to its queue past the queue's de-duplication window (it is the same message again).
pub const RETRY: u64 = u64::MAX;

/// A held message's record, decoded (borrowing the payload).
#[derive(Debug, PartialEq, Eq)]
pub struct Held<'a> {
    pub due: u64,
    pub seq: u64,
    pub origin: u64,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub properties: &'a [u8],
    pub body: &'a [u8],
}

/// The bytes of a held message's record.
pub fn encode(
    due: u64,
    seq: u64,
    origin: u64,
    message: &Message,
    properties: &[u8],
    out: &mut Vec<u8>,
) {
    let exchange = message.exchange_bytes();
    let routing_key = message.routing_key_bytes();
    let body = message.body();
    out.clear();
    out.reserve(24 + 2 + exchange.len() + routing_key.len() + 4 + properties.len() + body.len());
    out.extend_from_slice(&due.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&origin.to_le_bytes());
    out.push(exchange.len() as u8);
    out.extend_from_slice(exchange);
    out.push(routing_key.len() as u8);
    out.extend_from_slice(routing_key);
    out.extend_from_slice(&(properties.len() as u32).to_le_bytes());
    out.extend_from_slice(properties);
    out.extend_from_slice(body);
}

/// Due time and sequence number only (what ordering needs), without decoding the rest.
pub fn due_of(payload: &[u8]) -> Option<(u64, u64)> {
    let due = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((due, seq))
}

/// Decodes a record; `None` if it is malformed (every length is checked against the payload).
pub fn decode(payload: &[u8]) -> Option<Held<'_>> {
    let (due, seq) = due_of(payload)?;
    let origin = u64::from_le_bytes(payload.get(16..24)?.try_into().ok()?);
    let mut rest = payload.get(24..)?;
    let mut short = || {
        let (&len, tail) = rest.split_first()?;
        let (text, tail) = tail.split_at_checked(len as usize)?;
        rest = tail;
        Some(text)
    };
    let exchange = short()?;
    let routing_key = short()?;
    let (len, tail) = rest.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let (properties, body) = tail.split_at_checked(len)?;
    Some(Held {
        due,
        seq,
        origin,
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// The message's `x-delay` header, in milliseconds, if it asks to be held: an integer, or a
/// string or float the plugin converts, greater than zero and at most [`MAX_DELAY_MS`].
/// Anything else (absent, zero, negative, not a number) routes at once.
pub fn x_delay(properties: &[u8]) -> Option<u64> {
    let headers = decode_headers(properties)?;
    let value = headers.inner().get("x-delay")?;
    let ms: i128 = match value {
        AMQPValue::LongString(s) => parse_int(s.as_bytes())?,
        AMQPValue::ShortString(s) => parse_int(s.as_str().as_bytes())?,
        AMQPValue::Float(f) => f.trunc() as i128,
        AMQPValue::Double(d) => d.trunc() as i128,
        other => integer(other)?,
    };
    let ms = u64::try_from(ms).ok().filter(|ms| *ms > 0)?;
    (ms <= MAX_DELAY_MS).then_some(ms)
}

fn parse_int(text: &[u8]) -> Option<i128> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// The properties with `x-delay` set to minus `delay` (the plugin's mark on a message that went
/// through the delay); `None` if they do not decode (the message is then held as it came).
pub fn mark_delayed(properties: &[u8], delay: u64) -> Option<Vec<u8>> {
    let negative = -(i64::try_from(delay).ok()?);
    let value = match i32::try_from(negative) {
        Ok(small) => AMQPValue::LongInt(small),
        Err(_) => AMQPValue::LongLongInt(negative),
    };
    with_header(properties, "x-delay", value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_protocol::content::encode_properties;
    use warren_protocol::types::{FieldTable, LongString};

    fn with_delay(value: AMQPValue) -> Vec<u8> {
        let mut headers = FieldTable::default();
        headers.insert("x-delay".into(), value);
        let props = warren_protocol::spec::BasicProperties::default().with_headers(headers);
        encode_properties(&props).to_vec()
    }

    #[test]
    fn x_delay_as_the_plugin_reads_it() {
        assert_eq!(x_delay(&with_delay(AMQPValue::LongInt(1500))), Some(1500));
        assert_eq!(x_delay(&with_delay(AMQPValue::ShortShortUInt(7))), Some(7));
        let text = AMQPValue::LongString(LongString::from("2500"));
        assert_eq!(x_delay(&with_delay(text)), Some(2500));
        assert_eq!(x_delay(&with_delay(AMQPValue::Double(10.9))), Some(10));
        assert_eq!(x_delay(&with_delay(AMQPValue::LongInt(0))), None);
        assert_eq!(x_delay(&with_delay(AMQPValue::LongInt(-5))), None);
        let too_long = AMQPValue::LongLongInt(MAX_DELAY_MS as i64 + 1);
        assert_eq!(x_delay(&with_delay(too_long)), None);
        let junk = AMQPValue::LongString(LongString::from("soon"));
        assert_eq!(x_delay(&with_delay(junk)), None);
        assert_eq!(x_delay(&[0, 0]), None);
    }

    #[test]
    fn records_round_trip_and_marks_are_negative() {
        let properties = with_delay(AMQPValue::LongInt(300));
        let marked = mark_delayed(&properties, 300).unwrap();
        let headers = decode_headers(&marked).unwrap();
        assert_eq!(
            headers.inner().get("x-delay"),
            Some(&AMQPValue::LongInt(-300))
        );
        assert_eq!(x_delay(&marked), None, "a fired message is not held again");
        let message = Message::new(b"ex", b"key", &properties, Bytes::from_static(b"body"));
        let mut out = Vec::new();
        encode(42, 7, 9, &message, &marked, &mut out);
        let held = decode(&out).unwrap();
        assert_eq!((held.due, held.seq, held.origin), (42, 7, 9));
        assert_eq!((held.exchange, held.routing_key), (&b"ex"[..], &b"key"[..]));
        assert_eq!((held.properties, held.body), (&marked[..], &b"body"[..]));
        for cut in 0..out.len() - 4 {
            let _ = decode(&out[..cut]);
        }
        assert_eq!(decode(&out[..20]), None);
    }
}

//! A stream message's payload in the stream's log (`store::stream` frames it, with its offset,
//! timestamp and filter value): `u8 exchange length | exchange | u8 routing key length | routing
//! key | u32 properties length (BE) | properties | body`. Reading one back gives the message as
//! it was published, with header `x-stream-offset` added (as RabbitMQ delivers stream messages).

use bytes::Bytes;
use warren_protocol::content::{decode_headers, has_headers, with_header, with_long_header};
use warren_protocol::types::AMQPValue;

use super::super::message::Message;
use super::super::values::text;

/// The header a delivery from a stream carries its offset in.
pub const OFFSET_HEADER: &str = "x-stream-offset";
/// The header a publisher sets a message's filter value in.
pub const FILTER_HEADER: &str = "x-stream-filter-value";

/// Appends `message`'s payload to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    let exchange = message.exchange_bytes();
    let routing_key = message.routing_key_bytes();
    let properties = message.properties();
    let body = message.body();
    out.reserve(6 + exchange.len() + routing_key.len() + properties.len() + body.len());
    // Both are short strings (at most 255 bytes: see `Message::new`).
    out.push(exchange.len() as u8);
    out.extend_from_slice(exchange);
    out.push(routing_key.len() as u8);
    out.extend_from_slice(routing_key);
    out.extend_from_slice(&(properties.len() as u32).to_be_bytes());
    out.extend_from_slice(properties);
    out.extend_from_slice(body);
}

/// The message stored in `payload` at `offset`, with its `x-stream-offset` header; `None` when
/// the payload does not parse (its record passed its CRC: a bug, or another version's format).
pub fn decode(payload: &[u8], offset: u64) -> Option<Message> {
    let (exchange, rest) = short(payload)?;
    let (routing_key, rest) = short(rest)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let properties = rest.get(4..4usize.checked_add(len)?)?;
    let body = &rest[4 + len..];
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let properties = with_long_header(properties, OFFSET_HEADER, offset)
        .or_else(|| with_header(properties, OFFSET_HEADER, AMQPValue::LongLongInt(offset)))?;
    Some(Message::new(
        exchange,
        routing_key,
        &properties,
        Bytes::copy_from_slice(body),
    ))
}

fn short(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    Some((rest.get(..len)?, &rest[len..]))
}

/// The filter value a publisher set (header `x-stream-filter-value`, a string), if any.
pub fn filter_value(properties: &[u8]) -> Option<Vec<u8>> {
    if !has_headers(properties) {
        return None;
    }
    let headers = decode_headers(properties)?;
    text(headers.inner().get(FILTER_HEADER)?).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::content::encode_properties;
    use warren_protocol::spec::BasicProperties;
    use warren_protocol::types::{FieldTable, LongString};

    #[test]
    fn a_message_comes_back_with_its_offset() {
        let mut headers = FieldTable::default();
        headers.insert(
            FILTER_HEADER.into(),
            AMQPValue::LongString(LongString::from(b"red".to_vec())),
        );
        let properties = encode_properties(
            &BasicProperties::default()
                .with_message_id("m1".into())
                .with_headers(headers),
        );
        let message = Message::new(
            b"amq.direct",
            b"rk",
            &properties,
            Bytes::from_static(b"hello"),
        );
        let mut payload = Vec::new();
        encode(&message, &mut payload);
        assert_eq!(filter_value(message.properties()), Some(b"red".to_vec()));
        let back = decode(&payload, 42).expect("decodes");
        assert_eq!(back.exchange(), "amq.direct");
        assert_eq!(back.routing_key(), "rk");
        assert_eq!(back.body(), b"hello");
        let headers = decode_headers(back.properties()).expect("headers");
        assert_eq!(
            headers.inner().get(OFFSET_HEADER),
            Some(&AMQPValue::LongLongInt(42))
        );
        assert!(headers.inner().contains_key(FILTER_HEADER));
        // Cut inside the properties, or inside the routing key.
        assert!(decode(&payload[..payload.len() - 10], 1).is_none());
        assert!(decode(&payload[..13], 1).is_none());
    }
}

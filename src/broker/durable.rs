//! How durable things are written down: the records of the definitions file (exchanges, queues,
//! bindings) and of a queue's log (messages). The store keeps these as opaque bytes; this module
//! is the only one that knows their layout, and it trusts nothing it reads back.
//!
//! Strings are short strings (`u8` length, bytes); field tables are in their AMQP encoding (with
//! their `u32` length). Definitions: a kind byte (1 exchange, 2 queue, 3 binding) and the fields
//! below. Messages: a kind byte (1 persistent, 2 transient: paged out, not to be recovered),
//! exchange, routing key, `u32` property length, properties, body.

use bytes::{BufMut, Bytes, BytesMut};
use warren_protocol::method::ShortStr;
use warren_protocol::table::{decode_field_table, encode_field_table};
use warren_protocol::types::FieldTable;

use super::exchange::Destination;
use super::message::Message;

const EXCHANGE: u8 = 1;
const QUEUE: u8 = 2;
const BINDING: u8 = 3;
const MESSAGE_PERSISTENT: u8 = 1;
const MESSAGE_TRANSIENT: u8 = 2;

/// One entry of the definitions file.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    Exchange {
        name: ShortStr,
        kind: String,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    Queue {
        name: ShortStr,
        auto_delete: bool,
        arguments: FieldTable,
    },
    Binding {
        source: ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: FieldTable,
    },
}

fn put_short(out: &mut impl BufMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

impl Definition {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        match self {
            Definition::Exchange {
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                out.put_u8(EXCHANGE);
                put_short(&mut out, name.as_bytes());
                put_short(&mut out, kind.as_bytes());
                out.put_u8(u8::from(*auto_delete) | u8::from(*internal) << 1);
                encode_field_table(&mut out, arguments);
            }
            Definition::Queue {
                name,
                auto_delete,
                arguments,
            } => {
                out.put_u8(QUEUE);
                put_short(&mut out, name.as_bytes());
                out.put_u8(u8::from(*auto_delete));
                encode_field_table(&mut out, arguments);
            }
            Definition::Binding {
                source,
                destination,
                routing_key,
                arguments,
            } => {
                out.put_u8(BINDING);
                put_short(&mut out, source.as_bytes());
                let (kind, name) = match destination {
                    Destination::Queue(name) => (0, name),
                    Destination::Exchange(name) => (1, name),
                };
                out.put_u8(kind);
                put_short(&mut out, name.as_bytes());
                put_short(&mut out, routing_key.as_bytes());
                encode_field_table(&mut out, arguments);
            }
        }
        out.to_vec()
    }

    /// `None` for a record that is not a well-formed definition.
    pub fn decode(record: &[u8]) -> Option<Definition> {
        let mut r = Reader(record);
        let definition = match r.u8()? {
            EXCHANGE => {
                let name = r.short()?;
                let kind = r.short()?.as_str().to_owned();
                let flags = r.u8()?;
                Definition::Exchange {
                    name,
                    kind,
                    auto_delete: flags & 1 != 0,
                    internal: flags & 2 != 0,
                    arguments: r.table()?,
                }
            }
            QUEUE => {
                let name = r.short()?;
                let flags = r.u8()?;
                Definition::Queue {
                    name,
                    auto_delete: flags & 1 != 0,
                    arguments: r.table()?,
                }
            }
            BINDING => {
                let source = r.short()?;
                let kind = r.u8()?;
                let name = r.short()?;
                let destination = match kind {
                    0 => Destination::Queue(name),
                    1 => Destination::Exchange(name),
                    _ => return None,
                };
                Definition::Binding {
                    source,
                    destination,
                    routing_key: r.short()?,
                    arguments: r.table()?,
                }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(definition)
    }
}

/// A message as its queue's log stores it; `persistent` says whether it is to be recovered.
pub fn encode_message(message: &Message, persistent: bool) -> Vec<u8> {
    let properties = message.properties();
    let mut out = Vec::with_capacity(encoded_len(message) as usize);
    out.put_u8(match persistent {
        true => MESSAGE_PERSISTENT,
        false => MESSAGE_TRANSIENT,
    });
    put_short(&mut out, message.exchange_bytes());
    put_short(&mut out, message.routing_key_bytes());
    out.put_u32(properties.len() as u32);
    out.put_slice(properties);
    out.put_slice(message.body());
    out
}

/// The length of [`encode_message`]'s record for `message`.
pub fn encoded_len(message: &Message) -> u64 {
    (1 + 1
        + message.exchange_bytes().len()
        + 1
        + message.routing_key_bytes().len()
        + 4
        + message.properties().len()
        + message.body().len()) as u64
}

/// Whether a log record is a persistent message (to be recovered), from its first byte.
pub fn is_persistent_record(record: &[u8]) -> bool {
    record.first() == Some(&MESSAGE_PERSISTENT)
}

/// A message read back from a log, and whether it was persistent; `None` if the record is not
/// one.
pub fn decode_message(record: &Bytes) -> Option<(Message, bool)> {
    let mut r = Reader(record);
    let persistent = match r.u8()? {
        MESSAGE_PERSISTENT => true,
        MESSAGE_TRANSIENT => false,
        _ => return None,
    };
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
    Some((message, persistent))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn short(&mut self) -> Option<ShortStr> {
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        ShortStr::new(Bytes::copy_from_slice(bytes))
    }

    fn table(&mut self) -> Option<FieldTable> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let encoded = self.take(len.checked_add(4)?)?;
        decode_field_table(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::types::{AMQPValue, ShortString};

    #[test]
    fn definitions_round_trip_and_damage_is_refused() {
        let mut arguments = FieldTable::default();
        arguments.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(10));
        let all = [
            Definition::Exchange {
                name: ShortStr::from_static("orders"),
                kind: "topic".into(),
                auto_delete: false,
                internal: true,
                arguments: arguments.clone(),
            },
            Definition::Queue {
                name: ShortStr::from_static("payments"),
                auto_delete: true,
                arguments: arguments.clone(),
            },
            Definition::Binding {
                source: ShortStr::from_static("orders"),
                destination: Destination::Exchange(ShortStr::from_static("audit")),
                routing_key: ShortStr::from_static("order.#"),
                arguments: FieldTable::default(),
            },
        ];
        for definition in all {
            let record = definition.encode();
            assert_eq!(Definition::decode(&record), Some(definition));
            for cut in 0..record.len() {
                assert_eq!(Definition::decode(&record[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(Definition::decode(&[9, 0]), None);
    }

    #[test]
    fn messages_round_trip() {
        for size in [0, 10, 5000] {
            let body = Bytes::from(vec![3u8; size]);
            let message = Message::new(b"amq.direct", b"key", &[0x10, 0], body);
            let record = Bytes::from(encode_message(&message, size != 10));
            assert_eq!(record.len() as u64, encoded_len(&message));
            let (back, persistent) = decode_message(&record).expect("decodes");
            assert_eq!(
                encoded_len(&back),
                encoded_len(&message),
                "settle's length hint"
            );
            assert_eq!(persistent, size != 10);
            assert_eq!(back.exchange(), "amq.direct");
            assert_eq!(back.routing_key(), "key");
            assert_eq!(back.properties(), &[0x10, 0]);
            assert_eq!(back.body(), message.body());
            assert!(decode_message(&record.slice(..9)).is_none());
        }
        assert!(decode_message(&Bytes::from_static(&[3, 0, 0])).is_none());
    }
}

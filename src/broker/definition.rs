//! How the definitions file's records are written (exchanges, queues, bindings). The store keeps
//! them as opaque bytes; this module is the only one that knows their layout, and it trusts
//! nothing it reads back. (A queue's message records are `record.rs`.)
//!
//! Strings are short strings (`u8` length, bytes); field tables are in their AMQP encoding (with
//! their `u32` length). A kind byte (1 exchange, 2 queue, 3 binding) and the fields below.
//!
//! Each record has a key, its identity in the definitions log (a later delete names it): the kind
//! byte and the name for an exchange or a queue; for a binding, the kind byte, source, destination
//! (kind and name), routing key and the arguments as the exchange compares them
//! ([`encode_arguments`]).

use bytes::{BufMut, BytesMut};
use warren_protocol::method::ShortStr;
use warren_protocol::table::encode_field_table;
use warren_protocol::types::FieldTable;

use super::exchange::{encode_arguments, Destination};
use super::record::{put_short, Reader};

const EXCHANGE: u8 = 1;
const QUEUE: u8 = 2;
const BINDING: u8 = 3;

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

/// The key of an exchange's record.
pub fn exchange_key(name: &ShortStr) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(EXCHANGE);
    put_short(&mut out, name.as_bytes());
    out.to_vec()
}

/// The key of a queue's record.
pub fn queue_key(name: &ShortStr) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(QUEUE);
    put_short(&mut out, name.as_bytes());
    out.to_vec()
}

/// The key of a binding's record; `arguments` as [`encode_arguments`] gives them.
pub fn binding_key(
    source: &ShortStr,
    destination: &Destination,
    routing_key: &ShortStr,
    arguments: &[u8],
) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(BINDING);
    put_short(&mut out, source.as_bytes());
    let (kind, name) = match destination {
        Destination::Queue(name) => (0, name),
        Destination::Exchange(name) => (1, name),
    };
    out.put_u8(kind);
    put_short(&mut out, name.as_bytes());
    put_short(&mut out, routing_key.as_bytes());
    out.put_slice(arguments);
    out.to_vec()
}

impl Definition {
    /// Its identity in the definitions log.
    pub fn key(&self) -> Vec<u8> {
        match self {
            Definition::Exchange { name, .. } => exchange_key(name),
            Definition::Queue { name, .. } => queue_key(name),
            Definition::Binding {
                source,
                destination,
                routing_key,
                arguments,
            } => binding_key(
                source,
                destination,
                routing_key,
                &encode_arguments(arguments),
            ),
        }
    }

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
}

//! Integration tests of the codec's public API: bytes -> frames -> methods/content and back.
//!
//! - every AMQP 0-9-1 method round-trips through `encode_method` / `parse_frame` / `decode_method`,
//!   and the hand-written fast paths agree byte-for-byte with `amq-protocol`'s generic encoding;
//! - content bodies split at `frame_max` and reassemble; properties are carried byte-for-byte;
//! - a stream cut at any byte yields exactly the complete frames and consumes nothing partial;
//! - malformed input (bad envelope, unknown ids, truncations, lying or 100k-deep tables, bad content
//!   headers) is an error, never a panic or a stack overflow;
//! - property tests: random bytes never panic the parse loop; random fast-path values round-trip;
//!   random bodies split and reassemble.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use warren_protocol::content::{
    decode_content_header, encode_body, encode_content, encode_content_header, encode_properties,
    with_header, with_long_header, ContentError, ContentHeader,
};
use warren_protocol::frame::{
    encode_frame, encode_heartbeat, parse_frame, Frame, FrameType, FRAME_END, FRAME_HEADER_LEN,
    FRAME_MIN_SIZE, FRAME_OVERHEAD,
};
use warren_protocol::method::{
    decode_method, encode_ack, encode_deliver, encode_method, encode_publish, Ack, Deliver, Method,
    Publish, ShortStr,
};
use warren_protocol::spec::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass, BasicProperties,
};
use warren_protocol::table::MAX_DEPTH;
use warren_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use warren_protocol::{FrameError, MethodError};

/// Big enough for every control method and the deep-table payloads below.
const BIG_FRAME_MAX: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// Helpers

fn ss(s: &str) -> ShortString {
    ShortString::from(s)
}

fn ls(s: &str) -> LongString {
    LongString::from(s)
}

/// A field table with a value of every type `amq-protocol` round-trips (all but the tag-less
/// `ShortString`), a nested table, an array holding a table and an array, and a table in an array
/// in a table.
fn rich_table() -> FieldTable {
    let mut bottom = FieldTable::default();
    bottom.insert(ss("deep"), AMQPValue::LongString(ls("bottom")));
    bottom.insert(ss("n"), AMQPValue::LongLongInt(-7));

    let mut nested = FieldTable::default();
    nested.insert(ss("inner"), AMQPValue::FieldTable(bottom.clone()));
    nested.insert(
        ss("list"),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(-1),
            AMQPValue::FieldTable(bottom),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(true),
                AMQPValue::LongString(ls("x")),
            ])),
            AMQPValue::Void,
        ])),
    );

    let mut t = FieldTable::default();
    t.insert(ss("bool"), AMQPValue::Boolean(true));
    t.insert(ss("i8"), AMQPValue::ShortShortInt(-8));
    t.insert(ss("u8"), AMQPValue::ShortShortUInt(200));
    t.insert(ss("i16"), AMQPValue::ShortInt(-1600));
    t.insert(ss("u16"), AMQPValue::ShortUInt(60000));
    t.insert(ss("i32"), AMQPValue::LongInt(-320_000));
    t.insert(ss("u32"), AMQPValue::LongUInt(4_000_000_000));
    t.insert(ss("i64"), AMQPValue::LongLongInt(-(1 << 40)));
    t.insert(ss("f32"), AMQPValue::Float(1.5));
    t.insert(ss("f64"), AMQPValue::Double(-2.25e100));
    t.insert(
        ss("decimal"),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert(ss("string"), AMQPValue::LongString(ls("héllo wörld")));
    t.insert(ss("timestamp"), AMQPValue::Timestamp(1_700_000_000));
    t.insert(
        ss("bytes"),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 0xCE, 255])),
    );
    t.insert(ss("void"), AMQPValue::Void);
    t.insert(ss("nested"), AMQPValue::FieldTable(nested));
    t.insert(
        ss("x-dead-letter-exchange"),
        AMQPValue::LongString(ls("dlx")),
    );
    t
}

fn encode_class(channel: u16, class: &AMQPClass) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, class);
    out
}

/// Parses exactly one frame from `wire`, which must hold nothing else.
fn single_frame(wire: &[u8], frame_max: u32) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = parse_frame(&mut buf, frame_max)
        .expect("frame parses")
        .expect("frame is complete");
    assert!(buf.is_empty(), "{} bytes left after one frame", buf.len());
    frame
}

/// The method frame's payload (ids + arguments) for `class`.
fn method_payload(class: &AMQPClass) -> Bytes {
    single_frame(&encode_class(1, class), BIG_FRAME_MAX).payload
}

/// Parses every complete frame at the front of `buf`; stops at the first incomplete one.
fn parse_all(buf: &mut BytesMut, frame_max: u32) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = parse_frame(buf, frame_max).expect("well-formed stream") {
        frames.push(frame);
    }
    frames
}

/// A chain of `depth` field tables (`depth >= 1`), each but the last holding the next under the
/// empty key. Built front to back in linear time: prepending level by level would copy
/// quadratically, and 100k levels are 600 KB.
fn nested_tables(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 6);
    for level in 0..depth - 1 {
        // The table nested in this one holds `depth - level - 2` more, then the empty innermost.
        let inner_size = 6 * (depth - level - 2) + 4;
        out.extend_from_slice(&((2 + inner_size) as u32).to_be_bytes());
        out.extend_from_slice(&[0, b'F']); // key "" then a table value
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// A table whose single entry is a chain of `depth` nested field arrays (`depth >= 1`).
fn nested_arrays_in_table(depth: usize) -> Vec<u8> {
    let mut arrays = Vec::with_capacity(depth * 5);
    for level in 0..depth - 1 {
        let inner_size = 5 * (depth - level - 2) + 4;
        arrays.extend_from_slice(&((1 + inner_size) as u32).to_be_bytes());
        arrays.push(b'A');
    }
    arrays.extend_from_slice(&0u32.to_be_bytes());
    let mut table = ((arrays.len() + 3) as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&[1, b'a', b'A']);
    table.extend_from_slice(&arrays);
    table
}

fn queue_declare_payload(arguments_table: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u16(50);
    p.put_u16(10);
    p.put_u16(0);
    p.put_u8(2);
    p.put_slice(b"q1");
    p.put_u8(0b0000_0010); // durable
    p.put_slice(arguments_table);
    p.freeze()
}

fn start_ok_payload(client_properties: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u16(10);
    p.put_u16(11);
    p.put_slice(client_properties);
    p.put_u8(5);
    p.put_slice(b"PLAIN");
    p.put_u32(12);
    p.put_slice(b"\0guest\0guest");
    p.put_u8(5);
    p.put_slice(b"en_US");
    p.freeze()
}

fn header_payload(class_id: u16, weight: u16, body_size: u64, properties: &[u8]) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u16(class_id);
    p.put_u16(weight);
    p.put_u64(body_size);
    p.put_slice(properties);
    p.freeze()
}

fn all_properties() -> BasicProperties {
    let mut headers = rich_table();
    headers.insert(ss("x-match"), AMQPValue::LongString(ls("all")));
    BasicProperties::default()
        .with_content_type(ss("application/json"))
        .with_content_encoding(ss("gzip"))
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id(ss("corr-1"))
        .with_reply_to(ss("amq.rabbitmq.reply-to"))
        .with_expiration(ss("60000"))
        .with_message_id(ss("msg-42"))
        .with_timestamp(1_700_000_123)
        .with_type(ss("order.created"))
        .with_user_id(ss("guest"))
        .with_app_id(ss("warren-tests"))
        .with_cluster_id(ss("cluster-a"))
}

// ---------------------------------------------------------------------------------------------
// Every method of every class

/// A representative of every method AMQP 0-9-1 (with RabbitMQ's extensions) defines, each with
/// non-default values wherever the method has fields.
fn every_method() -> Vec<AMQPClass> {
    use AMQPClass::*;
    let t = rich_table;
    vec![
        // connection
        Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: t(),
            mechanisms: ls("PLAIN AMQPLAIN"),
            locales: ls("en_US"),
        })),
        Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: t(),
            mechanism: ss("PLAIN"),
            response: ls("\0guest\0guest"),
            locale: ss("en_US"),
        })),
        Connection(connection::AMQPMethod::Secure(connection::Secure {
            challenge: ls("challenge"),
        })),
        Connection(connection::AMQPMethod::SecureOk(connection::SecureOk {
            response: ls("response"),
        })),
        Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        })),
        Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 1024,
            frame_max: 65_536,
            heartbeat: 30,
        })),
        Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: ss("/prod"),
        })),
        Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 320,
            reply_text: ss("CONNECTION_FORCED - shutdown"),
            class_id: 50,
            method_id: 10,
        })),
        Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        Connection(connection::AMQPMethod::Blocked(connection::Blocked {
            reason: ss("low on memory"),
        })),
        Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
        Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: ls("new-token"),
                reason: ss("refresh"),
            },
        )),
        Connection(connection::AMQPMethod::UpdateSecretOk(
            connection::UpdateSecretOk {},
        )),
        // channel
        Channel(channel::AMQPMethod::Open(channel::Open {})),
        Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
        Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
            active: true,
        })),
        Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 404,
            reply_text: ss("NOT_FOUND - no queue 'q1'"),
            class_id: 60,
            method_id: 20,
        })),
        Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        // access
        Access(access::AMQPMethod::Request(access::Request {
            realm: ss("/data"),
            exclusive: true,
            passive: false,
            active: true,
            write: false,
            read: true,
        })),
        Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
        // exchange
        Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: ss("orders"),
            kind: ss("topic"),
            passive: false,
            durable: true,
            auto_delete: true,
            internal: false,
            nowait: true,
            arguments: t(),
        })),
        Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
        Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
            exchange: ss("orders"),
            if_unused: true,
            nowait: true,
        })),
        Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: ss("dst"),
            source: ss("src"),
            routing_key: ss("a.*.c"),
            nowait: true,
            arguments: t(),
        })),
        Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
        Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
            destination: ss("dst"),
            source: ss("src"),
            routing_key: ss("a.#"),
            nowait: true,
            arguments: t(),
        })),
        Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
        // queue
        Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: ss("q1"),
            passive: false,
            durable: true,
            exclusive: true,
            auto_delete: false,
            nowait: true,
            arguments: t(),
        })),
        Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: ss("amq.gen-abc"),
            message_count: 12,
            consumer_count: 3,
        })),
        Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: ss("q1"),
            exchange: ss("orders"),
            routing_key: ss("eu.#"),
            nowait: true,
            arguments: t(),
        })),
        Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
        Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: ss("q1"),
            nowait: true,
        })),
        Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
            message_count: 99,
        })),
        Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: ss("q1"),
            if_unused: true,
            if_empty: false,
            nowait: true,
        })),
        Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
            message_count: 7,
        })),
        Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: ss("q1"),
            exchange: ss("orders"),
            routing_key: ss("eu.#"),
            arguments: t(),
        })),
        Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
        // basic
        Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 250,
            global: true,
        })),
        Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ss("q1"),
            consumer_tag: ss("ctag-1"),
            no_local: true,
            no_ack: false,
            exclusive: true,
            nowait: true,
            arguments: t(),
        })),
        Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: ss("amq.ctag-xyz"),
        })),
        Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: ss("ctag-1"),
            nowait: true,
        })),
        Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
            consumer_tag: ss("ctag-1"),
        })),
        Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: ss("orders"),
            routing_key: ss("eu.created"),
            mandatory: true,
            immediate: false,
        })),
        Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: 312,
            reply_text: ss("NO_ROUTE"),
            exchange: ss("orders"),
            routing_key: ss("nowhere"),
        })),
        Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: ss("ctag-1"),
            delivery_tag: u64::MAX - 1,
            redelivered: true,
            exchange: ss("orders"),
            routing_key: ss("eu.created"),
        })),
        Basic(basic::AMQPMethod::Get(basic::Get {
            queue: ss("q1"),
            no_ack: true,
        })),
        Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag: 77,
            redelivered: true,
            exchange: ss(""),
            routing_key: ss("q1"),
            message_count: 5,
        })),
        Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
        Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1 << 40,
            multiple: true,
        })),
        Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: 9,
            requeue: true,
        })),
        Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync {
            requeue: true,
        })),
        Basic(basic::AMQPMethod::Recover(basic::Recover { requeue: true })),
        Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
        Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 10,
            multiple: true,
            requeue: true,
        })),
        // tx
        Tx(tx::AMQPMethod::Select(tx::Select {})),
        Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
        Tx(tx::AMQPMethod::Commit(tx::Commit {})),
        Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
        Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
        Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
        // confirm
        Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
        Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
    ]
}

/// What `decode_method` gives back for `class`: the fast-path variants for publish and ack.
fn expected_decode(class: &AMQPClass) -> Method {
    match class {
        AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => Method::Publish(Publish {
            exchange: ShortStr::new(Bytes::copy_from_slice(p.exchange.as_str().as_bytes()))
                .unwrap(),
            routing_key: ShortStr::new(Bytes::copy_from_slice(p.routing_key.as_str().as_bytes()))
                .unwrap(),
            mandatory: p.mandatory,
            immediate: p.immediate,
        }),
        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => Method::Ack(Ack {
            delivery_tag: a.delivery_tag,
            multiple: a.multiple,
        }),
        other => Method::Other(other.clone()),
    }
}

#[test]
fn the_method_list_covers_every_method_of_every_class() {
    let mut ids: Vec<(u16, u16)> = every_method()
        .iter()
        .map(|c| (c.get_amqp_class_id(), c.get_amqp_method_id()))
        .collect();
    ids.sort_unstable();
    let mut expected = Vec::new();
    for (class, methods) in [
        (
            10u16,
            &[10u16, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71][..],
        ),
        (20, &[10, 11, 20, 21, 40, 41]),
        (30, &[10, 11]),
        (40, &[10, 11, 20, 21, 30, 31, 40, 51]),
        (50, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51]),
        (
            60,
            &[
                10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
            ],
        ),
        (85, &[10, 11]),
        (90, &[10, 11, 20, 21, 30, 31]),
    ] {
        expected.extend(methods.iter().map(|&m| (class, m)));
    }
    assert_eq!(ids, expected);
}

#[test]
fn every_method_round_trips_through_a_frame() {
    for (i, class) in every_method().iter().enumerate() {
        let channel = 1 + i as u16 * 37;
        let wire = encode_class(channel, class);
        let frame = single_frame(&wire, BIG_FRAME_MAX);
        assert_eq!(frame.frame_type, FrameType::Method, "{class:?}");
        assert_eq!(frame.channel, channel, "{class:?}");
        let method = decode_method(&frame.payload).unwrap_or_else(|e| panic!("{class:?}: {e}"));
        assert_eq!(method, expected_decode(class));
        assert_eq!(
            method.ids(),
            (class.get_amqp_class_id(), class.get_amqp_method_id())
        );
        // Control methods fit the smallest frame_max a peer may negotiate.
        let mut buf = wire.clone();
        assert!(
            parse_frame(&mut buf, FRAME_MIN_SIZE).unwrap().is_some(),
            "{class:?}"
        );
    }
}

#[test]
fn fast_encoders_match_the_generic_encoding() {
    let publish = basic::Publish {
        exchange: ss("orders"),
        routing_key: ss("eu.créé"),
        mandatory: true,
        immediate: true,
    };
    let fast = Publish {
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("eu.créé"),
        mandatory: true,
        immediate: true,
    };
    for (mandatory, immediate) in [(false, false), (true, false), (false, true), (true, true)] {
        let generic = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            mandatory,
            immediate,
            ..publish.clone()
        }));
        let mut out = BytesMut::new();
        encode_publish(
            &mut out,
            5,
            &Publish {
                mandatory,
                immediate,
                ..fast.clone()
            },
        );
        assert_eq!(out, encode_class(5, &generic));
    }

    for multiple in [false, true] {
        for delivery_tag in [0, 1, 0x0102_0304_0506_0708, u64::MAX] {
            let generic = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple,
            }));
            let mut out = BytesMut::new();
            encode_ack(
                &mut out,
                65535,
                &Ack {
                    delivery_tag,
                    multiple,
                },
            );
            assert_eq!(out, encode_class(65535, &generic));
        }
    }

    for redelivered in [false, true] {
        let generic = basic::Deliver {
            consumer_tag: ss("amq.ctag-ü"),
            delivery_tag: 0xDEAD_BEEF_0000_0001,
            redelivered,
            exchange: ss(""),
            routing_key: ss(&"k".repeat(255)),
        };
        let key = "k".repeat(255);
        let fast = Deliver {
            consumer_tag: "amq.ctag-ü".as_bytes(),
            delivery_tag: 0xDEAD_BEEF_0000_0001,
            redelivered,
            exchange: b"",
            routing_key: key.as_bytes(),
        };
        let class = AMQPClass::Basic(basic::AMQPMethod::Deliver(generic));
        let mut out = BytesMut::new();
        encode_deliver(&mut out, 3, &fast);
        assert_eq!(out, encode_class(3, &class));
        // And the broker's deliver decodes (via the generic path) to the same method.
        let frame = single_frame(&out, FRAME_MIN_SIZE);
        assert_eq!(decode_method(&frame.payload), Ok(Method::Other(class)));
    }
}

#[test]
fn fast_paths_and_generic_parser_agree_on_publish_and_ack() {
    // The same bytes through the fast path and through amq-protocol's parser.
    for class in every_method() {
        let payload = method_payload(&class);
        let generic = warren_protocol::spec::parse_class(&payload[..]).unwrap().1;
        assert_eq!(generic, class);
        assert_eq!(decode_method(&payload).unwrap(), expected_decode(&class));
    }
}

#[test]
fn deliver_truncates_over_long_strings_on_a_char_boundary() {
    // 254 ASCII bytes then a 2-byte char: the 255-byte cut falls inside the char.
    let long = format!("{}é-and-more", "a".repeat(254));
    let mut out = BytesMut::new();
    encode_deliver(
        &mut out,
        1,
        &Deliver {
            consumer_tag: long.as_bytes(),
            delivery_tag: 1,
            redelivered: false,
            exchange: long.as_bytes(),
            routing_key: long.as_bytes(),
        },
    );
    let frame = single_frame(&out, FRAME_MIN_SIZE);
    match decode_method(&frame.payload) {
        Ok(Method::Other(AMQPClass::Basic(basic::AMQPMethod::Deliver(d)))) => {
            let cut = "a".repeat(254);
            assert_eq!(d.consumer_tag.as_str(), cut);
            assert_eq!(d.exchange.as_str(), cut);
            assert_eq!(d.routing_key.as_str(), cut);
        }
        other => panic!("deliver with over-long strings: {other:?}"),
    }
    let s = ShortStr::from_static("ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé");
    assert!(s.as_bytes().len() <= 255);
    assert_eq!(s.as_str().as_bytes(), s.as_bytes());
    assert!(!s.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Content

#[test]
fn bodies_split_at_frame_max_and_reassemble() {
    for frame_max in [FRAME_MIN_SIZE, 131_072] {
        let fm = frame_max as usize;
        let max_payload = fm - FRAME_OVERHEAD;
        for (len, frames) in [
            (0, 0),
            (1, 1),
            (fm - 8, 1),
            (fm - 7, 2),
            (fm * 7 / 2, (fm * 7 / 2).div_ceil(max_payload)),
        ] {
            if fm == 4096 && len == fm * 7 / 2 {
                assert_eq!(frames, 4); // 14336 bytes = 3 full frames of 4088 + 2072
            }
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let props = encode_properties(&BasicProperties::default().with_delivery_mode(1));
            let mut wire = BytesMut::new();
            encode_content(&mut wire, 9, &props, &body, frame_max);

            let all = parse_all(&mut wire, frame_max);
            assert!(wire.is_empty());
            assert_eq!(all.len(), 1 + frames, "frame_max {frame_max}, body {len}");
            let header = decode_content_header(&all[0].payload).unwrap();
            assert_eq!(all[0].frame_type, FrameType::Header);
            assert_eq!(header.body_size, len as u64);
            assert_eq!(header.properties, props);
            let mut reassembled = Vec::new();
            for (i, f) in all[1..].iter().enumerate() {
                assert_eq!((f.frame_type, f.channel), (FrameType::Body, 9));
                assert!(f.payload.len() <= max_payload);
                if i + 1 < frames {
                    assert_eq!(f.payload.len(), max_payload, "only the last frame is short");
                }
                assert!(!f.payload.is_empty());
                reassembled.extend_from_slice(&f.payload);
            }
            assert_eq!(reassembled, body);
        }
    }
}

#[test]
fn all_fourteen_properties_survive_byte_for_byte() {
    let props = all_properties();
    let raw = encode_properties(&props);
    assert_eq!(&raw[..2], &[0xFF, 0xFC], "all 14 flag bits set");
    let mut wire = BytesMut::new();
    encode_content(&mut wire, 2, &raw, b"hello", FRAME_MIN_SIZE);
    let sent = wire.clone().freeze();
    let frames = parse_all(&mut wire, FRAME_MIN_SIZE);
    assert_eq!(frames.len(), 2);
    let header = decode_content_header(&frames[0].payload).unwrap();
    assert_eq!(header.class_id, 60);
    assert_eq!(header.body_size, 5);
    assert_eq!(header.properties, raw);
    assert_eq!(header.decode_properties().unwrap(), props);
    assert_eq!(header.delivery_mode(), Some(2));
    assert_eq!(header.priority(), Some(7));
    // Re-encoding the header from the kept bytes gives the same frame (the broker's deliver path).
    let mut again = BytesMut::new();
    encode_content_header(&mut again, 2, header.body_size, &header.properties);
    assert_eq!(again[..], sent[..FRAME_OVERHEAD + frames[0].payload.len()]);
}

#[test]
fn single_properties_read_right() {
    let cases = [
        (BasicProperties::default(), None, None),
        (
            BasicProperties::default().with_delivery_mode(1),
            Some(1),
            None,
        ),
        (BasicProperties::default().with_priority(9), None, Some(9)),
        (
            BasicProperties::default()
                .with_content_type(ss("text/plain"))
                .with_headers(rich_table())
                .with_priority(0)
                .with_app_id(ss("x")),
            None,
            Some(0),
        ),
        (
            BasicProperties::default()
                .with_headers(rich_table())
                .with_delivery_mode(2)
                .with_priority(255),
            Some(2),
            Some(255),
        ),
    ];
    for (props, delivery_mode, priority) in cases {
        let raw = encode_properties(&props);
        let header = decode_content_header(&header_payload(60, 0, 0, &raw)).unwrap();
        assert_eq!(header.delivery_mode(), delivery_mode, "{props:?}");
        assert_eq!(header.priority(), priority, "{props:?}");
        assert_eq!(header.decode_properties().unwrap(), props);
    }
}

// ---------------------------------------------------------------------------------------------
// Partial input

#[test]
fn a_stream_cut_at_every_byte_yields_only_complete_frames() {
    const FM: u32 = FRAME_MIN_SIZE;
    let mut wire = BytesMut::new();
    encode_publish(
        &mut wire,
        7,
        &Publish {
            exchange: ShortStr::from_static("amq.direct"),
            routing_key: ShortStr::from_static("rk"),
            mandatory: true,
            immediate: false,
        },
    );
    let body: Vec<u8> = (0..FM as usize).map(|i| i as u8).collect(); // 4088 + 8: two frames
    encode_content(
        &mut wire,
        7,
        &encode_properties(&all_properties()),
        &body,
        FM,
    );
    encode_heartbeat(&mut wire);
    let wire = wire.freeze();

    // Frame boundaries, read off the size fields.
    let mut ends = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let size = u32::from_be_bytes(wire[at + 3..at + 7].try_into().unwrap()) as usize;
        at += FRAME_OVERHEAD + size;
        ends.push(at);
    }
    assert_eq!(at, wire.len());
    assert_eq!(ends.len(), 5, "method, header, 2 bodies, heartbeat");
    let expected = parse_all(&mut BytesMut::from(&wire[..]), FM);
    assert_eq!(expected.len(), 5);
    let types: Vec<_> = expected.iter().map(|f| f.frame_type).collect();
    assert_eq!(
        types,
        [
            FrameType::Method,
            FrameType::Header,
            FrameType::Body,
            FrameType::Body,
            FrameType::Heartbeat
        ]
    );

    for cut in 0..=wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        let first = parse_all(&mut buf, FM);
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(first.len(), complete, "cut at {cut}");
        assert_eq!(first[..], expected[..complete], "cut at {cut}");
        let consumed = if complete == 0 { 0 } else { ends[complete - 1] };
        assert_eq!(
            &buf[..],
            &wire[consumed..cut],
            "partial frame consumed at cut {cut}"
        );

        buf.extend_from_slice(&wire[cut..]);
        let rest = parse_all(&mut buf, FM);
        assert!(buf.is_empty());
        assert_eq!(rest[..], expected[complete..], "cut at {cut}");
    }

    // The frames decode to what was sent.
    assert!(matches!(decode_method(&expected[0].payload), Ok(Method::Publish(p)) if p.mandatory));
    let header = decode_content_header(&expected[1].payload).unwrap();
    assert_eq!(header.body_size, body.len() as u64);
    let mut reassembled = expected[2].payload.to_vec();
    reassembled.extend_from_slice(&expected[3].payload);
    assert_eq!(reassembled, body);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: the envelope

fn raw_frame(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut v = vec![frame_type];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(end);
    v
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    for end in [0x00, 0xCD, 0xCF, 0xFF] {
        let mut buf = BytesMut::from(&raw_frame(1, 1, &[0, 60, 0, 80], end)[..]);
        assert_eq!(
            parse_frame(&mut buf, FRAME_MIN_SIZE),
            Err(FrameError::BadFrameEnd { found: end })
        );
    }
    // After a good frame: the good one comes out, then the error.
    let mut wire = raw_frame(8, 0, &[], FRAME_END);
    wire.extend(raw_frame(3, 1, b"body", b'x'));
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        parse_frame(&mut buf, FRAME_MIN_SIZE)
            .unwrap()
            .unwrap()
            .frame_type,
        FrameType::Heartbeat
    );
    assert_eq!(
        parse_frame(&mut buf, FRAME_MIN_SIZE),
        Err(FrameError::BadFrameEnd { found: b'x' })
    );
}

#[test]
fn oversize_frames_are_rejected_from_the_header_alone() {
    for frame_max in [FRAME_MIN_SIZE, 131_072, 1 << 20] {
        let limit = frame_max - FRAME_OVERHEAD as u32;
        for frame_type in [1u8, 2, 3, 8] {
            for size in [limit + 1, limit + 1000, u32::MAX] {
                let mut header = vec![frame_type, 0, 1];
                header.extend_from_slice(&size.to_be_bytes());
                assert_eq!(header.len(), FRAME_HEADER_LEN);
                let mut buf = BytesMut::from(&header[..]);
                assert_eq!(
                    parse_frame(&mut buf, frame_max),
                    Err(FrameError::TooLarge { size, frame_max })
                );
            }
            // At the limit: just waits for the payload.
            let mut header = vec![frame_type, 0, 1];
            header.extend_from_slice(&limit.to_be_bytes());
            let mut buf = BytesMut::from(&header[..]);
            assert_eq!(parse_frame(&mut buf, frame_max), Ok(None));
            assert_eq!(buf.len(), FRAME_HEADER_LEN);
        }
        // Exactly frame_max on the wire is accepted.
        let wire = raw_frame(3, 1, &vec![0xAB; limit as usize], FRAME_END);
        assert_eq!(wire.len(), frame_max as usize);
        assert_eq!(single_frame(&wire, frame_max).payload.len(), limit as usize);
    }
}

#[test]
fn unknown_frame_types_are_rejected_from_the_header_alone() {
    for frame_type in (0..=255u8).filter(|t| ![1, 2, 3, 8].contains(t)) {
        let mut buf = BytesMut::from(&raw_frame(frame_type, 0, &[], FRAME_END)[..FRAME_HEADER_LEN]);
        assert_eq!(
            parse_frame(&mut buf, FRAME_MIN_SIZE),
            Err(FrameError::UnknownType(frame_type))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input: methods

#[test]
fn unknown_class_or_method_is_unknown() {
    for (class_id, method_id) in [
        (0, 0),
        (10, 12),
        (10, 72),
        (20, 30),
        (30, 12),
        (40, 41),
        (40, 50),
        (50, 60),
        (60, 41),
        (60, 81),
        (60, 121),
        (70, 10),
        (85, 12),
        (90, 40),
        (100, 10),
        (65535, 65535),
    ] {
        let mut payload = BytesMut::new();
        payload.put_u16(class_id);
        payload.put_u16(method_id);
        payload.put_slice(&[0; 16]);
        let frame = single_frame(&raw_frame(1, 1, &payload, FRAME_END), FRAME_MIN_SIZE);
        assert_eq!(
            decode_method(&frame.payload),
            Err(MethodError::Unknown {
                class_id,
                method_id
            })
        );
    }
}

fn assert_syntax(result: Result<Method, MethodError>, ids: (u16, u16), what: &str) {
    match result {
        Err(MethodError::Syntax {
            class_id,
            method_id,
            ..
        }) => assert_eq!((class_id, method_id), ids, "{what}"),
        other => panic!("{what}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_every_method_is_a_syntax_error() {
    for class in every_method() {
        let ids = (class.get_amqp_class_id(), class.get_amqp_method_id());
        let payload = method_payload(&class);
        for cut in 0..payload.len() {
            let expected_ids = if cut < 4 { (0, 0) } else { ids };
            assert_syntax(
                decode_method(&payload.slice(..cut)),
                expected_ids,
                &format!("{class:?} cut at {cut}"),
            );
        }
        // One byte too many is as bad as one too few.
        let mut longer = BytesMut::from(&payload[..]);
        longer.put_u8(0);
        assert_syntax(
            decode_method(&longer.freeze()),
            ids,
            &format!("{class:?} + 1 byte"),
        );
    }
}

#[test]
fn every_truncation_of_queue_declare_with_arguments_is_a_syntax_error() {
    let class = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ss("q1"),
        durable: true,
        arguments: rich_table(),
        ..Default::default()
    }));
    let payload = method_payload(&class);
    assert!(payload.len() > 200);
    for cut in 0..payload.len() {
        let ids = if cut < 4 { (0, 0) } else { (50, 10) };
        assert_syntax(
            decode_method(&payload.slice(..cut)),
            ids,
            &format!("cut at {cut}"),
        );
    }
    assert_eq!(decode_method(&payload), Ok(Method::Other(class)));
}

#[test]
fn lying_table_lengths_are_syntax_errors() {
    let mut table = Vec::new();
    table.extend_from_slice(&[0, 0, 0, 0]);
    let entries: &[u8] = &[
        3, b'k', b'e', b'y', b'S', 0, 0, 0, 3, b'a', b'b', b'c', 1, b'n', b'I', 0, 0, 0, 5,
    ];
    table.extend_from_slice(entries);
    let honest = entries.len() as u32;
    table[..4].copy_from_slice(&honest.to_be_bytes());
    assert!(matches!(
        decode_method(&queue_declare_payload(&table)),
        Ok(Method::Other(_))
    ));

    for claimed in [
        honest + 1,
        honest + 100,
        u32::MAX,
        honest - 1,
        honest - 5,
        1,
        0,
    ] {
        let mut t = table.clone();
        t[..4].copy_from_slice(&claimed.to_be_bytes());
        assert_syntax(
            decode_method(&queue_declare_payload(&t)),
            (50, 10),
            &format!("table length {claimed} for {honest} bytes"),
        );
    }
    // A long string inside the table claiming more than the table holds.
    let mut t = table.clone();
    t[4 + 5..4 + 9].copy_from_slice(&100u32.to_be_bytes());
    assert_syntax(
        decode_method(&queue_declare_payload(&t)),
        (50, 10),
        "long string overruns table",
    );
    // An unknown value type, and a key that is not UTF-8.
    let mut t = table.clone();
    t[4 + 4] = b'?';
    assert_syntax(
        decode_method(&queue_declare_payload(&t)),
        (50, 10),
        "unknown field type",
    );
    let mut t = table.clone();
    t[4 + 1] = 0xFF;
    assert_syntax(
        decode_method(&queue_declare_payload(&t)),
        (50, 10),
        "non-UTF-8 key",
    );
    // An array whose length overruns its table.
    let bad_array = [0, 0, 0, 8, 1, b'a', b'A', 0, 0, 0, 9, b't'];
    assert_syntax(
        decode_method(&queue_declare_payload(&bad_array)),
        (50, 10),
        "array overrun",
    );
}

#[test]
fn nesting_is_accepted_up_to_max_depth_only() {
    // `MAX_DEPTH` tables in all (the arguments table and MAX_DEPTH - 1 inside it) decode...
    let ok = nested_tables(MAX_DEPTH);
    match decode_method(&queue_declare_payload(&ok)) {
        Ok(Method::Other(AMQPClass::Queue(queue::AMQPMethod::Declare(d)))) => {
            let mut depth = 1;
            let mut table = d.arguments;
            while let Some(AMQPValue::FieldTable(inner)) = table.inner().get("") {
                table = inner.clone();
                depth += 1;
            }
            assert_eq!(depth, MAX_DEPTH);
        }
        other => panic!("{MAX_DEPTH} nested tables: {other:?}"),
    }
    // ...one more does not.
    assert_syntax(
        decode_method(&queue_declare_payload(&nested_tables(MAX_DEPTH + 1))),
        (50, 10),
        "one table too deep",
    );
    assert_syntax(
        decode_method(&queue_declare_payload(&nested_arrays_in_table(
            MAX_DEPTH + 1,
        ))),
        (50, 10),
        "arrays too deep",
    );
}

const DEEP: usize = 100_000;

#[test]
fn deep_tables_in_queue_declare_are_rejected() {
    for table in [nested_tables(DEEP), nested_arrays_in_table(DEEP)] {
        let payload = queue_declare_payload(&table);
        let frame = single_frame(&raw_frame(1, 1, &payload, FRAME_END), BIG_FRAME_MAX);
        assert_syntax(
            decode_method(&frame.payload),
            (50, 10),
            "100k-deep arguments",
        );
    }
}

#[test]
fn deep_tables_in_connection_start_ok_are_rejected() {
    // The first frame a client sends, before any authentication.
    let ok = start_ok_payload(&nested_tables(3));
    assert!(matches!(decode_method(&ok), Ok(Method::Other(_))));
    for table in [nested_tables(DEEP), nested_arrays_in_table(DEEP)] {
        assert_syntax(
            decode_method(&start_ok_payload(&table)),
            (10, 11),
            "100k-deep client-properties",
        );
    }
}

#[test]
fn deep_tables_in_every_table_carrying_method_are_rejected() {
    let deep = nested_tables(DEEP);
    let mut with_tables = 0;
    for class in every_method() {
        let ids = (class.get_amqp_class_id(), class.get_amqp_method_id());
        let payload = method_payload(&class);
        // Swap the method's rich table for the deep one, wherever it sits.
        let rich = {
            let mut probe = BytesMut::new();
            encode_method(
                &mut probe,
                0,
                &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: rich_table(),
                    ..Default::default()
                })),
            );
            let start = FRAME_HEADER_LEN + 4;
            let len = u32::from_be_bytes(probe[start..start + 4].try_into().unwrap()) as usize;
            probe[start..start + 4 + len].to_vec()
        };
        let Some(at) = payload.windows(rich.len()).position(|w| w == rich) else {
            continue;
        };
        with_tables += 1;
        let mut evil = payload[..at].to_vec();
        evil.extend_from_slice(&deep);
        evil.extend_from_slice(&payload[at + rich.len()..]);
        assert_syntax(
            decode_method(&Bytes::from(evil)),
            ids,
            &format!("{class:?} with deep table"),
        );
    }
    // connection.start, start-ok; exchange.declare, bind, unbind; queue.declare, bind, unbind;
    // basic.consume.
    assert_eq!(with_tables, 9);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: content headers

fn flags_only(flags: u16) -> Vec<u8> {
    flags.to_be_bytes().to_vec()
}

#[test]
fn deep_headers_in_a_content_header_are_rejected() {
    for table in [nested_tables(DEEP), nested_arrays_in_table(DEEP)] {
        let mut props = flags_only(1 << 13); // headers
        props.extend_from_slice(&table);
        let payload = header_payload(60, 0, 10, &props);
        let frame = single_frame(&raw_frame(2, 1, &payload, FRAME_END), BIG_FRAME_MAX);
        assert_eq!(
            decode_content_header(&frame.payload),
            Err(ContentError::Properties)
        );

        // A header that skipped `decode_content_header` (built by hand, or read back from a store)
        // must not reach amq-protocol's recursive parser either.
        let forged = ContentHeader {
            class_id: 60,
            body_size: 10,
            properties: Bytes::from(props),
        };
        assert_eq!(forged.decode_properties(), Err(ContentError::Properties));
        assert_eq!(forged.delivery_mode(), None);
    }
}

#[test]
fn bad_content_headers_are_rejected() {
    let good = encode_properties(&all_properties());
    assert!(decode_content_header(&header_payload(60, 0, 3, &good)).is_ok());

    assert_eq!(
        decode_content_header(&header_payload(60, 1, 3, &good)),
        Err(ContentError::Weight(1))
    );
    for class_id in [0, 10, 50, 59, 61, 65535] {
        assert_eq!(
            decode_content_header(&header_payload(class_id, 0, 3, &good)),
            Err(ContentError::Class(class_id))
        );
    }
    // Trailing bytes after the property list.
    let mut trailing = good.to_vec();
    trailing.push(0);
    assert_eq!(
        decode_content_header(&header_payload(60, 0, 3, &trailing)),
        Err(ContentError::Properties)
    );
    assert_eq!(
        decode_content_header(&header_payload(60, 0, 3, &[0, 0, 1])),
        Err(ContentError::Properties)
    );
    // Bit 0 (a continuation flag word) and bit 1 (a 15th property) are not basic's.
    for flags in [0x0001u16, 0x0002, 0x0003, 0xFFFF, 0x9001] {
        let mut props = flags_only(flags);
        props.extend_from_slice(&[0; 64]);
        assert_eq!(
            decode_content_header(&header_payload(60, 0, 3, &props)),
            Err(ContentError::Properties),
            "flags {flags:#06x}"
        );
    }
    let mut cont = good.to_vec();
    cont[1] |= 1;
    assert_eq!(
        decode_content_header(&header_payload(60, 0, 3, &cont)),
        Err(ContentError::Properties)
    );
    // Too short to hold class, weight, size and flags.
    for len in 0..14 {
        let full = header_payload(60, 0, 3, &[0, 0]);
        assert_eq!(
            decode_content_header(&full.slice(..len)),
            Err(ContentError::Truncated)
        );
    }
    // Every truncation of a full property list.
    for cut in 2..good.len() {
        assert_eq!(
            decode_content_header(&header_payload(60, 0, 3, &good[..cut])),
            Err(ContentError::Properties),
            "properties cut at {cut}"
        );
    }
    // A property string that is not UTF-8.
    let mut bad_utf8 = flags_only(1 << 15);
    bad_utf8.extend_from_slice(&[2, 0xC3, 0x28]);
    assert_eq!(
        decode_content_header(&header_payload(60, 0, 3, &bad_utf8)),
        Err(ContentError::Properties)
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// What the broker's read loop does with a stream: cut frames, decode methods and headers.
/// Returns the number of bytes consumed as complete frames.
fn drive(stream: &[u8], frame_max: u32, chunk: usize) -> usize {
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parse_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => {
                    assert!(
                        frame.payload.len() <= (frame_max as usize).saturating_sub(FRAME_OVERHEAD)
                    );
                    assert_eq!(before - buf.len(), frame.payload.len() + FRAME_OVERHEAD);
                    consumed += frame.payload.len() + FRAME_OVERHEAD;
                    match frame.frame_type {
                        FrameType::Method => {
                            if let Ok(m) = decode_method(&frame.payload) {
                                let _ = m.ids();
                            }
                        }
                        FrameType::Header => {
                            if let Ok(h) = decode_content_header(&frame.payload) {
                                let _ = (h.delivery_mode(), h.priority(), h.decode_properties());
                            }
                        }
                        FrameType::Body | FrameType::Heartbeat => {}
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
                Err(_) => return consumed,
            }
        }
    }
    consumed
}

fn known_ids() -> Vec<(u16, u16)> {
    every_method()
        .iter()
        .map(|c| (c.get_amqp_class_id(), c.get_amqp_method_id()))
        .collect()
}

/// Frames that mostly look right: known types and method ids, random arguments, mostly good ends.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    let ids = known_ids();
    (
        prop_oneof![4 => prop::sample::select(vec![1u8, 2, 3, 8]), 1 => any::<u8>()],
        any::<u16>(),
        prop::sample::select(ids),
        prop::collection::vec(any::<u8>(), 0..64),
        prop_oneof![8 => Just(FRAME_END), 1 => any::<u8>()],
    )
        .prop_map(|(frame_type, channel, (class_id, method_id), args, end)| {
            let mut payload = Vec::new();
            match frame_type {
                1 => {
                    payload.extend_from_slice(&class_id.to_be_bytes());
                    payload.extend_from_slice(&method_id.to_be_bytes());
                }
                2 => payload.extend_from_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
                _ => {}
            }
            payload.extend_from_slice(&args);
            raw_frame(frame_type, channel, &payload, end)
        })
}

fn short_string() -> impl Strategy<Value = String> {
    "\\PC{0,60}".prop_filter("at most 255 bytes", |s| s.len() <= 255)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_parse_loop(
        stream in prop::collection::vec(any::<u8>(), 0..2048),
        frame_max in prop_oneof![0u32..16, 4096u32..70_000, Just(u32::MAX)],
        chunk in 1usize..300,
    ) {
        prop_assert!(drive(&stream, frame_max, chunk) <= stream.len());
    }

    #[test]
    fn plausible_frames_never_panic_the_parse_loop(
        frames in prop::collection::vec(plausible_frame(), 0..12),
        chunk in 1usize..200,
    ) {
        let stream = frames.concat();
        let consumed = drive(&stream, FRAME_MIN_SIZE, chunk);
        // Up to the first bad frame, everything is consumed.
        let mut expected = 0;
        for f in &frames {
            if ![1, 2, 3, 8].contains(&f[0]) || *f.last().unwrap() != FRAME_END {
                break;
            }
            expected += f.len();
        }
        prop_assert_eq!(consumed, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn publish_round_trips(
        exchange in short_string(),
        routing_key in short_string(),
        mandatory in any::<bool>(),
        immediate in any::<bool>(),
        channel in any::<u16>(),
    ) {
        let publish = Publish {
            exchange: ShortStr::new(Bytes::from(exchange.clone())).unwrap(),
            routing_key: ShortStr::new(Bytes::from(routing_key.clone())).unwrap(),
            mandatory,
            immediate,
        };
        let mut out = BytesMut::new();
        encode_publish(&mut out, channel, &publish);
        let generic = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: ss(&exchange),
            routing_key: ss(&routing_key),
            mandatory,
            immediate,
        }));
        prop_assert_eq!(&out, &encode_class(channel, &generic));
        let frame = single_frame(&out, FRAME_MIN_SIZE);
        prop_assert_eq!(frame.channel, channel);
        prop_assert_eq!(decode_method(&frame.payload), Ok(Method::Publish(publish)));
    }

    #[test]
    fn ack_round_trips(delivery_tag in any::<u64>(), multiple in any::<bool>(), channel in any::<u16>()) {
        let ack = Ack { delivery_tag, multiple };
        let mut out = BytesMut::new();
        encode_ack(&mut out, channel, &ack);
        let generic = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple }));
        prop_assert_eq!(&out, &encode_class(channel, &generic));
        let frame = single_frame(&out, FRAME_MIN_SIZE);
        prop_assert_eq!(decode_method(&frame.payload), Ok(Method::Ack(ack)));
    }

    #[test]
    fn deliver_round_trips(
        consumer_tag in short_string(),
        delivery_tag in any::<u64>(),
        redelivered in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
        channel in any::<u16>(),
    ) {
        let mut out = BytesMut::new();
        encode_deliver(&mut out, channel, &Deliver {
            consumer_tag: consumer_tag.as_bytes(),
            delivery_tag,
            redelivered,
            exchange: exchange.as_bytes(),
            routing_key: routing_key.as_bytes(),
        });
        let generic = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: ss(&consumer_tag),
            delivery_tag,
            redelivered,
            exchange: ss(&exchange),
            routing_key: ss(&routing_key),
        }));
        prop_assert_eq!(&out, &encode_class(channel, &generic));
        let frame = single_frame(&out, FRAME_MIN_SIZE);
        prop_assert_eq!(decode_method(&frame.payload), Ok(Method::Other(generic)));
    }

    #[test]
    fn bodies_split_and_reassemble(
        body in prop::collection::vec(any::<u8>(), 0..20_000),
        frame_max in prop_oneof![4096u32..4200, 4096u32..70_000],
        channel in any::<u16>(),
    ) {
        let mut wire = BytesMut::new();
        encode_body(&mut wire, channel, &body, frame_max);
        let frames = parse_all(&mut wire, frame_max);
        prop_assert!(wire.is_empty());
        let max_payload = frame_max as usize - FRAME_OVERHEAD;
        prop_assert_eq!(frames.len(), body.len().div_ceil(max_payload));
        let mut reassembled = Vec::with_capacity(body.len());
        for (i, f) in frames.iter().enumerate() {
            prop_assert_eq!((f.frame_type, f.channel), (FrameType::Body, channel));
            prop_assert!(!f.payload.is_empty() && f.payload.len() <= max_payload);
            if i + 1 < frames.len() {
                prop_assert_eq!(f.payload.len(), max_payload);
            }
            reassembled.extend_from_slice(&f.payload);
        }
        prop_assert_eq!(reassembled, body);
    }
}

#[test]
fn encode_frame_and_heartbeat_parse_back() {
    let mut out = BytesMut::new();
    encode_frame(&mut out, FrameType::Body, 42, b"abc");
    encode_heartbeat(&mut out);
    let frames = parse_all(&mut out, FRAME_MIN_SIZE);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        (
            frames[0].frame_type,
            frames[0].channel,
            &frames[0].payload[..]
        ),
        (FrameType::Body, 42, &b"abc"[..])
    );
    assert_eq!(
        (
            frames[1].frame_type,
            frames[1].channel,
            frames[1].payload.len()
        ),
        (FrameType::Heartbeat, 0, 0)
    );
}

#[test]
fn publish_checks_read_delivery_mode_priority_expiration_and_user_id_in_one_walk() {
    use warren_protocol::content::publish_checks;
    let none = encode_properties(&BasicProperties::default().with_message_id("m".into()));
    assert_eq!(publish_checks(&none), Default::default());
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_expiration("60000".into())
        .with_user_id("guest".into())
        .with_app_id("app".into());
    let raw = encode_properties(&props);
    let checks = publish_checks(&raw);
    assert_eq!(checks.delivery_mode, Some(2));
    assert_eq!(checks.priority, Some(7));
    assert_eq!(checks.expiration, Some(&b"60000"[..]));
    assert_eq!(checks.user_id, Some(&b"guest"[..]));
    assert_eq!(publish_checks(&[]), Default::default());
    assert_eq!(publish_checks(&raw[..raw.len() - 2]).delivery_mode, Some(2));
}

#[test]
fn without_expiration_takes_out_only_the_expiration() {
    use warren_protocol::content::without_expiration;
    let with = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_expiration("60000".into())
        .with_message_id("m1".into());
    let without = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_message_id("m1".into());
    let raw = encode_properties(&with);
    assert_eq!(
        without_expiration(&raw).as_deref(),
        Some(&encode_properties(&without)[..])
    );
    let plain = encode_properties(&without);
    assert_eq!(without_expiration(&plain).as_deref(), Some(&plain[..]));
    assert_eq!(without_expiration(&raw[..raw.len() - 1]), None);
    assert_eq!(without_expiration(&[]), None);
}

/// `with_long_header` (a stream delivery's `x-stream-offset`, no decoding) gives the same
/// properties as `with_header` (decode, insert, encode), with and without headers before.
#[test]
fn with_long_header_adds_what_with_header_adds() {
    let cases = [
        BasicProperties::default(),
        BasicProperties::default().with_content_type(ss("text/plain")),
        BasicProperties::default()
            .with_content_type(ss("text/plain"))
            .with_content_encoding(ss("gzip"))
            .with_delivery_mode(2)
            .with_message_id(ss("m")),
        all_properties(),
        BasicProperties::default().with_headers(FieldTable::default()),
    ];
    for props in cases {
        let raw = encode_properties(&props);
        let fast = with_long_header(&raw, "x-stream-offset", 1234).expect("adds");
        let slow =
            with_header(&raw, "x-stream-offset", AMQPValue::LongLongInt(1234)).expect("adds");
        let header = |raw: &[u8]| {
            decode_content_header(&header_payload(60, 0, 0, raw))
                .unwrap()
                .decode_properties()
                .unwrap()
        };
        assert_eq!(header(&fast), header(&slow), "{props:?}");
        assert_eq!(
            header(&fast)
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-stream-offset").cloned()),
            Some(AMQPValue::LongLongInt(1234))
        );
    }
    // Headers that may already hold the name: left to `with_header`, which replaces it.
    let mut headers = FieldTable::default();
    headers.insert("x-stream-offset".into(), AMQPValue::LongLongInt(1));
    let raw = encode_properties(&BasicProperties::default().with_headers(headers));
    assert_eq!(with_long_header(&raw, "x-stream-offset", 2), None);
    assert_eq!(with_long_header(&[0, 1], "x", 2), None, "malformed flags");
}

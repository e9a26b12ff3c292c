//! The per-message codec path, in frames per second.
//!
//! - `parse_publish/{16B,4KiB}`: cut a read buffer holding N publish sequences (method + header +
//!   body frame) with `parse_frame`, decoding each method (`decode_method`) and header
//!   (`decode_content_header`), as the broker's reader does.
//! - `encode_deliver/{16B,4KiB}`: write N deliver sequences (`encode_deliver` + `encode_content`) into
//!   a reused write buffer, as the broker's writer does.
//! - `decode_publish/{fast_path,amq_protocol}` and `decode_ack/...`: one method payload through the
//!   hand-written decoder vs through `amq-protocol`'s generic `spec::parse_class`, the measurement
//!   that justifies having the fast paths. `encode_deliver_method/...` does the same for encoding.
//!
//! Run: `cargo bench -p warren-protocol --bench hot_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use warren_protocol::content::{decode_content_header, encode_content, encode_properties};
use warren_protocol::frame::{parse_frame, FrameType};
use warren_protocol::method::{
    decode_method, encode_ack, encode_deliver, encode_method, encode_publish, Ack, Deliver,
    Publish, ShortStr,
};
use warren_protocol::spec::{self, basic, AMQPClass, BasicProperties};
use warren_protocol::types::ShortString;

/// RabbitMQ's default: a 4 KiB body fits one body frame.
const FRAME_MAX: u32 = 131_072;
/// Publish or deliver sequences per iteration.
const SEQUENCES: usize = 1_000;
/// method + header + one body frame.
const FRAMES_PER_SEQUENCE: usize = 3;

const BODY_SIZES: [(&str, usize); 2] = [("16B", 16), ("4KiB", 4096)];

/// What a typical client sets: content type and persistence.
fn properties() -> Bytes {
    encode_properties(
        &BasicProperties::default()
            .with_content_type(ShortString::from("application/octet-stream"))
            .with_delivery_mode(2),
    )
}

fn publish() -> Publish {
    Publish {
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("orders.eu.created"),
        mandatory: false,
        immediate: false,
    }
}

fn publish_stream(body_size: usize) -> Bytes {
    let props = properties();
    let body = vec![0x5Au8; body_size];
    let mut out = BytesMut::new();
    for _ in 0..SEQUENCES {
        encode_publish(&mut out, 1, &publish());
        encode_content(&mut out, 1, &props, &body, FRAME_MAX);
    }
    out.freeze()
}

fn parse_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_publish");
    group.throughput(Throughput::Elements(
        (SEQUENCES * FRAMES_PER_SEQUENCE) as u64,
    ));
    for (name, size) in BODY_SIZES {
        let stream = publish_stream(size);
        group.bench_with_input(BenchmarkId::from_parameter(name), &stream, |b, stream| {
            b.iter_batched(
                // The copy into a fresh read buffer is setup, not measured.
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    let mut frames = 0usize;
                    while let Some(frame) = parse_frame(&mut buf, FRAME_MAX).unwrap() {
                        match frame.frame_type {
                            FrameType::Method => {
                                black_box(decode_method(&frame.payload).unwrap());
                            }
                            FrameType::Header => {
                                black_box(decode_content_header(&frame.payload).unwrap());
                            }
                            _ => {
                                black_box(&frame.payload);
                            }
                        }
                        frames += 1;
                    }
                    assert_eq!(frames, SEQUENCES * FRAMES_PER_SEQUENCE);
                    buf
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn encode_deliveries(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_deliver");
    group.throughput(Throughput::Elements(
        (SEQUENCES * FRAMES_PER_SEQUENCE) as u64,
    ));
    let props = properties();
    for (name, size) in BODY_SIZES {
        let body = vec![0x5Au8; size];
        let mut out = BytesMut::with_capacity(SEQUENCES * (size + 200));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                out.clear();
                for tag in 1..=SEQUENCES as u64 {
                    let deliver = Deliver {
                        consumer_tag: b"amq.ctag-8Jx1uYk2bC9qTn0Zr4eW",
                        delivery_tag: tag,
                        redelivered: false,
                        exchange: b"amq.direct",
                        routing_key: b"orders.eu.created",
                    };
                    encode_deliver(&mut out, 1, &deliver);
                    encode_content(&mut out, 1, &props, body, FRAME_MAX);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn method_payload(wire: &BytesMut) -> Bytes {
    let mut buf = wire.clone();
    parse_frame(&mut buf, FRAME_MAX).unwrap().unwrap().payload
}

fn decode_fast_vs_generic(c: &mut Criterion) {
    let mut wire = BytesMut::new();
    encode_publish(&mut wire, 1, &publish());
    let publish_payload = method_payload(&wire);
    let mut wire = BytesMut::new();
    encode_ack(
        &mut wire,
        1,
        &Ack {
            delivery_tag: 123_456,
            multiple: false,
        },
    );
    let ack_payload = method_payload(&wire);

    for (group_name, payload) in [
        ("decode_publish", publish_payload),
        ("decode_ack", ack_payload),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("fast_path", |b| {
            b.iter(|| decode_method(black_box(&payload)).unwrap())
        });
        group.bench_function("amq_protocol", |b| {
            b.iter(|| spec::parse_class(black_box(&payload[..])).unwrap().1)
        });
        group.finish();
    }

    let mut group = c.benchmark_group("encode_deliver_method");
    group.throughput(Throughput::Elements(1));
    let (consumer_tag, exchange, routing_key) = (
        "amq.ctag-8Jx1uYk2bC9qTn0Zr4eW",
        "amq.direct",
        "orders.eu.created",
    );
    let deliver = Deliver {
        consumer_tag: consumer_tag.as_bytes(),
        delivery_tag: 42,
        redelivered: false,
        exchange: exchange.as_bytes(),
        routing_key: routing_key.as_bytes(),
    };
    let generic = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag: deliver.delivery_tag,
        redelivered: deliver.redelivered,
        exchange: exchange.into(),
        routing_key: routing_key.into(),
    }));
    let mut out = BytesMut::with_capacity(256);
    group.bench_function("fast_path", |b| {
        b.iter(|| {
            out.clear();
            encode_deliver(&mut out, 1, black_box(&deliver));
            out.len()
        })
    });
    group.bench_function("amq_protocol", |b| {
        b.iter(|| {
            out.clear();
            encode_method(&mut out, 1, black_box(&generic));
            out.len()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    parse_publish,
    encode_deliveries,
    decode_fast_vs_generic
);
criterion_main!(benches);

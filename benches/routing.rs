//! Criterion benchmarks of the broker's per-message functions that sit under the connection
//! layer: routing one publish through an exchange (`Vhost::route`), and a queue's enqueue and
//! take (`Queue::publish` + `Queue::get`). The codec's are in `protocol/benches/hot_path.rs`;
//! whole-broker figures come from `bench/compare.sh` and `bench/instructions.sh`.
//!
//!     cargo bench --bench routing

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren::broker::exchange::Destination;
use warren::broker::message::Message;
use warren::broker::queue::ChannelCredit;
use warren::broker::queue::{Queue, QueueOptions};
use warren::broker::vhost::{ExchangeDeclare, QueueDeclare, RouteScratch, Vhost};
use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

fn declare_exchange(vhost: &Vhost, name: &str, kind: &str) -> ShortStr {
    let name = ShortStr::copy_from_str(name);
    vhost
        .declare_exchange(ExchangeDeclare {
            name: name.clone(),
            kind: kind.to_owned(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        })
        .expect("exchange.declare");
    name
}

fn declare_queue(vhost: &Vhost, name: &str) -> ShortStr {
    let name = ShortStr::copy_from_str(name);
    vhost
        .declare_queue(
            QueueDeclare {
                name: name.clone(),
                server_named: false,
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
            1,
        )
        .expect("queue.declare");
    name
}

fn bind(vhost: &Vhost, exchange: &ShortStr, queue: &ShortStr, key: &str) {
    vhost
        .bind(
            exchange,
            Destination::Queue(queue.clone()),
            ShortStr::copy_from_str(key),
            &FieldTable::default(),
            1,
        )
        .expect("queue.bind");
}

fn routing(c: &mut Criterion) {
    let vhost = Vhost::new("/");
    let mut scratch = RouteScratch::default();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));

    let q = declare_queue(&vhost, "q-default");
    group.bench_function("default_exchange", |b| {
        b.iter(|| {
            vhost
                .route(b"", black_box(q.as_bytes()), &[0, 0], &mut scratch)
                .expect("route");
            scratch.queues.len()
        })
    });

    let fanout = declare_exchange(&vhost, "fan", "fanout");
    for i in 0..10 {
        let q = declare_queue(&vhost, &format!("q-fan-{i}"));
        bind(&vhost, &fanout, &q, "");
    }
    group.bench_function("fanout_10_queues", |b| {
        b.iter(|| {
            vhost
                .route(b"fan", black_box(b"x"), &[0, 0], &mut scratch)
                .expect("route");
            scratch.queues.len()
        })
    });

    // The 1,000 mixed bindings of compare.sh's scenario (e): perf.N.*, perf.#.N, *.x.N, N.#.
    let topic = declare_exchange(&vhost, "top", "topic");
    let queue = declare_queue(&vhost, "q-topic");
    let patterns = ["perf.{}.*", "perf.#.{}", "*.x.{}", "{}.#"];
    for i in 0..1000 {
        let key = patterns[i % patterns.len()].replace("{}", &i.to_string());
        bind(&vhost, &topic, &queue, &key);
    }
    group.bench_function("topic_1000_bindings", |b| {
        b.iter(|| {
            vhost
                .route(b"top", black_box(b"perf.4.x"), &[0, 0], &mut scratch)
                .expect("route");
            scratch.queues.len()
        })
    });
    group.finish();
}

fn queue(c: &mut Criterion) {
    let queue = Queue::new(
        ShortStr::from_static("bench"),
        QueueOptions {
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::default(),
            consumer_timeout: None,
        },
    );
    let message = Arc::new(Message::new(
        b"",
        b"bench",
        &[0, 0],
        Bytes::from_static(&[7; 16]),
    ));
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(1));
    let getter = Arc::new(ChannelCredit::default());
    group.bench_function("publish_then_get_16B", |b| {
        b.iter(|| {
            queue.publish(black_box(&message), Default::default());
            queue.get(true, &getter).map(|(entry, _)| entry.seq)
        })
    });
    group.bench_function("message_new_16B", |b| {
        let body = Bytes::from_static(&[7; 16]);
        b.iter(|| Message::new(b"", black_box(b"bench"), &[0, 0], body.clone()))
    });
    group.finish();
}

criterion_group!(benches, routing, queue);
criterion_main!(benches);

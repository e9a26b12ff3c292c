//! Stream queues (issue 21) with a real client (lapin), against the real broker: `x-queue-type:
//! stream` declared durable; consumers with a prefetch read from `x-stream-offset` (first, last,
//! next, an offset, a timestamp) without removing anything; each delivery carries its offset in
//! header `x-stream-offset`; acks move the credit, not the log; `x-stream-filter` filters on the
//! server; retention deletes whole old segments; the log survives a restart and `kill -9`.
//! RabbitMQ's refusals (basic.get, purge, no prefetch, automatic acks) with its reply codes.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use warren_process::{TempDir, WarrenProcess};

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut arguments = table(extra);
    arguments.insert("x-queue-type".into(), text("stream"));
    arguments
}

/// Declares a durable stream with a unique name.
async fn declare_stream(channel: &Channel, test: &str, extra: &[(&str, AMQPValue)]) -> String {
    let name = unique(test);
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(channel, &name, options, stream_args(extra)).await;
    name
}

/// Publishes `count` messages numbered from `from`, with confirms.
async fn publish_all(channel: &Channel, stream: &str, from: usize, count: usize) {
    for n in from..from + count {
        publish_confirmed(
            channel,
            "",
            stream,
            n.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
}

/// A consumer on its own channel with `prefetch`, reading from `offset` (none: the default).
async fn read_from(
    connection: &Connection,
    stream: &str,
    prefetch: u16,
    arguments: FieldTable,
) -> (Channel, Deliveries) {
    let channel = common::channel(connection).await;
    qos(&channel, prefetch).await;
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        ),
    )
    .await
    .expect("basic.consume");
    (channel, Deliveries::new(consumer))
}

fn offset_arg(value: AMQPValue) -> FieldTable {
    table(&[("x-stream-offset", value)])
}

fn offset_of(delivery: &lapin::message::Delivery) -> i64 {
    let headers = delivery.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-stream-offset: {other:?}"),
    }
}

/// Takes `count` deliveries, acking each; returns (offset, body) pairs.
async fn take_acked(
    channel: &Channel,
    deliveries: &mut Deliveries,
    count: usize,
) -> Vec<(i64, String)> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        let delivery = deliveries.next().await;
        got.push((offset_of(&delivery), body(&delivery)));
        ack(channel, delivery.delivery_tag).await;
    }
    got
}

fn numbered(range: std::ops::Range<usize>) -> Vec<(i64, String)> {
    range.map(|n| (n as i64, n.to_string())).collect()
}

#[tokio::test]
async fn consumers_read_from_first_each_on_their_own_and_nothing_is_removed() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(&channel, "stream-first", &[]).await;
    publish_all(&channel, &stream, 0, 20).await;

    let first = || offset_arg(text("first"));
    let (a, mut reader_a) = read_from(&connection, &stream, 5, first()).await;
    let (b, mut reader_b) = read_from(&connection, &stream, 5, first()).await;
    assert_eq!(take_acked(&a, &mut reader_a, 20).await, numbered(0..20));
    assert_eq!(take_acked(&b, &mut reader_b, 20).await, numbered(0..20));
    reader_a.expect_quiet().await;
    // Reading removed nothing: a third reader gets them all again.
    let (c, mut reader_c) = read_from(&connection, &stream, 50, first()).await;
    let again = reader_c.take(20).await;
    assert_eq!(again.len(), 20);
    let delivery = &again[7];
    assert_eq!(offset_of(delivery), 7);
    assert!(!delivery.redelivered);
    assert_eq!(delivery.exchange.as_str(), "");
    assert_eq!(delivery.routing_key.as_str(), stream);
    ack(&c, again[19].delivery_tag).await;
    assert_eq!(queue_counts(&channel, &stream).await, (20, 3));
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn the_prefetch_bounds_what_is_unacked_and_acks_move_the_window() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(&channel, "stream-credit", &[]).await;
    publish_all(&channel, &stream, 0, 10).await;
    let (reader, mut deliveries) =
        read_from(&connection, &stream, 2, offset_arg(text("first"))).await;
    let two = deliveries.take(2).await;
    deliveries.expect_quiet().await;
    // A multiple ack of both frees two more.
    within(
        "basic.ack",
        reader.basic_ack(two[1].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("ack");
    let next = deliveries.take(2).await;
    assert_eq!(
        next.iter().map(offset_of).collect::<Vec<_>>(),
        [2, 3],
        "the window moved on"
    );
    // A nack (or reject) gives the credit back too; the message is not redelivered.
    within(
        "basic.nack",
        reader.basic_nack(
            next[1].delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .expect("nack");
    let after = deliveries.take(2).await;
    assert_eq!(after.iter().map(offset_of).collect::<Vec<_>>(), [4, 5]);
    assert_channel_open(&reader).await;
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn next_last_an_offset_and_a_timestamp_choose_where_reading_starts() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(&channel, "stream-offsets", &[]).await;
    publish_all(&channel, &stream, 0, 5).await;
    let before_more = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // The timestamp is in whole seconds: the next ones are at or after it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    publish_all(&channel, &stream, 5, 3).await;

    let (c1, mut last) = read_from(&connection, &stream, 10, offset_arg(text("last"))).await;
    assert_eq!(take_acked(&c1, &mut last, 1).await, numbered(7..8));
    last.expect_quiet().await;

    let (c2, mut at) = read_from(&connection, &stream, 10, offset_arg(int(3))).await;
    assert_eq!(take_acked(&c2, &mut at, 5).await, numbered(3..8));

    let (c3, mut since) = read_from(
        &connection,
        &stream,
        10,
        offset_arg(AMQPValue::Timestamp(before_more + 1)),
    )
    .await;
    assert_eq!(take_acked(&c3, &mut since, 3).await, numbered(5..8));

    let (c4, mut next) = read_from(&connection, &stream, 10, FieldTable::default()).await;
    next.expect_quiet().await;
    publish_all(&channel, &stream, 8, 2).await;
    assert_eq!(take_acked(&c4, &mut next, 2).await, numbered(8..10));
    // An offset beyond the end waits for it.
    let (c5, mut ahead) = read_from(&connection, &stream, 10, offset_arg(int(11))).await;
    publish_all(&channel, &stream, 10, 2).await;
    assert_eq!(take_acked(&c5, &mut ahead, 1).await, numbered(11..12));
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn a_filter_delivers_only_the_values_asked_for() {
    if skip_if_external("x-stream-filter is RabbitMQ 3.13's; 3.10 delivers everything") {
        return;
    }
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(&channel, "stream-filter", &[]).await;
    for (n, value) in ["red", "blue", "", "red", "green", ""].iter().enumerate() {
        let mut properties = BasicProperties::default();
        if !value.is_empty() {
            properties = properties.with_headers(table(&[("x-stream-filter-value", text(value))]));
        }
        publish_confirmed(&channel, "", &stream, n.to_string().as_bytes(), properties).await;
    }
    let reds = table(&[
        ("x-stream-offset", text("first")),
        ("x-stream-filter", text("red")),
    ]);
    let (c1, mut red) = read_from(&connection, &stream, 10, reds).await;
    assert_eq!(
        take_acked(&c1, &mut red, 2).await,
        vec![(0, "0".into()), (3, "3".into())]
    );
    red.expect_quiet().await;
    let list = AMQPValue::FieldArray(FieldArray::from(vec![text("blue"), text("green")]));
    let some = table(&[
        ("x-stream-offset", text("first")),
        ("x-stream-filter", list),
        ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
    ]);
    let (c2, mut several) = read_from(&connection, &stream, 10, some).await;
    let got: Vec<i64> = take_acked(&c2, &mut several, 4)
        .await
        .iter()
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(got, [1, 2, 4, 5]);
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn retention_by_size_deletes_whole_old_segments() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(
        &channel,
        "stream-retention",
        &[
            ("x-max-length-bytes", int(3_000)),
            ("x-stream-max-segment-size-bytes", int(1_000)),
        ],
    )
    .await;
    let body = [b'x'; 100];
    for _ in 0..100 {
        publish_confirmed(&channel, "", &stream, &body, BasicProperties::default()).await;
    }
    let (reader, mut deliveries) =
        read_from(&connection, &stream, 200, offset_arg(text("first"))).await;
    let first = deliveries.next().await;
    let oldest = offset_of(&first);
    assert!(
        oldest > 50,
        "old segments were deleted: reading starts at {oldest}"
    );
    let rest = deliveries.take((99 - oldest) as usize).await;
    assert_eq!(rest.last().map(offset_of), Some(99), "the newest is kept");
    ack(&reader, first.delivery_tag).await;
    let (count, _) = queue_counts(&channel, &stream).await;
    assert!(count < 50 && count > 0, "{count} messages kept");
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn a_reader_far_behind_catches_up_while_a_writer_goes_on() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let stream = declare_stream(&channel, "stream-catch-up", &[]).await;
    // Pipelined publishes, then wait for the last confirm.
    let mut last = None;
    for n in 0..5_000usize {
        last = Some(
            publish_with(
                &channel,
                "",
                &stream,
                n.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await,
        );
    }
    within("confirms", last.expect("published"))
        .await
        .expect("confirmed");
    let (tail_channel, mut tail) =
        read_from(&connection, &stream, 100, FieldTable::default()).await;
    let (reader, mut behind) =
        read_from(&connection, &stream, 300, offset_arg(text("first"))).await;
    for n in 5_000..5_010usize {
        publish_confirmed(
            &channel,
            "",
            &stream,
            n.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(
        take_acked(&tail_channel, &mut tail, 10).await,
        numbered(5_000..5_010)
    );
    let mut expected = 0;
    while expected < 5_010 {
        let delivery = behind.next().await;
        assert_eq!(offset_of(&delivery), expected);
        assert_eq!(body(&delivery), expected.to_string());
        if expected % 100 == 99 || expected == 5_009 {
            within(
                "basic.ack",
                reader.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }),
            )
            .await
            .expect("ack");
        }
        expected += 1;
    }
    delete_queue(&channel, &stream).await;
}

#[tokio::test]
async fn declarations_and_methods_streams_refuse_get_rabbitmqs_codes() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let name = unique("stream-refusals");
    for (options, arguments, wanted) in [
        (
            QueueDeclareOptions::default(),
            stream_args(&[]),
            "invalid property 'non-durable'",
        ),
        (
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            stream_args(&[]),
            "invalid property 'auto-delete'",
        ),
        (
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            stream_args(&[("x-message-ttl", int(1000))]),
            "of queue type rabbit_stream_queue",
        ),
        (
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            stream_args(&[("x-max-age", text("10X"))]),
            "invalid_max_age",
        ),
    ] {
        let channel = common::channel(&connection).await;
        let result = within(
            "queue.declare",
            channel.queue_declare(name.as_str().into(), options, arguments),
        )
        .await;
        let reply = assert_reply(result, 406);
        assert!(reply.contains(wanted), "{reply}");
    }
    let stream = declare_stream(&channel, "stream-methods", &[("x-max-age", text("7D"))]).await;
    // Redeclared with other retention: inequivalent.
    let other = common::channel(&connection).await;
    let result = within(
        "queue.declare",
        other.queue_declare(
            stream.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            stream_args(&[("x-max-age", text("1D"))]),
        ),
    )
    .await;
    assert!(assert_reply(result, 406).contains("inequivalent arg 'x-max-age'"));
    // A consumer without a prefetch: 406 on the channel.
    let unbounded = common::channel(&connection).await;
    let text = expect_channel_closed(
        &connection,
        &unbounded,
        unbounded.basic_consume(
            stream.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
        406,
    )
    .await;
    assert!(
        text.contains("consumer prefetch count is not set"),
        "{text}"
    );
    // basic.get: 540 on the connection.
    let getter = connect(&broker).await;
    let get_channel = common::channel(&getter).await;
    let text = expect_connection_closed(
        &getter,
        get_channel.basic_get(stream.as_str().into(), BasicGetOptions::default()),
        540,
    )
    .await;
    assert!(
        text.contains("basic.get not supported by stream queues"),
        "{text}"
    );
    // queue.purge: 540.
    let purger = connect(&broker).await;
    let purge_channel = common::channel(&purger).await;
    let text = expect_connection_closed(
        &purger,
        purge_channel.queue_purge(stream.as_str().into(), QueuePurgeOptions::default()),
        540,
    )
    .await;
    assert!(
        text.contains("queue.purge not supported by stream queues"),
        "{text}"
    );
    // Automatic acks: 540.
    let auto = connect(&broker).await;
    let auto_channel = common::channel(&auto).await;
    qos(&auto_channel, 10).await;
    let text = expect_connection_closed(
        &auto,
        auto_channel.basic_consume(
            stream.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
        540,
    )
    .await;
    assert!(
        text.contains("automatic acknowledgement not supported"),
        "{text}"
    );
    delete_queue(&channel, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_a_restart_and_kill_9_with_its_offsets() {
    const STREAM: &str = "stream-durable";
    let dir = TempDir::new("stream-restart");
    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = confirm_channel(&connection).await;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(&channel, STREAM, options, stream_args(&[])).await;
    publish_all(&channel, STREAM, 0, 50).await;
    let _ = connection.close(200, "bye".into()).await;
    assert!(warren.stop().await, "clean stop");

    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = confirm_channel(&connection).await;
    publish_all(&channel, STREAM, 50, 50).await;
    drop(warren); // SIGKILL after 50 more confirmed

    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = confirm_channel(&connection).await;
    assert_eq!(queue_counts(&channel, STREAM).await.0, 100);
    publish_all(&channel, STREAM, 100, 1).await;
    let (reader, mut deliveries) =
        read_from(&connection, STREAM, 200, offset_arg(text("first"))).await;
    assert_eq!(
        take_acked(&reader, &mut deliveries, 101).await,
        numbered(0..101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_toml_topology_declares_a_stream() {
    if skip_if_external("starts the real binary with a configuration file") {
        return;
    }
    let data = TempDir::new("stream-toml");
    let config = data.path().join("streams.toml");
    std::fs::write(
        &config,
        r#"
[[queues]]
name = "events"
durable = true
arguments = { "x-queue-type" = "stream", "x-max-age" = "7D" }
"#,
    )
    .expect("write the file");
    let warren = WarrenProcess::start(&config, &data.path().join("data"));
    let connection = connect_uri(&format!("amqp://guest:guest@{}/%2f", warren.addr)).await;
    let channel = confirm_channel(&connection).await;
    publish_all(&channel, "events", 0, 3).await;
    let (reader, mut deliveries) =
        read_from(&connection, "events", 10, offset_arg(text("first"))).await;
    assert_eq!(
        take_acked(&reader, &mut deliveries, 3).await,
        numbered(0..3)
    );
    // It is a stream: basic.get is refused.
    let getter = common::channel(&connection).await;
    let text = expect_connection_closed(
        &connection,
        getter.basic_get("events".into(), BasicGetOptions::default()),
        540,
    )
    .await;
    assert!(text.contains("stream"), "{text}");
}

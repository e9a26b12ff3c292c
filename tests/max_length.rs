//! `x-max-length` and `x-max-length-bytes` (body bytes) with a real client (lapin): `drop-head`
//! (the default) drops the oldest ready messages to make room, also when requeued messages push
//! the queue past its limit; `reject-publish` refuses the new message, nacked to a confirm-mode
//! publisher while the queue is full and acked again once it has room. Only ready messages count.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

async fn limited_queue(channel: &Channel, test: &str, max: i64, overflow: Option<&str>) -> String {
    let name = unique(test);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
    if let Some(overflow) = overflow {
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(overflow)),
        );
    }
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(channel, &name, options, arguments).await;
    name
}

/// Publishes `body` to `queue` with confirms on; true for an ack, false for a nack.
async fn publish_acked(channel: &Channel, queue: &str, body: &[u8]) -> bool {
    let confirmation = publish_with(channel, "", queue, body, BasicProperties::default())
        .await
        .await
        .expect("confirm");
    match confirmation {
        Confirmation::Ack(_) => true,
        Confirmation::Nack(_) => false,
        other => panic!("confirms are on: {other:?}"),
    }
}

#[tokio::test]
async fn drop_head_keeps_the_newest_messages() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = limited_queue(&channel, "drop_head", 3, None).await;
    for i in 0..5 {
        assert!(publish_acked(&channel, &queue, i.to_string().as_bytes()).await);
    }
    assert_eq!(queue_counts(&channel, &queue).await.0, 3);
    assert_eq!(get_all(&channel, &queue).await, ["2", "3", "4"]);
    // Explicit drop-head is the same.
    let queue = limited_queue(&channel, "drop_head_explicit", 1, Some("drop-head")).await;
    for i in 0..3 {
        assert!(publish_acked(&channel, &queue, i.to_string().as_bytes()).await);
    }
    assert_eq!(get_all(&channel, &queue).await, ["2"]);
}

#[tokio::test]
async fn reject_publish_nacks_while_full_and_acks_once_there_is_room() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = limited_queue(&channel, "reject_publish", 3, Some("reject-publish")).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(publish_acked(&channel, &queue, i.to_string().as_bytes()).await);
    }
    assert_eq!(acked, [true, true, true, false, false]);
    assert_eq!(queue_counts(&channel, &queue).await.0, 3);
    // Room for one: the next publish is acked again.
    within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("a message");
    assert!(publish_acked(&channel, &queue, b"5").await);
    assert!(!publish_acked(&channel, &queue, b"6").await);
    assert_eq!(get_all(&channel, &queue).await, ["1", "2", "5"]);
}

async fn get_unacked(channel: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    within(
        "basic.get",
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .unwrap_or_else(|| panic!("a message in {queue}"))
}

/// The reason of each x-death entry of a dead-lettered message, with its queue and count.
fn death_reasons(message: &lapin::message::BasicGetMessage) -> Vec<(String, String, i64)> {
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers");
    let Some(AMQPValue::FieldArray(array)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    let string = |value: Option<&AMQPValue>| match value {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("expected a string, got {other:?}"),
    };
    array
        .as_slice()
        .iter()
        .map(|entry| {
            let AMQPValue::FieldTable(entry) = entry else {
                panic!("x-death entry {entry:?}");
            };
            let entry = entry.inner();
            let count = match entry.get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                other => panic!("count {other:?}"),
            };
            (
                string(entry.get("queue")),
                string(entry.get("reason")),
                count,
            )
        })
        .collect()
}

#[tokio::test]
async fn drop_head_by_bytes_counts_body_bytes_and_keeps_the_newest() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(
        &channel,
        "drop_head_bytes",
        &[("x-max-length-bytes", AMQPValue::LongLongInt(10))],
    )
    .await;
    for body in ["aaaa", "bbbb", "cccc"] {
        assert!(publish_acked(&channel, &queue, body.as_bytes()).await);
    }
    // 12 bytes: the head goes.
    assert_eq!(queue_counts(&channel, &queue).await.0, 2);
    // Exactly 10 bytes fit.
    assert!(publish_acked(&channel, &queue, b"dd").await);
    assert_eq!(queue_counts(&channel, &queue).await.0, 3);
    assert!(publish_acked(&channel, &queue, b"e").await);
    assert_eq!(get_all(&channel, &queue).await, ["cccc", "dd", "e"]);
    // A message larger than the limit pushes everything out, itself included.
    assert!(publish_acked(&channel, &queue, b"kk").await);
    assert!(publish_acked(&channel, &queue, b"0123456789X").await);
    assert_eq!(queue_counts(&channel, &queue).await.0, 0);
    // Empty bodies cost nothing.
    for _ in 0..3 {
        assert!(publish_acked(&channel, &queue, b"").await);
    }
    assert!(publish_acked(&channel, &queue, b"0123456789").await);
    assert_eq!(queue_counts(&channel, &queue).await.0, 4);
}

#[tokio::test]
async fn reject_publish_by_bytes_nacks_while_full_and_acks_once_drained() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(
        &channel,
        "reject_publish_bytes",
        &[
            ("x-max-length-bytes", AMQPValue::LongLongInt(10)),
            ("x-overflow", text("reject-publish")),
        ],
    )
    .await;
    let mut acked = Vec::new();
    for body in ["aaaa", "bbbb", "ccc", "cc", "d"] {
        acked.push(publish_acked(&channel, &queue, body.as_bytes()).await);
    }
    // "ccc" would make 11 bytes; "cc" makes exactly 10; then nothing fits.
    assert_eq!(acked, [true, true, false, true, false]);
    assert_eq!(queue_counts(&channel, &queue).await.0, 3);
    // Drained by 4 bytes: a 4-byte message fits again, a 5th byte does not.
    let head = get_unacked(&channel, &queue).await;
    assert_eq!(head.delivery.data, b"aaaa");
    ack(&channel, head.delivery.delivery_tag).await;
    assert!(publish_acked(&channel, &queue, b"eeee").await);
    assert!(!publish_acked(&channel, &queue, b"f").await);
    assert_eq!(get_all(&channel, &queue).await, ["bbbb", "cc", "eeee"]);
}

#[tokio::test]
async fn unacked_messages_do_not_count_towards_the_byte_limit() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(
        &channel,
        "reject_publish_bytes_unacked",
        &[
            ("x-max-length-bytes", AMQPValue::LongLongInt(10)),
            ("x-overflow", text("reject-publish")),
        ],
    )
    .await;
    assert!(publish_acked(&channel, &queue, b"aaaa").await);
    assert!(publish_acked(&channel, &queue, b"bbbb").await);
    let head = get_unacked(&channel, &queue).await;
    // 4 bytes ready, 4 unacked: 6 more fit.
    assert!(publish_acked(&channel, &queue, b"cccccc").await);
    assert!(!publish_acked(&channel, &queue, b"d").await);
    ack(&channel, head.delivery.delivery_tag).await;
    assert_eq!(get_all(&channel, &queue).await, ["bbbb", "cccccc"]);
}

#[tokio::test]
async fn a_requeue_past_the_limit_trims_the_queue_from_the_head() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = queue_with(&channel, "trim_dlq", &[]).await;
    let queue = queue_with(
        &channel,
        "trim_after_requeue",
        &[
            ("x-max-length", AMQPValue::LongLongInt(2)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&dlq)),
        ],
    )
    .await;
    assert!(publish_acked(&channel, &queue, b"1").await);
    assert!(publish_acked(&channel, &queue, b"2").await);
    let one = get_unacked(&channel, &queue).await;
    let two = get_unacked(&channel, &queue).await;
    assert_eq!(
        [&one.delivery.data[..], &two.delivery.data[..]],
        [b"1", b"2"]
    );
    // Only ready messages count: two more fit beside the two unacked ones.
    assert!(publish_acked(&channel, &queue, b"3").await);
    assert!(publish_acked(&channel, &queue, b"4").await);
    assert_eq!(queue_counts(&channel, &queue).await.0, 2);
    assert_eq!(queue_counts(&channel, &dlq).await.0, 0);
    // Back in front of 3 and 4, the requeued messages make 4 ready: the head goes down to 2.
    within(
        "basic.nack",
        channel.basic_nack(
            two.delivery.delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .expect("basic.nack");
    wait_for_ready(&channel, &dlq, 2).await;
    assert_eq!(queue_counts(&channel, &queue).await.0, 2);
    let first = get_unacked(&channel, &dlq).await;
    let second = get_unacked(&channel, &dlq).await;
    assert_eq!(
        [&first.delivery.data[..], &second.delivery.data[..]],
        [b"1", b"2"]
    );
    assert_eq!(death_reasons(&first), [(queue.clone(), "maxlen".into(), 1)]);
    ack(&channel, second.delivery.delivery_tag).await;
    ack(&channel, first.delivery.delivery_tag).await;
    assert_eq!(get_all(&channel, &queue).await, ["3", "4"]);
}

#[tokio::test]
async fn a_queue_that_dead_letters_what_it_pushes_out_to_itself_drops_it() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let fanout = declare_exchange(&channel, "maxlen_cycle", ExchangeKind::Fanout).await;
    let observer = queue_with(&channel, "maxlen_cycle_observer", &[]).await;
    bind_queue(&channel, &observer, &fanout, "").await;
    let queue = queue_with(
        &channel,
        "maxlen_cycle",
        &[
            ("x-max-length", AMQPValue::LongLongInt(1)),
            ("x-dead-letter-exchange", text(&fanout)),
        ],
    )
    .await;
    bind_queue(&channel, &queue, &fanout, "").await;
    assert!(publish_acked(&channel, &queue, b"a").await);
    assert!(publish_acked(&channel, &queue, b"b").await);
    wait_for_ready(&channel, &observer, 1).await;
    // Had "a" come back, it would have pushed "b" out in turn (and so on).
    tokio::time::sleep(QUIET).await;
    let seen = get_unacked(&channel, &observer).await;
    assert_eq!(seen.delivery.data, b"a");
    assert_eq!(death_reasons(&seen), [(queue.clone(), "maxlen".into(), 1)]);
    ack(&channel, seen.delivery.delivery_tag).await;
    assert_eq!(get_all(&channel, &observer).await, Vec::<String>::new());
    assert_eq!(get_all(&channel, &queue).await, ["b"]);
    delete_exchange(&channel, &fanout).await;
}

#[tokio::test]
async fn max_length_bytes_that_is_not_an_integer_is_406_naming_the_argument() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let queue = unique("bytes_string");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length-bytes".into(), text("1000"));
    let reply = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        ),
        406,
    )
    .await;
    assert_eq!(
        reply,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-max-length-bytes' for queue '{queue}' in vhost \
             '/': \"expected integer, got longstr\""
        )
    );
}

#[tokio::test]
async fn a_byte_limit_holds_for_a_backlog_paged_out_to_disk() {
    if skip_if_external("the memory window is Warren's") {
        return;
    }
    // Queues keep 16 KiB of ready messages in memory; the rest is read back from disk.
    let broker = Broker::start_with(warren::ServerOptions {
        queue_memory_window: 16 * 1024,
        ..warren::ServerOptions::default()
    })
    .await;
    let (_connection, channel) = open_confirming(&broker).await;
    let kib = |n: usize| {
        let mut body = n.to_string().into_bytes();
        body.resize(1024, b'.');
        body
    };
    for durable in [false, true] {
        let dlq = queue_with(&channel, "paged_bytes_dlq", &[]).await;
        let queue = unique("paged_bytes");
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(50 * 1024),
        );
        arguments.insert("x-dead-letter-exchange".into(), text(""));
        arguments.insert("x-dead-letter-routing-key".into(), text(&dlq));
        let options = QueueDeclareOptions {
            durable,
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        declare_queue_named(&channel, &queue, options, arguments).await;
        let mut confirms = Vec::new();
        for n in 0..200 {
            let properties = BasicProperties::default().with_delivery_mode(2);
            confirms.push(publish_with(&channel, "", &queue, &kib(n), properties).await);
        }
        for confirm in confirms {
            assert!(within("confirm", confirm).await.expect("confirm").is_ack());
        }
        // The newest 50 KiB stay; the 150 pushed out are dead-lettered whole, in order.
        assert_eq!(
            queue_counts(&channel, &queue).await.0,
            50,
            "durable: {durable}"
        );
        wait_for_ready(&channel, &dlq, 150).await;
        let kept: Vec<Vec<u8>> = (150..200).map(kib).collect();
        let got = get_all(&channel, &queue).await;
        assert_eq!(
            got.iter()
                .map(|b| b.as_bytes().to_vec())
                .collect::<Vec<_>>(),
            kept
        );
        for n in 0..150 {
            let dead = get_unacked(&channel, &dlq).await;
            assert_eq!(dead.delivery.data, kib(n), "durable: {durable}");
            assert_eq!(death_reasons(&dead), [(queue.clone(), "maxlen".into(), 1)]);
            ack(&channel, dead.delivery.delivery_tag).await;
        }
        // Room again for exactly 50 KiB.
        for n in 200..251 {
            assert!(publish_acked(&channel, &queue, &kib(n)).await);
        }
        assert_eq!(queue_counts(&channel, &queue).await.0, 50);
        wait_for_ready(&channel, &dlq, 1).await;
    }
}

//! Retry with backoff (issue 20): a queue declared with `x-retry-delays` holds a delivery
//! rejected or nacked with `requeue=false` for the next delay, then puts it back at the end of
//! the same queue with header `x-retry-count`; after the last delay the next reject
//! dead-letters it (reason `rejected`) as a queue without the argument would. With a real
//! client (lapin), against the real broker.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use warren_process::{TempDir, WarrenProcess};

fn delays(ms: &[i64]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        ms.iter().map(|&n| int(n)).collect::<Vec<_>>(),
    ))
}

fn retry_count(delivery: &lapin::message::Delivery) -> Option<i128> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-retry-count")? {
        AMQPValue::LongLongInt(n) => Some(i128::from(*n)),
        AMQPValue::LongInt(n) => Some(i128::from(*n)),
        other => panic!("x-retry-count of an unexpected type: {other:?}"),
    }
}

async fn reject(delivery: &lapin::message::Delivery) {
    within(
        "basic.reject",
        delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("basic.reject");
}

#[tokio::test]
async fn a_rejected_message_comes_back_after_each_delay_then_is_dead_lettered() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let dlx = declare_exchange(&channel, "retry-dlx", ExchangeKind::Fanout).await;
    let dead = queue_with(&channel, "retry-dead", &[]).await;
    bind_queue(&channel, &dead, &dlx, "").await;
    let queue = queue_with(
        &channel,
        "retry",
        &[
            ("x-retry-delays", delays(&[200, 500])),
            ("x-dead-letter-exchange", text(&dlx)),
        ],
    )
    .await;
    publish(&channel, "", &queue, b"job").await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;

    let first = deliveries.next().await;
    assert_eq!(retry_count(&first), None, "a first delivery has no count");
    let mut rejected = Instant::now();
    reject(&first).await;
    for (n, delay) in [(1, 200), (2, 500)] {
        let again = deliveries.next().await;
        let waited = rejected.elapsed();
        assert!(
            waited >= Duration::from_millis(delay),
            "retry {n} came after {waited:?}, before its {delay} ms"
        );
        assert!(
            waited < Duration::from_secs(3),
            "retry {n} after {waited:?}"
        );
        assert_eq!(body(&again), "job");
        assert_eq!(retry_count(&again), Some(n));
        assert!(!again.redelivered, "a retry is a new delivery");
        assert_eq!(
            again.exchange.as_str(),
            "",
            "back through the default exchange"
        );
        assert_eq!(again.routing_key.as_str(), queue);
        rejected = Instant::now();
        reject(&again).await;
    }
    // The delays are used up: dead-lettered at once, with its history.
    wait_for_ready(&channel, &dead, 1).await;
    let got = within(
        "basic.get",
        channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("the dead-lettered message");
    assert_eq!(String::from_utf8_lossy(&got.delivery.data), "job");
    let headers = got.delivery.properties.headers().clone().expect("headers");
    assert!(matches!(
        headers.inner().get("x-retry-count"),
        Some(AMQPValue::LongLongInt(2))
    ));
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("x-death missing: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death empty");
    };
    assert!(matches!(
        death.inner().get("reason"),
        Some(AMQPValue::LongString(reason)) if reason.to_string() == "rejected"
    ));
    assert_eq!(queue_counts(&channel, &queue).await.0, 0);
}

#[tokio::test]
async fn nack_without_requeue_retries_and_requeue_true_does_not_count() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = queue_with(
        &channel,
        "retry-nack",
        &[("x-retry-delays", delays(&[100]))],
    )
    .await;
    publish(&channel, "", &queue, b"n").await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    // requeue=true is an ordinary requeue: at once, redelivered, no count.
    within(
        "basic.nack",
        first.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .expect("basic.nack");
    let requeued = deliveries.next().await;
    assert!(requeued.redelivered);
    assert_eq!(retry_count(&requeued), None);
    within(
        "basic.nack",
        requeued.nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        }),
    )
    .await
    .expect("basic.nack");
    let retried = deliveries.next().await;
    assert_eq!(retry_count(&retried), Some(1));
    // No delay left and no dead-letter exchange: dropped.
    reject(&retried).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
}

#[tokio::test]
async fn invalid_retry_delays_are_refused_with_406() {
    let broker = Broker::start().await;
    let cases: [(AMQPValue, &str); 4] = [
        (int(1000), "expected an array of delays"),
        (delays(&[]), "expected 1 to 64 delays, got 0"),
        (delays(&[100, -1]), "value_negative"),
        (
            AMQPValue::FieldArray(FieldArray::from(vec![text("1s")])),
            "expected integer",
        ),
    ];
    for (value, expected) in cases {
        let connection: Connection = connect(&broker).await;
        let channel: Channel = common::channel(&connection).await;
        let mut arguments = FieldTable::default();
        arguments.insert("x-retry-delays".into(), value);
        let declare = channel.queue_declare(
            unique("retry-bad").as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        );
        let reply = expect_channel_closed(&connection, &channel, declare, 406).await;
        assert!(
            reply.contains("x-retry-delays") && reply.contains(expected),
            "{reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_message_held_for_retry_survives_a_restart() {
    const QUEUE: &str = "retry-durable";
    let dir = TempDir::new("retry-restart");
    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = FieldTable::default();
    arguments.insert("x-retry-delays".into(), delays(&[2_000]));
    declare_queue_named(&channel, QUEUE, options, arguments).await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    publish_with(&channel, "", QUEUE, b"kept", persistent).await;
    let mut deliveries = consume(&channel, QUEUE, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    reject(&first).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue_counts(&channel, QUEUE).await.0, 0, "held, not queued");
    let _ = connection.close(200, "bye".into()).await;
    assert!(warren.stop().await, "clean stop");

    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    let mut deliveries = consume(&channel, QUEUE, BasicConsumeOptions::default()).await;
    let back = deliveries.next().await;
    assert_eq!(body(&back), "kept");
    assert_eq!(retry_count(&back), Some(1));
    assert_eq!(back.properties.delivery_mode(), &Some(2));
}

#[tokio::test]
async fn a_retry_is_not_dropped_by_the_queues_de_duplication_window() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = queue_with(
        &channel,
        "retry-dedup",
        &[
            ("x-retry-delays", delays(&[100])),
            ("x-message-deduplication", AMQPValue::Boolean(true)),
            ("x-cache-size", int(100)),
        ],
    )
    .await;
    let with_id = || BasicProperties::default().with_message_id("once".into());
    publish_with(&channel, "", &queue, b"first", with_id()).await;
    publish_with(&channel, "", &queue, b"resent", with_id()).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    assert_eq!(body(&first), "first");
    reject(&first).await;
    let retried = deliveries.next().await;
    assert_eq!(
        body(&retried),
        "first",
        "the resend was a duplicate; the retry is not"
    );
    assert_eq!(retry_count(&retried), Some(1));
}

#[tokio::test]
async fn a_delivery_that_times_out_unacked_is_retried_and_its_late_ack_is_a_no_op() {
    // Warren's default timeout action (redeliver) keeps the channel open.
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let dlx = declare_exchange(&channel, "retry-timeout-dlx", ExchangeKind::Fanout).await;
    let dead = queue_with(&channel, "retry-timeout-dead", &[]).await;
    bind_queue(&channel, &dead, &dlx, "").await;
    let queue = queue_with(
        &channel,
        "retry-timeout",
        &[
            ("x-retry-delays", delays(&[300])),
            ("x-consumer-timeout", int(200)),
            ("x-dead-letter-exchange", text(&dlx)),
        ],
    )
    .await;
    let worker = common::channel(&connection).await;
    let mut deliveries = consume(&worker, &queue, BasicConsumeOptions::default()).await;
    let published = Instant::now();
    publish(&channel, "", &queue, b"slow job").await;
    let first = deliveries.next().await;
    assert_eq!(retry_count(&first), None);

    // Not acked: after 200 ms it is rejected, held 300 ms, and comes back to the same queue
    // (and so to the same consumer: it is a new delivery, not a redelivery of the held one).
    let again = deliveries.next().await;
    let waited = published.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "came back after {waited:?}, before timeout + delay"
    );
    assert_eq!(body(&again), "slow job");
    assert_eq!(retry_count(&again), Some(1));
    assert!(!again.redelivered, "a retry is a new delivery");

    // The late ack of the timed-out delivery neither fails nor settles the retry.
    ack(&worker, first.delivery_tag).await;
    assert_channel_open(&worker).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));

    // The delays are used up: the next timeout dead-letters it (reason rejected).
    wait_for_ready(&channel, &dead, 1).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    let got = within(
        "basic.get",
        channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("the dead-lettered message");
    let headers = got.delivery.properties.headers().clone().expect("headers");
    assert!(matches!(
        headers.inner().get("x-first-death-reason"),
        Some(AMQPValue::LongString(reason)) if reason.to_string() == "rejected"
    ));
    ack(&worker, again.delivery_tag).await;
    assert_channel_open(&worker).await;
    deliveries.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_persistent_messages_survive_kill_9_during_their_retry() {
    const QUEUE: &str = "retry-kill";
    const COUNT: usize = 500;
    let dir = TempDir::new("retry-kill");
    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = FieldTable::default();
    arguments.insert("x-retry-delays".into(), delays(&[1_000]));
    declare_queue_named(&channel, QUEUE, options, arguments).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for n in 0..COUNT {
        let body = n.to_string();
        let confirm = channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                persistent.clone(),
            )
            .await
            .expect("basic.publish");
        if n + 1 == COUNT {
            within("the confirms", confirm).await.expect("confirmed");
        }
    }
    let mut deliveries = consume(&channel, QUEUE, BasicConsumeOptions::default()).await;
    for delivery in deliveries.take(COUNT).await {
        reject(&delivery).await;
    }
    // A reply on the same channel: every reject before it has been handled.
    queue_counts(&channel, QUEUE).await;
    drop(warren); // SIGKILL, as the held copies and the originals' settles are being synced

    let warren = WarrenProcess::start_with_management(dir.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    let mut deliveries = consume(&channel, QUEUE, BasicConsumeOptions::default()).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < COUNT {
        let delivery = deliveries.next().await;
        seen.insert(body(&delivery));
        within("basic.ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("basic.ack");
    }
    assert_eq!(seen.len(), COUNT, "every message, in the queue or held");
}

//! Priority queues (`x-max-priority`) with a real client (lapin): messages are delivered highest
//! priority first and FIFO within a priority; a priority above the queue's maximum counts as the
//! maximum, a message without one as 0; a requeued message goes back to the front of its own
//! priority; high-priority messages overtake a backlog of low-priority ones that a slow consumer
//! works through; a queue without `x-max-priority` ignores priorities.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};

async fn priority_queue(channel: &Channel, test: &str, max: i64) -> String {
    queue_with(channel, test, &[("x-max-priority", int(max))]).await
}

fn with_priority(priority: Option<u8>) -> BasicProperties {
    match priority {
        Some(priority) => BasicProperties::default().with_priority(priority),
        None => BasicProperties::default(),
    }
}

/// Publishes through the default exchange on a confirm-mode channel and waits for the ack.
async fn put(channel: &Channel, queue: &str, body: &str, priority: Option<u8>) {
    publish_confirmed(channel, "", queue, body.as_bytes(), with_priority(priority)).await;
}

/// Priorities in a mixed order, with repeats, some above the maximum of 5 and some unset.
const MIXED: [Option<u8>; 10] = [
    Some(3),
    None,
    Some(9),
    Some(0),
    Some(5),
    Some(1),
    Some(7),
    Some(2),
    Some(5),
    Some(4),
];

/// `count` messages "i:p" with the priorities of [`MIXED`] in turn, and the order a queue with a
/// maximum priority of 5 delivers them in: highest first, FIFO within a priority, above 5 as 5,
/// unset as 0.
fn mixed_backlog(count: usize) -> (Vec<(String, Option<u8>)>, Vec<String>) {
    let messages: Vec<(String, Option<u8>)> = (0..count)
        .map(|i| {
            let priority = MIXED[i % MIXED.len()];
            (format!("{i}:{priority:?}"), priority)
        })
        .collect();
    let mut expected: Vec<(u8, usize, String)> = messages
        .iter()
        .enumerate()
        .map(|(i, (body, priority))| (priority.unwrap_or(0).min(5), i, body.clone()))
        .collect();
    expected.sort_by_key(|(priority, i, _)| (std::cmp::Reverse(*priority), *i));
    (
        messages,
        expected.into_iter().map(|(_, _, body)| body).collect(),
    )
}

#[tokio::test]
async fn a_backlog_is_delivered_highest_priority_first_and_fifo_within_a_priority() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let (messages, expected) = mixed_backlog(30);
    // Fetched with basic.get.
    let fetched = priority_queue(&channel, "backlog_get", 5).await;
    for (body, priority) in &messages {
        put(&channel, &fetched, body, *priority).await;
    }
    assert_eq!(queue_counts(&channel, &fetched).await.0, 30);
    assert_eq!(get_all(&channel, &fetched).await, expected);
    // Pushed to a consumer that starts after the backlog built up.
    let consumed = priority_queue(&channel, "backlog_consume", 5).await;
    for (body, priority) in &messages {
        put(&channel, &consumed, body, *priority).await;
    }
    let consumer_channel = common::channel(&connection).await;
    let mut consumer = consume(
        &consumer_channel,
        &consumed,
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    let got: Vec<String> = consumer.take(30).await.iter().map(body).collect();
    assert_eq!(got, expected);
    // The priority is delivered as published, not capped.
    put(&channel, &consumed, "high", Some(9)).await;
    assert_eq!(consumer.next().await.properties.priority(), &Some(9));
    consumer.expect_quiet().await;
}

#[tokio::test]
async fn high_priority_messages_overtake_a_backlog_a_slow_consumer_works_through() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = priority_queue(&channel, "under_backlog", 10).await;
    for i in 0..10 {
        put(&channel, &queue, &format!("low-{i}"), Some(1)).await;
    }
    let consumer_channel = common::channel(&connection).await;
    qos(&consumer_channel, 1).await;
    let mut consumer = consume(&consumer_channel, &queue, BasicConsumeOptions::default()).await;
    // One message at a time; while each is being worked on the producer sends more: a
    // high-priority one in each of the first five rounds, and low-priority ones throughout.
    let mut received = Vec::new();
    for round in 0..20 {
        let delivery = consumer.next().await;
        received.push(body(&delivery));
        if round < 5 {
            put(&channel, &queue, &format!("high-{round}"), Some(8)).await;
        }
        if round % 2 == 0 {
            put(&channel, &queue, &format!("low-{}", 10 + round / 2), None).await;
        }
        ack(&consumer_channel, delivery.delivery_tag).await;
    }
    let mut expected = vec!["low-0".to_string()];
    expected.extend((0..5).map(|i| format!("high-{i}")));
    // Priority 1 (the backlog) before the unset ones (0) published while it was worked on.
    expected.extend((1..10).map(|i| format!("low-{i}")));
    expected.extend((10..15).map(|i| format!("low-{i}")));
    assert_eq!(received, expected);
    // What is left: the low-priority ones published in the last rounds.
    let mut rest = Vec::new();
    for _ in 0..5 {
        let delivery = consumer.next().await;
        rest.push(body(&delivery));
        ack(&consumer_channel, delivery.delivery_tag).await;
    }
    assert_eq!(
        rest,
        (15..20).map(|i| format!("low-{i}")).collect::<Vec<_>>()
    );
    consumer.expect_quiet().await;
}

#[tokio::test]
async fn a_requeued_message_goes_back_to_the_front_of_its_priority() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = priority_queue(&channel, "requeue_priority", 5).await;
    put(&channel, &queue, "a", Some(1)).await;
    put(&channel, &queue, "b", Some(1)).await;
    let a = within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .expect("a message");
    assert_eq!(body(&a.delivery), "a");
    put(&channel, &queue, "urgent", Some(5)).await;
    put(&channel, &queue, "c", Some(1)).await;
    within(
        "basic.nack",
        channel.basic_nack(
            a.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        ),
    )
    .await
    .expect("basic.nack");
    assert_eq!(get_all(&channel, &queue).await, ["urgent", "a", "b", "c"]);
}

#[tokio::test]
async fn a_queue_without_max_priority_ignores_priorities() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(&channel, "no_priority", &[]).await;
    for (i, priority) in [Some(0), Some(9), None, Some(5)].into_iter().enumerate() {
        put(&channel, &queue, &i.to_string(), priority).await;
    }
    assert_eq!(get_all(&channel, &queue).await, ["0", "1", "2", "3"]);
}

#[tokio::test]
async fn max_priority_above_255_is_406_naming_the_argument() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    // 255 is the largest allowed.
    let largest = priority_queue(&channel, "max_priority_255", 255).await;
    put_unconfirmed(&channel, &largest).await;
    let queue = unique("max_priority_256");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-priority".into(), int(256));
    let text = expect_channel_closed(
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
        text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{queue}' in vhost \
             '/': {{max_value_exceeded,256}}"
        )
    );
    // A string is refused too.
    let channel = common::channel(&connection).await;
    let queue = unique("max_priority_string");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-max-priority".into(),
        AMQPValue::LongString(LongString::from("10")),
    );
    let text = expect_channel_closed(
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
        text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{queue}' in vhost \
             '/': \"expected integer, got longstr\""
        )
    );
}

/// A message of priority 255 on a queue of maximum 255 goes through (no confirm).
async fn put_unconfirmed(channel: &Channel, queue: &str) {
    publish_with(channel, "", queue, b"top", with_priority(Some(255))).await;
    wait_for_ready(channel, queue, 1).await;
    assert_eq!(get_all(channel, queue).await, ["top"]);
}

#[tokio::test]
async fn an_expired_lower_priority_message_waits_behind_an_unexpired_higher_priority_one() {
    // RabbitMQ's documentation of priority queues: messages "will still only expire from the
    // head of the queue ... expired lower-priority messages getting stuck behind non-expired
    // higher priority ones ... will never be delivered, but they will appear in queue
    // statistics".
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = queue_with(&channel, "stuck_dlq", &[]).await;
    let queue = queue_with(
        &channel,
        "stuck_behind_priority",
        &[
            ("x-max-priority", int(5)),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString(LongString::from("")),
            ),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(LongString::from(dlq.as_str())),
            ),
        ],
    )
    .await;
    publish_confirmed(
        &channel,
        "",
        &queue,
        b"high",
        with_priority(Some(5)).with_expiration("10000".into()),
    )
    .await;
    publish_confirmed(
        &channel,
        "",
        &queue,
        b"low",
        with_priority(Some(1)).with_expiration("100".into()),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        queue_counts(&channel, &queue).await.0,
        2,
        "low is still counted"
    );
    assert_eq!(
        queue_counts(&channel, &dlq).await.0,
        0,
        "and not dead-lettered yet"
    );
    let high = within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("a message");
    assert_eq!(body(&high.delivery), "high");
    // Now at the head, low goes: never delivered.
    assert_eq!(high.message_count, 0);
    wait_for_ready(&channel, &dlq, 1).await;
    assert_eq!(get_all(&channel, &dlq).await, ["low"]);
}

#[tokio::test]
async fn a_priority_backlog_paged_out_to_disk_is_delivered_in_priority_order() {
    if skip_if_external("the memory window is Warren's") {
        return;
    }
    // Queues keep 16 KiB of ready messages in memory; the rest is read back from disk.
    let broker = Broker::start_with(warren::ServerOptions {
        queue_memory_window: 16 * 1024,
        ..warren::ServerOptions::default()
    })
    .await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let (messages, expected) = mixed_backlog(200);
    for durable in [false, true] {
        let queue = unique("paged_priority");
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), int(5));
        let options = QueueDeclareOptions {
            durable,
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        declare_queue_named(&channel, &queue, options, arguments).await;
        let mut confirms = Vec::new();
        for (label, priority) in &messages {
            let mut body = label.clone().into_bytes();
            body.resize(1024, b'.');
            let properties = with_priority(*priority).with_delivery_mode(2);
            confirms.push(publish_with(&channel, "", &queue, &body, properties).await);
        }
        for confirm in confirms {
            assert!(within("confirm", confirm).await.expect("confirm").is_ack());
        }
        // A consumer works through half of it; two urgent ones arrive meanwhile.
        let consumer_channel = common::channel(&connection).await;
        qos(&consumer_channel, 1).await;
        let mut consumer = consume(&consumer_channel, &queue, BasicConsumeOptions::default()).await;
        let mut got = Vec::new();
        for n in 0..100 {
            let delivery = consumer.next().await;
            got.push(body(&delivery).trim_end_matches('.').to_owned());
            if n == 50 {
                put(&channel, &queue, "urgent-1", Some(5)).await;
                put(&channel, &queue, "urgent-2", Some(4)).await;
            }
            ack(&consumer_channel, delivery.delivery_tag).await;
        }
        close_channel(&consumer_channel).await;
        got.extend(
            get_all(&channel, &queue)
                .await
                .iter()
                .map(|b| b.trim_end_matches('.').to_owned()),
        );
        // At the 51st delivery only priority-5 messages had been delivered: urgent-1 comes
        // after the priority-5 ones (above 5 counts as 5), urgent-2 after the priority-4 ones.
        let mut want = expected.clone();
        let fives = messages.iter().filter(|(_, p)| p.unwrap_or(0) >= 5).count();
        let fours = messages.iter().filter(|(_, p)| *p == Some(4)).count();
        assert!(fives > 51);
        want.insert(fives, "urgent-1".into());
        want.insert(fives + 1 + fours, "urgent-2".into());
        assert_eq!(got, want, "durable: {durable}");
    }
}

//! Queues with a real client (lapin): server-named queues, declare-ok counts, the reply codes of
//! redeclaring and of exclusive queues, auto-delete and exclusive lifetimes, purge and delete, the
//! broker's basic.cancel when a consumed queue goes, and the "last declared queue" shortcut.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

fn max_length(n: i32) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(n));
    arguments
}

async fn manual_ack_consumer(channel: &Channel, queue: &str) -> Deliveries {
    consume(channel, queue, BasicConsumeOptions::default()).await
}

#[tokio::test]
async fn an_empty_name_gets_a_server_generated_amq_gen_name() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let first = declare_queue_named(&channel, "", exclusive(), FieldTable::default()).await;
    let second = declare_queue_named(&channel, "", exclusive(), FieldTable::default()).await;
    assert!(first.name().as_str().starts_with("amq.gen-"), "{first:?}");
    assert_ne!(first.name(), second.name());
    assert_eq!((first.message_count(), first.consumer_count()), (0, 0));
    // The generated name works like any other.
    let (messages, consumers) = queue_counts(&channel, first.name().as_str()).await;
    assert_eq!((messages, consumers), (0, 0));
}

/// declare-ok's message count is the ready messages only (not those delivered and unacked).
#[tokio::test]
async fn declare_ok_counts_ready_messages_and_consumers() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = declare_queue(&channel, "declare_ok_counts", exclusive()).await;
    for body in ["a", "b", "c"] {
        publish_confirmed(&channel, "", &queue, body.as_bytes(), Default::default()).await;
    }
    let again = declare_queue_named(&channel, &queue, exclusive(), FieldTable::default()).await;
    assert_eq!((again.message_count(), again.consumer_count()), (3, 0));

    let consumer_channel = common::channel(&connection).await;
    within(
        "basic.qos",
        consumer_channel.basic_qos(1, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    let mut deliveries = manual_ack_consumer(&consumer_channel, &queue).await;
    let first = deliveries.next().await;
    assert_eq!(body(&first), "a");
    assert_eq!(queue_counts(&channel, &queue).await, (2, 1));
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_404() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let name = unique("missing");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(name.as_str().into(), passive(), FieldTable::default()),
        404,
    )
    .await;
    assert_eq!(text, format!("NOT_FOUND - no queue '{name}' in vhost '/'"));
}

#[tokio::test]
async fn redeclaring_with_other_properties_or_arguments_is_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let queue = unique("redeclare");
    declare_queue_named(
        &channel,
        &queue,
        QueueDeclareOptions::default(),
        max_length(10),
    )
    .await;
    // Identical: fine. Passive: properties and arguments are not compared.
    declare_queue_named(
        &channel,
        &queue,
        QueueDeclareOptions::default(),
        max_length(10),
    )
    .await;
    declare_queue_named(&channel, &queue, passive(), FieldTable::default()).await;

    let cases = [
        (
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            max_length(10),
            "'durable' for queue '{queue}' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            max_length(10),
            "'auto_delete' for queue '{queue}' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            QueueDeclareOptions::default(),
            max_length(20),
            "'x-max-length' for queue '{queue}' in vhost '/': received '20' but current is '10'",
        ),
        (
            QueueDeclareOptions::default(),
            FieldTable::default(),
            "'x-max-length' for queue '{queue}' in vhost '/': \
             received none but current is the value '10' of type 'signedint'",
        ),
    ];
    for (options, arguments, what) in cases {
        let channel = common::channel(&connection).await;
        let text = expect_channel_closed(
            &connection,
            &channel,
            channel.queue_declare(queue.as_str().into(), options, arguments),
            406,
        )
        .await;
        let expected = format!(
            "PRECONDITION_FAILED - inequivalent arg {}",
            what.replace("{queue}", &queue)
        );
        assert_eq!(text, expected);
    }
    let channel = common::channel(&connection).await;
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn an_exclusive_queue_is_locked_to_its_connection_and_goes_with_it() {
    let broker = Broker::start().await;
    let owner = connect(&broker).await;
    let owner_channel = common::channel(&owner).await;
    let queue = declare_queue(&owner_channel, "exclusive", exclusive()).await;

    let other = connect(&broker).await;
    let attempts: Vec<(&str, Channel)> = vec![
        ("declare", common::channel(&other).await),
        ("passive declare", common::channel(&other).await),
        ("consume", common::channel(&other).await),
        ("get", common::channel(&other).await),
        ("purge", common::channel(&other).await),
        ("delete", common::channel(&other).await),
    ];
    for (what, channel) in &attempts {
        let name = queue.as_str().into();
        let text = match *what {
            "declare" => {
                let op = channel.queue_declare(name, exclusive(), FieldTable::default());
                expect_channel_closed(&other, channel, op, 405).await
            }
            "passive declare" => {
                let op = channel.queue_declare(name, passive(), FieldTable::default());
                expect_channel_closed(&other, channel, op, 405).await
            }
            "consume" => {
                let op = channel.basic_consume(
                    name,
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                );
                expect_channel_closed(&other, channel, op, 405).await
            }
            "get" => {
                let op = channel.basic_get(name, BasicGetOptions::default());
                expect_channel_closed(&other, channel, op, 405).await
            }
            "purge" => {
                let op = channel.queue_purge(name, QueuePurgeOptions::default());
                expect_channel_closed(&other, channel, op, 405).await
            }
            _ => {
                let op = channel.queue_delete(name, QueueDeleteOptions::default());
                expect_channel_closed(&other, channel, op, 405).await
            }
        };
        assert_eq!(
            text,
            format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in \
                 vhost '/'. It could be originally declared on another connection or the \
                 exclusive property value does not match that of the original declaration."
            ),
            "{what}"
        );
    }
    // The owner's channel is unaffected; the queue goes when its connection closes.
    assert_channel_open(&owner_channel).await;
    within("close", owner.close(200, "bye".into()))
        .await
        .expect("connection.close");
    let channel = common::channel(&other).await;
    wait_until("the exclusive queue to be deleted", || async {
        let probe = common::channel(&other).await;
        probe
            .queue_declare(queue.as_str().into(), passive(), FieldTable::default())
            .await
            .is_err()
    })
    .await;
    expect_channel_closed(
        &other,
        &channel,
        channel.queue_declare(queue.as_str().into(), passive(), FieldTable::default()),
        404,
    )
    .await;
}

#[tokio::test]
async fn an_auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = declare_queue(&channel, "auto_delete", auto_delete).await;
    // Never consumed: it stays.
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));

    let first = manual_ack_consumer(&channel, &queue).await;
    let second = manual_ack_consumer(&channel, &queue).await;
    within(
        "basic.cancel",
        channel.basic_cancel(first.tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await
    .expect("basic.cancel");
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    within(
        "basic.cancel",
        channel.basic_cancel(second.tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await
    .expect("basic.cancel");
    expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(queue.as_str().into(), passive(), FieldTable::default()),
        404,
    )
    .await;
}

#[tokio::test]
async fn purge_removes_ready_messages_and_returns_their_count() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = declare_queue(&channel, "purge", exclusive()).await;
    for i in 0..5 {
        publish_confirmed(&channel, "", &queue, &[i], Default::default()).await;
    }
    let purged = within(
        "queue.purge",
        channel.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()),
    )
    .await
    .expect("queue.purge");
    assert_eq!(purged, 5);
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
    let purged = within(
        "queue.purge",
        channel.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()),
    )
    .await
    .expect("queue.purge");
    assert_eq!(purged, 0);
}

#[tokio::test]
async fn delete_if_unused_and_if_empty_refuse_with_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = declare_queue(&channel, "delete_guards", exclusive()).await;
    publish_confirmed(&channel, "", &queue, b"x", Default::default()).await;

    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_delete(
            queue.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..QueueDeleteOptions::default()
            },
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty")
    );

    let channel = common::channel(&connection).await;
    let _consumer = consume(
        &channel,
        &queue,
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_delete(
            queue.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..QueueDeleteOptions::default()
            },
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use")
    );
}

#[tokio::test]
async fn delete_returns_the_message_count_and_deleting_again_is_ok() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = declare_queue(&channel, "delete_count", QueueDeclareOptions::default()).await;
    for i in 0..3 {
        publish_confirmed(&channel, "", &queue, &[i], Default::default()).await;
    }
    let deleted = within(
        "queue.delete",
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
    assert_eq!(deleted, 3);
    // RabbitMQ answers delete-ok (0 messages) for a queue that does not exist.
    let deleted = within(
        "queue.delete",
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("deleting a missing queue");
    assert_eq!(deleted, 0);
}

/// RabbitMQ tells consumers of a deleted queue with basic.cancel (the client advertises the
/// consumer_cancel_notify capability, as lapin does); lapin ends the consumer's stream.
#[tokio::test]
async fn deleting_a_consumed_queue_cancels_its_consumers() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let consumer_channel = channel(&connection).await;
    let queue = declare_queue(
        &consumer_channel,
        "delete_cancels",
        QueueDeclareOptions::default(),
    )
    .await;
    let mut deliveries = manual_ack_consumer(&consumer_channel, &queue).await;

    let other = common::channel(&connection).await;
    let deleted = within(
        "queue.delete",
        other.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
    assert_eq!(deleted, 0);
    deliveries.expect_cancelled().await;
    // The consumer's channel lives on.
    assert_channel_open(&consumer_channel).await;
}

#[tokio::test]
async fn an_empty_queue_name_means_the_channels_last_declared_queue() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let first = declare_queue(&channel, "last_declared_a", exclusive()).await;
    let last = declare_queue(&channel, "last_declared_b", exclusive()).await;
    publish_confirmed(&channel, "", &first, b"first", Default::default()).await;
    publish_confirmed(&channel, "", &last, b"last", Default::default()).await;

    // queue.bind with an empty queue name binds the last declared queue.
    within(
        "queue.bind",
        channel.queue_bind(
            "".into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind ''");
    let mut deliveries = consume(
        &channel,
        "",
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    assert_eq!(body(&deliveries.next().await), "last");
    publish_confirmed(&channel, "amq.fanout", "", b"fanned", Default::default()).await;
    assert_eq!(body(&deliveries.next().await), "fanned");
    within(
        "queue.unbind",
        channel.queue_unbind(
            last.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.unbind");

    // A channel that declared nothing has no last queue: 404.
    let fresh = common::channel(&connection).await;
    let text = expect_channel_closed(
        &connection,
        &fresh,
        fresh.basic_consume(
            "".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
        404,
    )
    .await;
    assert_eq!(text, "NOT_FOUND - no previously declared queue");
}

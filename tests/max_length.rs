//! `x-max-length` with a real client (lapin): `drop-head` (the default) drops the oldest ready
//! messages to make room; `reject-publish` refuses the new message, nacked to a confirm-mode
//! publisher while the queue is full and acked again once it has room.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};

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
async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) -> bool {
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

async fn get_all(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(message) = within(
        "basic.get",
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    {
        bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
    }
    bodies
}

#[tokio::test]
async fn drop_head_keeps_the_newest_messages() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = limited_queue(&channel, "drop_head", 3, None).await;
    for i in 0..5 {
        assert!(publish_confirmed(&channel, &queue, i.to_string().as_bytes()).await);
    }
    assert_eq!(queue_counts(&channel, &queue).await.0, 3);
    assert_eq!(get_all(&channel, &queue).await, ["2", "3", "4"]);
    // Explicit drop-head is the same.
    let queue = limited_queue(&channel, "drop_head_explicit", 1, Some("drop-head")).await;
    for i in 0..3 {
        assert!(publish_confirmed(&channel, &queue, i.to_string().as_bytes()).await);
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
        acked.push(publish_confirmed(&channel, &queue, i.to_string().as_bytes()).await);
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
    assert!(publish_confirmed(&channel, &queue, b"5").await);
    assert!(!publish_confirmed(&channel, &queue, b"6").await);
    assert_eq!(get_all(&channel, &queue).await, ["1", "2", "5"]);
}

//! Direct reply-to with a real client (lapin): a requester consumes `amq.rabbitmq.reply-to`
//! (no-ack), publishes a request whose reply-to is that pseudo-queue, and the responder's answer
//! to the rewritten reply-to comes straight back; misuse gets RabbitMQ's 406s.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn consume_replies(channel: &Channel, no_ack: bool) -> lapin::Result<Deliveries> {
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(Deliveries::new(consumer))
}

#[tokio::test]
async fn a_reply_to_the_rewritten_address_comes_straight_back() {
    let broker = Broker::start().await;
    let (_server_connection, server) = open(&broker).await;
    let requests = declare_queue(&server, "rpc_requests", QueueDeclareOptions::default()).await;
    let mut incoming = consume(&server, &requests, BasicConsumeOptions::default()).await;

    let (_client_connection, client) = open(&broker).await;
    let mut replies = consume_replies(&client, true)
        .await
        .expect("reply consumer");
    publish_with(
        &client,
        "",
        &requests,
        b"2+2",
        BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id("c1".into()),
    )
    .await;

    let request = incoming.next().await;
    let reply_to = request
        .properties
        .reply_to()
        .clone()
        .expect("reply-to")
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "rewritten: {reply_to}"
    );
    publish_with(
        &server,
        "",
        &reply_to,
        b"4",
        BasicProperties::default().with_correlation_id("c1".into()),
    )
    .await;
    let reply = replies.next().await;
    assert_eq!(reply.data, b"4");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("c1")
    );
    assert_eq!(reply.routing_key.as_str(), reply_to);
    delete_queue(&server, &requests).await;
}

#[tokio::test]
async fn misuse_is_406() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    // An acking reply consumer.
    let error = consume_replies(&channel, false)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("PRECONDITION"), "{error}");
    // A publish asking for direct reply-to on a channel without a reply consumer.
    let channel = common::channel(&connection).await;
    let queue = declare_queue(
        &channel,
        "reply_without_consumer",
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
    )
    .await;
    publish_with(
        &channel,
        "",
        &queue,
        b"request",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    wait_until("the channel is closed", || {
        let status = channel.status().clone();
        async move { !status.connected() }
    })
    .await;
    // A second reply consumer on one channel.
    let channel = common::channel(&connection).await;
    consume_replies(&channel, true).await.expect("first");
    let error = consume_replies(&channel, true)
        .await
        .err()
        .expect("second refused");
    assert!(error.to_string().contains("PRECONDITION"), "{error}");
}

//! Redelivery with a real client (lapin): what a consumer held unacked comes back, marked
//! redelivered and in its original order, when its channel or connection closes, when its TCP
//! connection is cut mid-stream, and when it sits on a delivery past the unacked timeout.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`),
//! except the unacked-timeout tests, which are Warren's own and skip themselves there.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use warren::{ServerOptions, UnackedTimeoutAction};

fn manual_ack() -> BasicConsumeOptions {
    BasicConsumeOptions::default()
}

/// A durable-less, non-exclusive queue (a second connection must reach it) holding `count`
/// numbered messages; the caller deletes it.
async fn shared_queue(channel: &Channel, test: &str, count: usize) -> String {
    let queue = declare_queue(channel, test, QueueDeclareOptions::default()).await;
    publish_numbered(channel, &queue, count).await;
    queue
}

/// Consumes everything left in `queue` on a fresh consumer; returns (number, redelivered) pairs.
async fn drain(channel: &Channel, queue: &str, count: usize) -> Vec<(usize, bool)> {
    let mut deliveries = consume(channel, queue, manual_ack()).await;
    let got = deliveries.take(count).await;
    deliveries.expect_quiet().await;
    let last = got.last().map(|d| d.delivery_tag).unwrap_or(0);
    if last > 0 {
        within(
            "basic.ack multiple",
            channel.basic_ack(last, BasicAckOptions { multiple: true }),
        )
        .await
        .expect("basic.ack");
    }
    got.iter()
        .map(|d| (body(d).parse().expect("number"), d.redelivered))
        .collect()
}

/// Receives all `count` messages on a fresh channel of `connection` and acks those in `acked`
/// (then proves the broker has processed the acks); returns the channel.
async fn take_and_ack_some(
    connection: &Connection,
    queue: &str,
    count: usize,
    acked: &[usize],
) -> Channel {
    let channel = common::channel(connection).await;
    let mut deliveries = consume(&channel, queue, manual_ack()).await;
    let got = deliveries.take(count).await;
    assert_eq!(numbers(&got), (0..count).collect::<Vec<_>>());
    for &i in acked {
        ack(&channel, got[i].delivery_tag).await;
    }
    assert_channel_open(&channel).await;
    channel
}

#[tokio::test]
async fn closing_a_channel_requeues_its_unacked_in_order_as_redelivered() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = shared_queue(&channel, "channel_close", 10).await;

    let consumer_connection = connect(&broker).await;
    let consumer = take_and_ack_some(&consumer_connection, &queue, 10, &[0, 3, 9]).await;
    close_channel(&consumer).await;

    wait_for_ready(&channel, &queue, 7).await;
    let other = connect(&broker).await;
    let other_channel = common::channel(&other).await;
    let again = drain(&other_channel, &queue, 7).await;
    let expected: Vec<(usize, bool)> = [1, 2, 4, 5, 6, 7, 8].iter().map(|&i| (i, true)).collect();
    assert_eq!(again, expected);
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn closing_a_connection_requeues_its_unacked_in_order_as_redelivered() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = shared_queue(&channel, "connection_close", 10).await;

    let consumer_connection = connect(&broker).await;
    let _consumer = take_and_ack_some(&consumer_connection, &queue, 10, &[1, 2]).await;
    within("close", consumer_connection.close(200, "bye".into()))
        .await
        .expect("connection.close");

    wait_for_ready(&channel, &queue, 8).await;
    let other = connect(&broker).await;
    let other_channel = common::channel(&other).await;
    let again = drain(&other_channel, &queue, 8).await;
    let expected: Vec<(usize, bool)> = [0, 3, 4, 5, 6, 7, 8, 9]
        .iter()
        .map(|&i| (i, true))
        .collect();
    assert_eq!(again, expected);
    delete_queue(&channel, &queue).await;
}

/// The consumer's TCP connection is reset while deliveries are in flight: nothing is lost, nothing
/// acked comes back, and everything the consumer saw but did not ack comes back redelivered.
#[tokio::test]
async fn a_cut_tcp_connection_loses_nothing_and_returns_every_unacked() {
    const COUNT: usize = 200;
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = shared_queue(&channel, "tcp_cut", COUNT).await;

    let proxy = Proxy::start(broker.addr).await;
    let cut_connection = connect_uri(&proxy.uri()).await;
    let cut_channel = common::channel(&cut_connection).await;
    qos(&cut_channel, 50).await;
    let mut deliveries = consume(&cut_channel, &queue, manual_ack()).await;

    // Ack two of every three of the first 100, prove the broker has them, then take more
    // without acking and cut the connection while the broker is still sending.
    let mut seen = Vec::new();
    let mut acked = BTreeSet::new();
    for _ in 0..100 {
        let delivery = deliveries.next().await;
        let n: usize = body(&delivery).parse().expect("number");
        if !n.is_multiple_of(3) {
            ack(&cut_channel, delivery.delivery_tag).await;
            acked.insert(n);
        }
        seen.push(n);
    }
    assert_channel_open(&cut_channel).await;
    for _ in 0..10 {
        seen.push(body(&deliveries.next().await).parse().expect("number"));
    }
    proxy.cut();

    // The broker notices, drops the consumer and requeues everything unacked.
    let left = (COUNT - acked.len()) as u32;
    wait_until(
        "the broker to requeue the cut consumer's messages",
        || async { queue_counts(&channel, &queue).await == (left, 0) },
    )
    .await;
    let other = connect(&broker).await;
    let other_channel = common::channel(&other).await;
    let again = drain(&other_channel, &queue, left as usize).await;

    let numbers: Vec<usize> = again.iter().map(|&(n, _)| n).collect();
    let expected: Vec<usize> = (0..COUNT).filter(|n| !acked.contains(n)).collect();
    assert_eq!(
        numbers, expected,
        "none lost, none acked redelivered, in order"
    );
    for (n, redelivered) in again {
        if seen.contains(&n) {
            assert!(redelivered, "message {n} was delivered before the cut");
        }
    }
    delete_queue(&channel, &queue).await;
}

/// Warren's default unacked-timeout action: the delivery is taken back and redelivered to another
/// consumer; the late ack of the stale tag is ignored and the channel lives on, its credit freed.
#[tokio::test]
async fn an_unacked_timeout_redelivers_elsewhere_and_ignores_the_late_ack() {
    if skip_if_external("x-consumer-timeout redelivery is Warren's own behaviour") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = unique("unacked_timeout");
    let mut arguments = FieldTable::default();
    arguments.insert("x-consumer-timeout".into(), AMQPValue::LongInt(500));
    declare_queue_named(&channel, &queue, QueueDeclareOptions::default(), arguments).await;

    let slow = connect(&broker).await;
    let slow_channel = common::channel(&slow).await;
    qos(&slow_channel, 1).await;
    let mut slow_deliveries = consume(&slow_channel, &queue, manual_ack()).await;
    publish(&channel, "", &queue, b"first").await;
    let stale = slow_deliveries.next().await;
    assert_eq!((body(&stale).as_str(), stale.redelivered), ("first", false));

    let fast = connect(&broker).await;
    let fast_channel = common::channel(&fast).await;
    qos(&fast_channel, 1).await;
    let mut fast_deliveries = consume(&fast_channel, &queue, manual_ack()).await;
    let redelivered = fast_deliveries.next().await;
    assert_eq!(
        (body(&redelivered).as_str(), redelivered.redelivered),
        ("first", true)
    );

    // The late ack is ignored: the channel is still open and served.
    ack(&slow_channel, stale.delivery_tag).await;
    assert_channel_open(&slow_channel).await;
    qos(&slow_channel, 1).await;
    // Its credit was freed: the next message goes to it (the other consumer is full).
    publish(&channel, "", &queue, b"second").await;
    let next = slow_deliveries.next().await;
    assert_eq!((body(&next).as_str(), next.redelivered), ("second", false));
    ack(&slow_channel, next.delivery_tag).await;
    ack(&fast_channel, redelivered.delivery_tag).await;
    assert_channel_open(&fast_channel).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 2));
    delete_queue(&channel, &queue).await;
}

/// RabbitMQ's unacked-timeout action, as a Warren option: the channel is closed with 406 and what
/// it held goes to another consumer.
#[tokio::test]
async fn an_unacked_timeout_can_close_the_channel_with_406_instead() {
    if skip_if_external("needs ServerOptions::unacked_timeout_action") {
        return;
    }
    let broker = Broker::start_with(ServerOptions {
        unacked_timeout: Duration::from_millis(500),
        unacked_timeout_action: UnackedTimeoutAction::CloseChannel,
        ..ServerOptions::default()
    })
    .await;
    let (_connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "timeout_close", QueueDeclareOptions::default()).await;

    let slow = connect(&broker).await;
    let slow_channel = common::channel(&slow).await;
    qos(&slow_channel, 1).await;
    let mut slow_deliveries = consume(&slow_channel, &queue, manual_ack()).await;
    publish(&channel, "", &queue, b"held").await;
    assert_eq!(body(&slow_deliveries.next().await), "held");

    let fast = connect(&broker).await;
    let fast_channel = common::channel(&fast).await;
    let mut fast_deliveries = consume(&fast_channel, &queue, manual_ack()).await;

    let error = slow_deliveries.expect_error().await;
    let text = assert_reply::<()>(Err(error), 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout \
             value used: 500 ms. This timeout value can be configured, see consumers doc guide \
             to learn more",
            slow_channel.id()
        )
    );
    assert!(slow.status().connected(), "only the channel closes");

    let redelivered = fast_deliveries.next().await;
    assert_eq!(
        (body(&redelivered).as_str(), redelivered.redelivered),
        ("held", true)
    );
    ack(&fast_channel, redelivered.delivery_tag).await;
    delete_queue(&channel, &queue).await;
}

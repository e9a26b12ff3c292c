//! Consuming and acknowledging with a real client (lapin): order, round-robin, prefetch (per
//! consumer and per channel), ack/nack/reject and their errors, basic.get, no-ack and exclusive
//! consumers, consumer tags, cancel, recover, and bodies spanning many frames.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

/// A connection, a channel, and an exclusive queue holding `count` numbered messages.
async fn filled_queue(broker: &Broker, test: &str, count: usize) -> (Connection, Channel, String) {
    let (connection, channel) = open(broker).await;
    let queue = declare_queue(&channel, test, exclusive()).await;
    publish_numbered(&channel, &queue, count).await;
    (connection, channel, queue)
}

fn tags(deliveries: &[lapin::message::Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.delivery_tag).collect()
}

#[tokio::test]
async fn deliveries_come_in_publish_order_with_tags_from_1() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "fifo", 100).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(100).await;
    assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
    assert_eq!(tags(&got), (1..=100).collect::<Vec<_>>());
    assert!(got.iter().all(|d| !d.redelivered));
    assert!(got.iter().all(|d| d.exchange.as_str().is_empty()));
    assert!(got.iter().all(|d| d.routing_key.as_str() == queue));
}

#[tokio::test]
async fn two_consumers_share_a_queue_round_robin() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "round_robin", exclusive()).await;
    let other = common::channel(&connection).await;
    let mut a = consume(&channel, &queue, no_ack()).await;
    let mut b = consume(&other, &queue, no_ack()).await;
    publish_numbered_without_waiting(&channel, &queue, 10).await;
    let got_a = numbers(&a.take(5).await);
    let got_b = numbers(&b.take(5).await);
    a.expect_quiet().await;
    b.expect_quiet().await;
    // Each gets every other message.
    let (evens, odds) = if got_a[0] == 0 {
        (got_a, got_b)
    } else {
        (got_b, got_a)
    };
    assert_eq!(evens, [0, 2, 4, 6, 8]);
    assert_eq!(odds, [1, 3, 5, 7, 9]);
}

async fn publish_numbered_without_waiting(channel: &Channel, queue: &str, count: usize) {
    for i in 0..count {
        publish(channel, "", queue, i.to_string().as_bytes()).await;
    }
}

#[tokio::test]
async fn prefetch_delivers_exactly_n_then_one_more_per_ack() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "prefetch", 10).await;
    qos(&channel, 3).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.take(3).await;
    assert_eq!(numbers(&first), [0, 1, 2]);
    deliveries.expect_quiet().await;

    ack(&channel, first[0].delivery_tag).await;
    assert_eq!(body(&deliveries.next().await), "3");
    deliveries.expect_quiet().await;

    // Acking two (multiple) frees two.
    within(
        "basic.ack multiple",
        channel.basic_ack(first[2].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    assert_eq!(numbers(&deliveries.take(2).await), [4, 5]);
    deliveries.expect_quiet().await;
    assert_eq!(queue_counts(&channel, &queue).await, (4, 1));
}

/// `global=true` limits the channel as a whole (RabbitMQ's reading of the flag), shared by all
/// its consumers.
#[tokio::test]
async fn global_qos_limits_all_consumers_of_the_channel_together() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "global_qos", 10).await;
    within(
        "basic.qos global",
        channel.basic_qos(3, BasicQosOptions { global: true }),
    )
    .await
    .expect("basic.qos");
    let mut a = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let mut b = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    // Three deliveries between the two consumers, then nothing more on either.
    let mut received = Vec::new();
    within("three deliveries", async {
        while received.len() < 3 {
            tokio::select! {
                Some(Ok(Some(d))) = a.event_within(WAIT) => received.push(d),
                Some(Ok(Some(d))) = b.event_within(WAIT) => received.push(d),
                else => panic!("a consumer failed or was cancelled"),
            }
        }
    })
    .await;
    a.expect_quiet().await;
    b.expect_quiet().await;
    assert_eq!(queue_counts(&channel, &queue).await, (7, 2));

    // One ack frees one delivery, to either consumer.
    ack(&channel, received[0].delivery_tag).await;
    wait_for_ready(&channel, &queue, 6).await;
}

#[tokio::test]
async fn ack_multiple_acks_everything_up_to_the_tag() {
    let broker = Broker::start().await;
    let (connection, channel, queue) = filled_queue(&broker, "ack_multiple", 5).await;
    let consumer_channel = common::channel(&connection).await;
    let mut deliveries = consume(&consumer_channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(5).await;
    within(
        "basic.ack multiple",
        consumer_channel.basic_ack(got[2].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    // Closing the channel requeues exactly the two left unacked.
    close_channel(&consumer_channel).await;
    wait_for_ready(&channel, &queue, 2).await;
    let mut again = consume(&channel, &queue, no_ack()).await;
    let redelivered = again.take(2).await;
    assert_eq!(numbers(&redelivered), [3, 4]);
    assert!(redelivered.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn nack_and_reject_with_requeue_redeliver_in_original_order() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "requeue", 5).await;
    qos(&channel, 3).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.take(3).await;
    assert_eq!(numbers(&first), [0, 1, 2]);

    // Nack all three (multiple): they go back ahead of 3 and 4, in their original order.
    within(
        "basic.nack",
        channel.basic_nack(
            first[2].delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .expect("basic.nack");
    let again = deliveries.take(3).await;
    let order: Vec<(usize, bool)> = again
        .iter()
        .map(|d| (body(d).parse().expect("number"), d.redelivered))
        .collect();
    assert_eq!(order, [(0, true), (1, true), (2, true)]);
    assert_eq!(tags(&again), [4, 5, 6], "new deliveries get new tags");

    // Reject one: it comes back (to the head, ahead of 3) as the one delivery its slot allows.
    within(
        "basic.reject",
        channel.basic_reject(again[1].delivery_tag, BasicRejectOptions { requeue: true }),
    )
    .await
    .expect("basic.reject");
    let rejected = deliveries.next().await;
    assert_eq!(
        (body(&rejected).as_str(), rejected.redelivered),
        ("1", true)
    );
    deliveries.expect_quiet().await;

    within(
        "basic.ack multiple",
        channel.basic_ack(rejected.delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    let rest = deliveries.take(2).await;
    assert_eq!(numbers(&rest), [3, 4]);
    assert!(rest.iter().all(|d| !d.redelivered));
}

#[tokio::test]
async fn nack_and_reject_without_requeue_drop_the_message() {
    let broker = Broker::start().await;
    let (connection, channel, queue) = filled_queue(&broker, "drop", 3).await;
    let consumer_channel = common::channel(&connection).await;
    let mut deliveries = consume(&consumer_channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(3).await;
    within(
        "basic.reject",
        consumer_channel.basic_reject(got[0].delivery_tag, BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("basic.reject");
    within(
        "basic.nack",
        consumer_channel.basic_nack(
            got[1].delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        ),
    )
    .await
    .expect("basic.nack");
    deliveries.expect_quiet().await;
    // Only the third, never settled, comes back when the channel closes.
    close_channel(&consumer_channel).await;
    wait_for_ready(&channel, &queue, 1).await;
    assert_eq!(get_all(&channel, &queue).await, ["2"]);
}

#[tokio::test]
async fn acking_an_unknown_delivery_tag_is_406() {
    let broker = Broker::start().await;
    let (connection, channel, queue) = filled_queue(&broker, "unknown_tag", 1).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let delivery = deliveries.next().await;
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.basic_ack(delivery.delivery_tag + 98, BasicAckOptions::default()),
        406,
    )
    .await;
    assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 99");
}

#[tokio::test]
async fn acking_twice_is_406() {
    let broker = Broker::start().await;
    let (connection, channel, queue) = filled_queue(&broker, "double_ack", 1).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let delivery = deliveries.next().await;
    ack(&channel, delivery.delivery_tag).await;
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()),
        406,
    )
    .await;
    assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 1");
}

#[tokio::test]
async fn basic_get_reports_the_remaining_count_and_get_empty() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "get", 3).await;
    let mut remaining = Vec::new();
    let mut tags = Vec::new();
    for expected in ["0", "1", "2"] {
        let got = within(
            "basic.get",
            channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .expect("basic.get")
        .expect("get-ok");
        assert_eq!(body(&got.delivery), expected);
        assert!(!got.delivery.redelivered);
        remaining.push(got.message_count);
        tags.push(got.delivery.delivery_tag);
    }
    assert_eq!(remaining, [2, 1, 0]);
    assert_eq!(tags, [1, 2, 3]);
    let empty = within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get");
    assert!(empty.is_none(), "get-empty expected");
    // Got messages are unacked like delivered ones: ack them all at once.
    within(
        "basic.ack multiple",
        channel.basic_ack(3, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    assert_channel_open(&channel).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
}

#[tokio::test]
async fn a_no_ack_consumer_needs_no_acks_and_nothing_comes_back() {
    let broker = Broker::start().await;
    let (connection, channel, queue) = filled_queue(&broker, "no_ack", 20).await;
    let consumer_channel = common::channel(&connection).await;
    // Prefetch does not limit a no-ack consumer.
    qos(&consumer_channel, 1).await;
    let mut deliveries = consume(&consumer_channel, &queue, no_ack()).await;
    assert_eq!(
        numbers(&deliveries.take(20).await),
        (0..20).collect::<Vec<_>>()
    );
    close_channel(&consumer_channel).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
}

#[tokio::test]
async fn an_exclusive_consumer_shuts_out_others_with_403() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "exclusive_consumer", exclusive()).await;
    let exclusive_consumer = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let _first = consume(&channel, &queue, exclusive_consumer).await;
    let other = common::channel(&connection).await;
    let text = expect_channel_closed(
        &connection,
        &other,
        other.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
        403,
    )
    .await;
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use")
    );

    // Nor can an exclusive consumer join a queue that already has a consumer.
    let shared = declare_queue(&channel, "exclusive_consumer_late", exclusive()).await;
    let _plain = consume(&channel, &shared, BasicConsumeOptions::default()).await;
    let other = common::channel(&connection).await;
    let text = expect_channel_closed(
        &connection,
        &other,
        other.basic_consume(
            shared.as_str().into(),
            "".into(),
            exclusive_consumer,
            FieldTable::default(),
        ),
        403,
    )
    .await;
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{shared}' in vhost '/' in exclusive use")
    );
}

/// RabbitMQ answers a consumer tag already used on the channel with a *connection* exception,
/// 530 NOT_ALLOWED.
#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_is_530() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "tag_reuse", exclusive()).await;
    let _first = try_consume(&channel, &queue, "my-tag", BasicConsumeOptions::default())
        .await
        .expect("basic.consume");
    // The same tag on another channel is fine.
    let other = common::channel(&connection).await;
    let _elsewhere = try_consume(&other, &queue, "my-tag", BasicConsumeOptions::default())
        .await
        .expect("the same tag on another channel");
    let text = expect_connection_closed(
        &connection,
        channel.basic_consume(
            queue.as_str().into(),
            "my-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
        530,
    )
    .await;
    assert_eq!(text, "NOT_ALLOWED - attempt to reuse consumer tag 'my-tag'");
}

#[tokio::test]
async fn cancel_stops_deliveries_and_unacked_ones_can_still_be_acked() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "cancel", 2).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(2).await;
    within(
        "basic.cancel",
        channel.basic_cancel(
            deliveries.tag.as_str().into(),
            BasicCancelOptions::default(),
        ),
    )
    .await
    .expect("basic.cancel");
    deliveries.expect_cancelled().await;
    publish(&channel, "", &queue, b"after cancel").await;
    wait_for_ready(&channel, &queue, 1).await;
    assert_eq!(queue_counts(&channel, &queue).await, (1, 0));
    within(
        "basic.ack multiple",
        channel.basic_ack(got[1].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    assert_channel_open(&channel).await;
    assert_eq!(get_all(&channel, &queue).await, ["after cancel"]);
}

#[tokio::test]
async fn recover_with_requeue_redelivers_the_unacked() {
    let broker = Broker::start().await;
    let (_connection, channel, queue) = filled_queue(&broker, "recover", 3).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(3).await;
    ack(&channel, got[0].delivery_tag).await;
    within(
        "basic.recover",
        channel.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("basic.recover");
    let again = deliveries.take(2).await;
    assert_eq!(numbers(&again), [1, 2]);
    assert!(again.iter().all(|d| d.redelivered));
    within(
        "basic.ack multiple",
        channel.basic_ack(again[1].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    deliveries.expect_quiet().await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

#[tokio::test]
async fn large_bodies_spanning_many_frames_arrive_intact() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = declare_queue(&channel, "large", exclusive()).await;
    let bodies = [
        pattern(1 << 20),
        pattern(3 << 20),
        Vec::new(),
        pattern(131_064),
    ];
    for body in &bodies {
        publish_confirmed(&channel, "", &queue, body, Default::default()).await;
    }
    let mut deliveries = consume(&channel, &queue, no_ack()).await;
    for body in &bodies {
        let delivery = deliveries.next().await;
        assert_eq!(delivery.data.len(), body.len());
        assert!(
            delivery.data == *body,
            "body of {} bytes differs",
            body.len()
        );
    }
}

//! Transactions with a real client (lapin): publishes and acks held until tx.commit, dropped by
//! tx.rollback, and the errors of committing outside a transaction.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::Channel;

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

async fn tx_select(channel: &Channel) {
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
}

async fn commit(channel: &Channel) {
    within("tx.commit", channel.tx_commit())
        .await
        .expect("tx.commit");
}

async fn rollback(channel: &Channel) {
    within("tx.rollback", channel.tx_rollback())
        .await
        .expect("tx.rollback");
}

#[tokio::test]
async fn publishes_are_invisible_until_commit() {
    let broker = Broker::start().await;
    let (connection, watcher) = open(&broker).await;
    let queue = declare_queue(&watcher, "tx_publish", exclusive()).await;
    let channel = common::channel(&connection).await;
    tx_select(&channel).await;
    for body in ["a", "b", "c"] {
        publish(&channel, "", &queue, body.as_bytes()).await;
    }
    // A round trip on the transactional channel itself: the publishes have arrived, uncommitted.
    assert_channel_open(&channel).await;
    assert_eq!(queue_counts(&watcher, &queue).await, (0, 0));
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
    commit(&channel).await;
    assert_eq!(queue_counts(&watcher, &queue).await, (3, 0));
    assert_eq!(get_all(&watcher, &queue).await, ["a", "b", "c"]);
}

#[tokio::test]
async fn rollback_discards_publishes_and_the_channel_stays_transactional() {
    let broker = Broker::start().await;
    let (connection, watcher) = open(&broker).await;
    let queue = declare_queue(&watcher, "tx_rollback", exclusive()).await;
    let channel = common::channel(&connection).await;
    tx_select(&channel).await;
    publish(&channel, "", &queue, b"dropped 1").await;
    publish(&channel, "", &queue, b"dropped 2").await;
    rollback(&channel).await;
    assert_eq!(queue_counts(&watcher, &queue).await, (0, 0));

    // Still in a transaction after rollback and after commit.
    publish(&channel, "", &queue, b"kept").await;
    commit(&channel).await;
    publish(&channel, "", &queue, b"pending").await;
    assert_channel_open(&channel).await;
    assert_eq!(get_all(&watcher, &queue).await, ["kept"]);
    rollback(&channel).await;
    assert_eq!(queue_counts(&watcher, &queue).await, (0, 0));
}

/// An ack in a transaction takes effect at commit; a rolled-back ack leaves the delivery unacked
/// (it can be acked again, and it is requeued if the channel closes first).
#[tokio::test]
async fn acks_are_held_until_commit_and_rollback_leaves_them_unacked() {
    let broker = Broker::start().await;
    let (connection, watcher) = open(&broker).await;
    let queue = declare_queue(&watcher, "tx_ack", exclusive()).await;
    publish_numbered(&watcher, &queue, 4).await;

    let channel = common::channel(&connection).await;
    tx_select(&channel).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(4).await;
    assert_eq!(numbers(&got), [0, 1, 2, 3]);

    ack(&channel, got[0].delivery_tag).await;
    rollback(&channel).await;
    ack(&channel, got[1].delivery_tag).await;
    commit(&channel).await;
    // Acking 0 again is no error: the rollback left it unacked.
    ack(&channel, got[0].delivery_tag).await;
    commit(&channel).await;
    // 2 is acked but never committed.
    ack(&channel, got[2].delivery_tag).await;
    assert_channel_open(&channel).await;
    // Nothing was requeued by the rollback.
    assert_eq!(queue_counts(&watcher, &queue).await, (0, 1));

    // Closing the channel requeues what is not committed-acked: 2 and 3, as redelivered.
    close_channel(&channel).await;
    wait_for_ready(&watcher, &queue, 2).await;
    let mut again = consume(
        &watcher,
        &queue,
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    let redelivered = again.take(2).await;
    assert_eq!(numbers(&redelivered), [2, 3]);
    assert!(redelivered.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn commit_or_rollback_without_select_is_406() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let text = expect_channel_closed(&connection, &channel, channel.tx_commit(), 406).await;
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
    let channel = common::channel(&connection).await;
    let text = expect_channel_closed(&connection, &channel, channel.tx_rollback(), 406).await;
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
    // tx.select twice is fine.
    let channel = common::channel(&connection).await;
    tx_select(&channel).await;
    tx_select(&channel).await;
    commit(&channel).await;
}

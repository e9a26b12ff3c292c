//! Dead-lettering from a quorum queue on three real `warren` processes (issue 22): a message
//! rejected without requeue, and one returned more often than `x-delivery-limit`, go to the
//! queue's dead-letter exchange once, with RabbitMQ's `x-death` reasons (`rejected`,
//! `delivery_limit`), from whichever node the consumer was on.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/numbered.rs"]
mod numbered;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::{Duration, Instant};

use cluster::{wait_for_queue, Cluster, ONE_CLUSTER_AT_A_TIME};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use numbered::{connect, publish, WAIT};

/// The quorum queue's arguments: dead letters to the default exchange, routing key `dead`.
fn work_args() -> FieldTable {
    let mut args = numbered::quorum_args();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text("dead"));
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(1));
    args
}

async fn declare(channel: &Channel, name: &str, args: FieldTable) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, args)
        .await
        .unwrap_or_else(|e| panic!("declare {name}: {e}"));
}

/// The next message of `queue` through `channel`, waiting for one (bounded).
async fn get(channel: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let started = Instant::now();
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get");
        if let Some(got) = got {
            return got;
        }
        assert!(started.elapsed() < WAIT, "nothing came to {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `reason` of the message's newest `x-death` entry.
fn death_reason(message: &lapin::message::BasicGetMessage) -> String {
    let headers = message.delivery.properties.headers().clone();
    let headers = headers.expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("an empty x-death");
    };
    match death.inner().get(&ShortString::from("reason")) {
        Some(AMQPValue::LongString(reason)) => reason.to_string(),
        other => panic!("x-death reason: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_over_the_delivery_limit_messages_are_dead_lettered_once() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start("quorum-dead-letter");
    let on_1 = connect(&cluster.uri(0)).await;
    let channel = on_1.create_channel().await.unwrap();
    declare(&channel, "dead", numbered::quorum_args()).await;
    declare(&channel, "work", work_args()).await;
    wait_for_queue(&cluster.uri(1), "work").await;
    wait_for_queue(&cluster.uri(2), "dead").await;
    let (_publisher, confirming) = numbered::confirming(&cluster.uri(0)).await;
    assert_eq!(publish(&confirming, "work", 0..2, WAIT).await.len(), 2);

    // On node 2: "0" rejected; "1" returned twice, one more than its limit.
    let on_2 = connect(&cluster.uri(1)).await;
    let worker = on_2.create_channel().await.unwrap();
    let first = get(&worker, "work").await;
    assert_eq!(first.delivery.data, b"0");
    first
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    for _ in 0..2 {
        let again = get(&worker, "work").await;
        assert_eq!(again.delivery.data, b"1");
        again
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
    }

    // Both reach "dead", read on node 3, once each.
    let on_3 = connect(&cluster.uri(2)).await;
    let reader = on_3.create_channel().await.unwrap();
    let rejected = get(&reader, "dead").await;
    assert_eq!(rejected.delivery.data, b"0");
    assert_eq!(death_reason(&rejected), "rejected");
    let over = get(&reader, "dead").await;
    assert_eq!(over.delivery.data, b"1", "{}", cluster.logs());
    assert_eq!(death_reason(&over), "delivery_limit");
    for got in [rejected, over] {
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nothing = reader
        .basic_get("dead".into(), BasicGetOptions::default())
        .await
        .unwrap();
    assert!(nothing.is_none(), "a message was dead-lettered twice");
    let work = worker
        .basic_get("work".into(), BasicGetOptions::default())
        .await
        .unwrap();
    assert!(
        work.is_none(),
        "the work queue kept a dead-lettered message"
    );
}

//! Dead-lettering and limits of quorum queues on three real `warren` processes (issue 22): a
//! message rejected without requeue, and one returned more often than `x-delivery-limit`, go to
//! the queue's dead-letter exchange once, with RabbitMQ's `x-death` reasons (`rejected`,
//! `delivery_limit`), from whichever node the consumer was on; `x-message-ttl` expires waiting
//! messages (`expired`), `x-max-length` drops the oldest (`maxlen`) or, with `x-overflow:
//! reject-publish`, nacks publishes to a full queue.

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

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A quorum queue's arguments: dead letters to the default exchange, routing key `to`, and
/// `more`.
fn dead_lettering_to(to: &str, more: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = numbered::quorum_args();
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(to));
    for (key, value) in more {
        args.insert((*key).into(), value.clone());
    }
    args
}

fn work_args() -> FieldTable {
    dead_lettering_to("dead", &[("x-delivery-limit", AMQPValue::LongInt(1))])
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

/// The bodies of `queue`'s messages through `channel` (each acked) with their death reasons,
/// until none comes for a second.
async fn take_all(channel: &Channel, queue: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) {
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        match message {
            Some(message) => {
                let body = String::from_utf8_lossy(&message.delivery.data).into_owned();
                let reason = match message.delivery.properties.headers() {
                    Some(_) => death_reason(&message),
                    None => String::new(),
                };
                got.push((body, reason));
                quiet = Instant::now();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_and_length_limits_apply_on_every_node() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start("quorum-limits");
    let on_1 = connect(&cluster.uri(0)).await;
    let channel = on_1.create_channel().await.unwrap();
    declare(&channel, "expired", numbered::quorum_args()).await;
    declare(&channel, "maxlen", numbered::quorum_args()).await;
    let ttl = dead_lettering_to("expired", &[("x-message-ttl", AMQPValue::LongInt(300))]);
    declare(&channel, "short", ttl).await;
    let capped = dead_lettering_to("maxlen", &[("x-max-length", AMQPValue::LongInt(2))]);
    declare(&channel, "capped", capped).await;
    let full = [
        ("x-max-length", AMQPValue::LongInt(1)),
        ("x-overflow", text("reject-publish")),
    ];
    declare(&channel, "full", dead_lettering_to("maxlen", &full)).await;
    for queue in ["short", "capped", "full", "expired", "maxlen"] {
        wait_for_queue(&cluster.uri(1), queue).await;
    }

    // Published through node 2, confirmed; read on node 3.
    let (_publisher, confirming) = numbered::confirming(&cluster.uri(1)).await;
    assert_eq!(publish(&confirming, "short", 0..3, WAIT).await.len(), 3);
    assert_eq!(publish(&confirming, "capped", 0..5, WAIT).await.len(), 5);
    assert_eq!(publish(&confirming, "full", 0..1, WAIT).await, vec![0]);
    assert_eq!(
        publish(&confirming, "full", 1..2, WAIT).await,
        Vec::<u64>::new(),
        "a publish to a full reject-publish queue is nacked"
    );

    let on_3 = connect(&cluster.uri(2)).await;
    let reader = on_3.create_channel().await.unwrap();
    let expired = take_all(&reader, "expired").await;
    assert_eq!(
        expired,
        pairs(&[("0", "expired"), ("1", "expired"), ("2", "expired")]),
        "{}",
        cluster.logs()
    );
    assert!(take_all(&reader, "short").await.is_empty());
    assert_eq!(
        take_all(&reader, "capped").await,
        pairs(&[("3", ""), ("4", "")])
    );
    assert_eq!(
        take_all(&reader, "maxlen").await,
        pairs(&[("0", "maxlen"), ("1", "maxlen"), ("2", "maxlen")])
    );
    assert_eq!(take_all(&reader, "full").await, pairs(&[("0", "")]));
}

/// Waits until node 1's replica counts `count` consumers of `queue` (on every node).
async fn wait_for_consumers(cluster: &Cluster, queue: &str, count: usize) {
    let started = Instant::now();
    loop {
        let listed = cluster.ctl(0, &["--json", "list", "queues"]);
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
        let consumers = listed.as_array().and_then(|queues| {
            let found = queues.iter().find(|q| q["name"] == queue)?;
            found["consumers"].as_u64()
        });
        if consumers == Some(count as u64) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{queue}: {consumers:?} consumers, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether node `node` has `queue` (a passive declaration succeeds).
async fn has_queue(cluster: &Cluster, node: usize, queue: &str) -> bool {
    let connection = connect(&cluster.uri(node)).await;
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = connection.close(200, "bye".into()).await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_and_x_expires_hold_across_nodes() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start("quorum-sac-expires");
    let on_1 = connect(&cluster.uri(0)).await;
    let channel = on_1.create_channel().await.unwrap();
    let mut sac = numbered::quorum_args();
    sac.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    declare(&channel, "single", sac).await;
    wait_for_queue(&cluster.uri(2), "single").await;

    // A consumer on node 2 first, then one on node 3: only node 2's gets messages.
    let mut consumers = Vec::new();
    for node in [1, 2] {
        let connection = connect(&cluster.uri(node)).await;
        let channel = connection.create_channel().await.unwrap();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let deliveries = common::consume(&channel, "single", no_ack).await;
        consumers.push((connection, channel, deliveries));
        // The queue has taken this consumer (its checkout committed) before the next comes.
        wait_for_consumers(&cluster, "single", consumers.len()).await;
    }
    let (_publisher, confirming) = numbered::confirming(&cluster.uri(0)).await;
    assert_eq!(publish(&confirming, "single", 0..20, WAIT).await.len(), 20);
    assert_eq!(consumers[0].2.take(20).await.len(), 20);
    consumers[1].2.expect_quiet().await;
    // The first goes: the second takes over.
    let (gone, _, _) = consumers.remove(0);
    let _ = gone.close(200, "bye".into()).await;
    assert_eq!(publish(&confirming, "single", 20..30, WAIT).await.len(), 10);
    let bodies: Vec<Vec<u8>> = consumers[0]
        .2
        .take(10)
        .await
        .into_iter()
        .map(|d| d.data)
        .collect();
    let expected: Vec<Vec<u8>> = (20..30).map(|n: u64| n.to_string().into_bytes()).collect();
    assert_eq!(bodies, expected, "the second took over");

    // x-expires: unused for 1.5 s, the queue is gone on every node.
    let mut expiring = numbered::quorum_args();
    expiring.insert("x-expires".into(), AMQPValue::LongInt(1500));
    declare(&channel, "brief", expiring).await;
    wait_for_queue(&cluster.uri(1), "brief").await;
    let started = Instant::now();
    for node in 0..3 {
        while has_queue(&cluster, node, "brief").await {
            assert!(
                started.elapsed() < WAIT,
                "node {}: the unused queue is still there\n{}",
                node + 1,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "deleted too soon"
    );
}

//! Clients of the replicated-queue tests: messages whose bodies are their sequence numbers,
//! published with confirms and consumed with acks, and `warren ctl` against a node's management
//! API. Every wait is bounded.
//!
//! Included with `#[path = "common/numbered.rs"] mod numbered;` (beside `mod common;`).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn connect(uri: &str) -> Connection {
    tokio::time::timeout(
        WAIT,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// A connection and a channel in confirm mode on it (keep both).
pub async fn confirming(uri: &str) -> (Connection, Channel) {
    let connection = connect(uri).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

/// `x-queue-type: quorum`.
pub fn quorum_args() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

/// Declares the durable quorum queue `queue` through `uri`'s node.
pub async fn declare_quorum(uri: &str, queue: &str) -> lapin::Queue {
    let connection = connect(uri).await;
    let channel = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = tokio::time::timeout(
        WAIT,
        channel.queue_declare(queue.into(), durable, quorum_args()),
    )
    .await
    .expect("declare in time")
    .expect("queue.declare of a quorum queue");
    let _ = connection.close(200, "bye".into()).await;
    declared
}

/// Publishes each number (persistent) and waits up to `within` for all the confirms; the
/// numbers the broker acked.
pub async fn publish(
    channel: &Channel,
    queue: &str,
    numbers: std::ops::Range<u64>,
    within: Duration,
) -> Vec<u64> {
    let mut pending = Vec::new();
    for n in numbers {
        let body = n.to_string();
        let publish = channel.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        );
        match publish.await {
            Ok(confirm) => pending.push((n, confirm)),
            Err(_) => break,
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut acked = Vec::new();
    for (n, confirm) in pending {
        if let Ok(Ok(Confirmation::Ack(_))) = tokio::time::timeout_at(deadline, confirm).await {
            acked.push(n);
        }
    }
    acked
}

/// Consumes (prefetch 100, acking each) until every number of `until` has come (with `None`:
/// until none comes), or nothing came for `quiet`; the numbers, in the order received.
pub async fn drain(
    uri: &str,
    queue: &str,
    quiet: Duration,
    until: Option<&BTreeSet<u64>>,
) -> Vec<u64> {
    let connection = connect(uri).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume on a quorum queue");
    let mut deliveries = super::common::Deliveries::new(consumer);
    let mut missing = until.cloned();
    let mut got = Vec::new();
    while missing.as_ref().is_none_or(|m| !m.is_empty()) {
        let Some(Ok(Some(delivery))) = deliveries.event_within(quiet).await else {
            break;
        };
        let n: u64 = std::str::from_utf8(&delivery.data)
            .unwrap()
            .parse()
            .unwrap();
        if let Some(missing) = missing.as_mut() {
            missing.remove(&n);
        }
        got.push(n);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = connection.close(200, "bye".into()).await;
    got
}

/// `warren ctl --url URL --user USER --password PASSWORD ARGS`, which must succeed: its stdout.
pub fn ctl(url: &str, (user, password): (&str, &str), args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["ctl", "--url", url, "--user", user, "--password", password])
        .args(args)
        .env_remove("WARREN_URL")
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .output()
        .expect("run warren ctl");
    assert!(
        output.status.success(),
        "warren ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `warren ctl cluster status --json`.
pub fn cluster_status(url: &str, login: (&str, &str)) -> serde_json::Value {
    serde_json::from_str(&ctl(url, login, &["--json", "cluster", "status"])).expect("JSON")
}

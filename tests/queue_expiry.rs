//! `x-expires` with a real client (lapin): a queue unused for its period (no consumer, no
//! basic.get, no redeclaration, passive ones included; publishing does not count) is deleted,
//! messages and all; a consumer keeps it alive, and the period starts again when the last one
//! goes. Checking whether the queue exists is itself a use, so each test looks once, after
//! waiting out the period (nothing to await: the deletion is silent).
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;

const EXPIRES_MS: i64 = 400;

async fn declare_expiring(connection: &Connection, test: &str) -> String {
    let channel = common::channel(connection).await;
    let name = unique(test);
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(EXPIRES_MS));
    declare_queue_named(&channel, &name, QueueDeclareOptions::default(), arguments).await;
    name
}

/// Whether `name` exists (a passive declare on a channel of its own: a 404 closes it).
async fn exists(connection: &Connection, name: &str) -> bool {
    let channel = common::channel(connection).await;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "queue.declare passive",
        channel.queue_declare(name.into(), options, FieldTable::default()),
    )
    .await
    .is_ok()
}

/// Three periods: long enough for the broker's expiry, checked at most every 100 ms.
const WAIT: Duration = Duration::from_millis(3 * EXPIRES_MS as u64);

#[tokio::test]
async fn an_unused_queue_is_deleted_with_its_messages() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let queue = declare_expiring(&connection, "expires").await;
    let channel = common::channel(&connection).await;
    for i in 0..3 {
        publish(&channel, "", &queue, i.to_string().as_bytes()).await;
    }
    tokio::time::sleep(WAIT).await;
    assert!(!exists(&connection, &queue).await, "expired");
}

#[tokio::test]
async fn each_passive_declaration_renews_the_lease() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let queue = declare_expiring(&connection, "expires_renewed").await;
    let started = Instant::now();
    while started.elapsed() < WAIT {
        assert!(exists(&connection, &queue).await, "renewed by each look");
        tokio::time::sleep(Duration::from_millis(EXPIRES_MS as u64 / 4)).await;
    }
    tokio::time::sleep(WAIT).await;
    assert!(
        !exists(&connection, &queue).await,
        "expired once left alone"
    );
}

#[tokio::test]
async fn a_consumer_keeps_the_queue_alive_until_it_goes() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let queue = declare_expiring(&connection, "expires_consumed").await;
    let channel = common::channel(&connection).await;
    let deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    tokio::time::sleep(WAIT).await;
    assert!(
        exists(&connection, &queue).await,
        "consumed for three periods: still there"
    );
    within(
        "basic.cancel",
        channel.basic_cancel(
            deliveries.consumer().tag().as_str().into(),
            BasicCancelOptions::default(),
        ),
    )
    .await
    .expect("basic.cancel");
    tokio::time::sleep(WAIT).await;
    assert!(
        !exists(&connection, &queue).await,
        "expired after the consumer left"
    );
}

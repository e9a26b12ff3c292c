//! De-duplication (issue 20) with a real client (lapin): a queue or exchange declared with
//! `x-message-deduplication` drops a message whose `x-deduplication-header` (else `message_id`)
//! is in its window of `x-cache-size` keys (for `x-cache-ttl` ms, or the message's own
//! `x-cache-ttl` header), and still confirms it to its publisher, also when the duplicate is
//! pipelined right behind the original; a duplicate is never returned, even if mandatory. Durable
//! windows survive a restart and `kill -9` after the confirm. Invalid arguments are a 406.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use warren_process::{TempDir, WarrenProcess};

fn dedup_args(size: i64, ttl: Option<i64>) -> FieldTable {
    let mut entries = vec![
        ("x-message-deduplication", AMQPValue::Boolean(true)),
        ("x-cache-size", int(size)),
    ];
    if let Some(ttl) = ttl {
        entries.push(("x-cache-ttl", int(ttl)));
    }
    table(&entries)
}

/// An exclusive queue named after `test` with a de-duplication window.
async fn dedup_queue(channel: &Channel, test: &str, size: i64, ttl: Option<i64>) -> String {
    let name = unique(test);
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(channel, &name, options, dedup_args(size, ttl)).await;
    name
}

/// A message keyed by its `x-deduplication-header`.
fn by_header(key: &str) -> BasicProperties {
    BasicProperties::default()
        .with_headers(table(&[("x-deduplication-header", text(key))]))
        .with_delivery_mode(2)
}

fn by_message_id(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(2)
}

/// Publishes every message before awaiting any confirm (the duplicates are pipelined right
/// behind their originals), then asserts that each was acked and none returned.
async fn publish_all(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    messages: Vec<BasicProperties>,
) {
    let mut confirms = Vec::new();
    for (i, properties) in messages.into_iter().enumerate() {
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                i.to_string().as_bytes(),
                properties,
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    for (i, confirm) in confirms.into_iter().enumerate() {
        let confirmation = within("the confirm", confirm).await.expect("confirm");
        assert_eq!(
            confirmation,
            Confirmation::Ack(None),
            "message {i}: acked, never returned"
        );
    }
}

/// The bodies in `queue`, in order (taken with basic.get, acked).
async fn bodies(channel: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(message) = within(
        "basic.get",
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
    }
    out
}

/// The messages every test publishes: duplicates by header and by message id, a message with
/// both (the header wins), and two with no key (never duplicates). Bodies are their indexes.
fn mixed() -> Vec<BasicProperties> {
    vec![
        by_header("a"),                             // 0 passes
        by_header("a"),                             // 1 duplicate, pipelined behind 0
        by_message_id("m"),                         // 2 passes
        by_message_id("m"),                         // 3 duplicate
        by_header("b"),                             // 4 passes
        by_header("b").with_message_id("m".into()), // 5 duplicate of 4 (header first)
        by_header("m"),                             // 6 duplicate of 2: one key space
        BasicProperties::default(),                 // 7 no key: passes
        BasicProperties::default(),                 // 8 no key: passes
        by_header("c"),                             // 9 passes
    ]
}

const MIXED_PASSED: [&str; 6] = ["0", "2", "4", "7", "8", "9"];

#[tokio::test]
async fn an_exchange_drops_duplicates_before_routing_and_confirms_them() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let exchange = unique("dedup-x");
    within(
        "exchange.declare",
        channel.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            dedup_args(100, None),
        ),
    )
    .await
    .expect("exchange.declare");
    let queue = queue_with(&channel, "dedup-x-q", &[]).await;
    bind_queue(&channel, &queue, &exchange, "rk").await;
    publish_all(&channel, &exchange, "rk", mixed()).await;
    assert_eq!(bodies(&channel, &queue).await, MIXED_PASSED);
    // A duplicate that would route nowhere is not returned either.
    publish_all(&channel, &exchange, "nowhere", vec![by_header("a")]).await;
}

#[tokio::test]
async fn a_queue_drops_duplicates_at_enqueue_and_confirms_them() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = dedup_queue(&channel, "dedup-q", 100, None).await;
    let other = queue_with(&channel, "dedup-q-other", &[]).await;
    let fanout = unique("dedup-q-fanout");
    within(
        "exchange.declare",
        channel.exchange_declare(
            fanout.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.declare");
    bind_queue(&channel, &queue, &fanout, "").await;
    bind_queue(&channel, &other, &fanout, "").await;
    publish_all(&channel, &fanout, "", mixed()).await;
    assert_eq!(bodies(&channel, &queue).await, MIXED_PASSED);
    // The queue without de-duplication got every message.
    assert_eq!(bodies(&channel, &other).await.len(), mixed().len());
}

#[tokio::test]
async fn eviction_of_the_oldest_key_lets_it_through_again() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = dedup_queue(&channel, "dedup-evict", 2, None).await;
    let keys = ["a", "b", "c", "c", "a", "b"];
    publish_all(
        &channel,
        "",
        &queue,
        keys.iter().map(|k| by_header(k)).collect(),
    )
    .await;
    // a is evicted by c, so a passes again; then b (evicted by a) passes too.
    assert_eq!(bodies(&channel, &queue).await, ["0", "1", "2", "4", "5"]);
}

#[tokio::test]
async fn keys_expire_after_the_cache_ttl_or_the_message_s_own() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = dedup_queue(&channel, "dedup-ttl", 100, Some(300)).await;
    let long = by_header("long").with_headers(table(&[
        ("x-deduplication-header", text("long")),
        ("x-cache-ttl", int(60_000)),
    ]));
    publish_all(
        &channel,
        "",
        &queue,
        vec![by_header("a"), by_header("a"), long.clone()],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(&channel, "", &queue, vec![by_header("a"), long]).await;
    // "a" expired after 300 ms; "long" asked for a minute.
    assert_eq!(bodies(&channel, &queue).await, ["0", "2", "0"]);
}

#[tokio::test]
async fn invalid_or_inequivalent_arguments_are_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let cases = [
        (
            table(&[("x-message-deduplication", AMQPValue::Boolean(true))]),
            "x-cache-size",
        ),
        (
            table(&[
                ("x-message-deduplication", AMQPValue::Boolean(true)),
                ("x-cache-size", int(0)),
            ]),
            "x-cache-size",
        ),
        (
            table(&[
                ("x-message-deduplication", AMQPValue::Boolean(true)),
                ("x-cache-size", text("ten")),
            ]),
            "x-cache-size",
        ),
        (dedup_args(10, Some(-5)), "x-cache-ttl"),
    ];
    for (arguments, arg) in cases {
        let channel = common::channel(&connection).await;
        let name = unique("dedup-bad");
        let text = expect_channel_closed(
            &connection,
            &channel,
            channel.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                arguments.clone(),
            ),
            406,
        )
        .await;
        assert!(
            text.contains(&format!("invalid arg '{arg}' for queue '{name}'")),
            "{text}"
        );
        let channel = common::channel(&connection).await;
        let text = expect_channel_closed(
            &connection,
            &channel,
            channel.exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                arguments,
            ),
            406,
        )
        .await;
        assert!(
            text.contains(&format!("invalid arg '{arg}' for exchange '{name}'")),
            "{text}"
        );
    }
    // Redeclared with another cache size: inequivalent.
    let channel = common::channel(&connection).await;
    let name = unique("dedup-redeclare");
    declare_queue_named(
        &channel,
        &name,
        QueueDeclareOptions::default(),
        dedup_args(10, None),
    )
    .await;
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            dedup_args(20, None),
        ),
        406,
    )
    .await;
    assert!(text.contains("inequivalent arg 'x-cache-size'"), "{text}");
    let channel = common::channel(&connection).await;
    delete_queue(&channel, &name).await;
}

// --- Durable windows across restarts, with the real binary (so that it can be killed). ---

fn uri(warren: &WarrenProcess) -> String {
    format!("amqp://guest:guest@{}/%2f", warren.addr)
}

const X: &str = "dedup-durable-x";
const Q: &str = "dedup-durable-q";
const PLAIN: &str = "dedup-durable-plain";

/// Declares the durable exchange (bound to `PLAIN`) and the durable de-duplicating queue.
async fn durable_setup(uri: &str) -> (Connection, Channel) {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            X.into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            dedup_args(1000, None),
        )
        .await
        .expect("exchange.declare");
    channel
        .queue_declare(PLAIN.into(), durable, FieldTable::default())
        .await
        .expect("queue.declare");
    channel
        .queue_declare(Q.into(), durable, dedup_args(1000, None))
        .await
        .expect("queue.declare");
    channel
        .queue_bind(
            PLAIN.into(),
            X.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
    (connection, channel)
}

/// Publishes `keys` through the exchange and straight to the queue, confirmed.
async fn publish_keys(channel: &Channel, keys: &[&str]) {
    publish_all(channel, X, "", keys.iter().map(|k| by_header(k)).collect()).await;
    publish_all(
        channel,
        "",
        Q,
        keys.iter().map(|k| by_message_id(k)).collect(),
    )
    .await;
}

async fn counts(channel: &Channel) -> (u32, u32) {
    (
        queue_counts(channel, PLAIN).await.0,
        queue_counts(channel, Q).await.0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_windows_survive_a_restart_and_kill_9_after_the_confirm() {
    let dir = TempDir::new("dedup-durable");
    let warren = WarrenProcess::start_with_management(dir.path());
    let (connection, channel) = durable_setup(&uri(&warren)).await;
    publish_keys(&channel, &["a", "b", "a"]).await;
    assert_eq!(counts(&channel).await, (2, 2));
    drop(connection);
    assert!(warren.stop().await, "clean stop");

    // Restarted: a and b are still in both windows.
    let warren = WarrenProcess::start_with_management(dir.path());
    let (connection, channel) = durable_setup(&uri(&warren)).await;
    assert_eq!(counts(&channel).await, (2, 2));
    publish_keys(&channel, &["a", "b", "c"]).await;
    assert_eq!(counts(&channel).await, (3, 3));
    // Confirmed, then killed at once: c and d must still be seen after the restart.
    publish_keys(&channel, &["d"]).await;
    drop(connection);
    drop(warren); // SIGKILL

    let warren = WarrenProcess::start_with_management(dir.path());
    let (connection, channel) = durable_setup(&uri(&warren)).await;
    assert_eq!(counts(&channel).await, (4, 4));
    publish_keys(&channel, &["a", "c", "d", "e"]).await;
    assert_eq!(counts(&channel).await, (5, 5));

    // Deleting and redeclaring starts with an empty window.
    channel
        .exchange_delete(X.into(), ExchangeDeleteOptions::default())
        .await
        .expect("exchange.delete");
    channel
        .queue_delete(Q.into(), QueueDeleteOptions::default())
        .await
        .expect("queue.delete");
    drop(connection);
    let (connection, channel) = durable_setup(&uri(&warren)).await;
    publish_keys(&channel, &["a"]).await;
    assert_eq!(counts(&channel).await, (6, 1));
    drop(connection);
    assert!(warren.stop().await, "clean stop");
}

//! Delayed messages (issue 20): the `x-delayed-message` exchange type of RabbitMQ's
//! delayed-message plugin, with a real client (lapin). A message with an `x-delay` header is held
//! that many milliseconds, then routed by the exchange's `x-delayed-type`; `mandatory` is
//! honoured when it fires; confirms come when it is held (synced for a persistent message to a
//! durable exchange); held persistent messages survive a restart and `kill -9`.
//!
//! The errors are the plugin's: a missing `x-delayed-type` is 406, an unknown one 503.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use warren_process::{TempDir, WarrenProcess};

fn delayed() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".into())
}

fn delayed_type(kind: &str) -> FieldTable {
    table(&[("x-delayed-type", text(kind))])
}

/// Properties with `x-delay: ms`.
fn delay(ms: i64) -> BasicProperties {
    BasicProperties::default().with_headers(table(&[("x-delay", int(ms))]))
}

/// A delayed exchange routing as `kind`, and an exclusive queue bound to it with `key`.
async fn delayed_setup(channel: &Channel, test: &str, kind: &str, key: &str) -> (String, String) {
    let exchange = unique(test);
    declare_exchange_named(channel, &exchange, delayed(), delayed_type(kind)).await;
    let queue = queue_with(channel, test, &[]).await;
    bind_queue(channel, &queue, &exchange, key).await;
    (exchange, queue)
}

fn body_text(delivery: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&delivery.data).into_owned()
}

#[tokio::test]
async fn a_delayed_message_is_routed_after_its_delay_marked_with_minus_the_delay() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let (exchange, queue) = delayed_setup(&channel, "after", "direct", "k").await;
    let sent = Instant::now();
    publish_with(&channel, &exchange, "k", b"later", delay(400)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        queue_counts(&channel, &queue).await.0,
        0,
        "held, not queued"
    );
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let delivery = deliveries.next().await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "fired after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2_000),
        "fired after {waited:?}"
    );
    assert_eq!(body_text(&delivery), "later");
    assert_eq!(delivery.exchange.as_str(), exchange);
    assert_eq!(delivery.routing_key.as_str(), "k");
    let headers = delivery.properties.headers().clone().expect("headers");
    let mark = headers.inner().get("x-delay").expect("x-delay");
    assert!(
        matches!(mark, AMQPValue::LongInt(-400)),
        "x-delay on delivery: {mark:?}"
    );
}

#[tokio::test]
async fn messages_fire_in_due_order_and_without_a_positive_x_delay_at_once() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let (exchange, queue) = delayed_setup(&channel, "order", "fanout", "").await;
    for (name, ms) in [("d900", 900), ("d300", 300), ("d600", 600), ("d301", 301)] {
        publish_with(&channel, &exchange, "any", name.as_bytes(), delay(ms)).await;
    }
    publish_with(
        &channel,
        &exchange,
        "any",
        b"none",
        BasicProperties::default(),
    )
    .await;
    publish_with(&channel, &exchange, "any", b"zero", delay(0)).await;
    publish_with(&channel, &exchange, "any", b"negative", delay(-50)).await;
    let text_delay = BasicProperties::default().with_headers(table(&[("x-delay", text("5"))]));
    publish_with(&channel, &exchange, "any", b"text5", text_delay).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got: Vec<String> = deliveries.take(8).await.iter().map(body_text).collect();
    assert_eq!(
        got,
        ["none", "zero", "negative", "text5", "d300", "d301", "d600", "d900"]
    );
}

#[tokio::test]
async fn the_delayed_type_routes_topic_and_headers() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let (exchange, queue) = delayed_setup(&channel, "topic", "topic", "a.*").await;
    publish_with(&channel, &exchange, "a.b", b"match", delay(100)).await;
    publish_with(&channel, &exchange, "b.b", b"no-match", delay(50)).await;
    publish_with(&channel, &exchange, "a.c", b"match2", delay(150)).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got: Vec<String> = deliveries.take(2).await.iter().map(body_text).collect();
    assert_eq!(got, ["match", "match2"]);
    deliveries.expect_quiet().await;

    let exchange = unique("headers");
    declare_exchange_named(&channel, &exchange, delayed(), delayed_type("headers")).await;
    let queue = queue_with(&channel, "headers", &[]).await;
    let rule = table(&[("x-match", text("all")), ("kind", text("yes"))]);
    bind_queue_with(&channel, &queue, &exchange, "", rule).await;
    let yes = table(&[("x-delay", int(80)), ("kind", text("yes"))]);
    let no = table(&[("x-delay", int(40)), ("kind", text("no"))]);
    let properties = |headers| BasicProperties::default().with_headers(headers);
    publish_with(&channel, &exchange, "", b"no", properties(no)).await;
    publish_with(&channel, &exchange, "", b"yes", properties(yes)).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    assert_eq!(body_text(&deliveries.next().await), "yes");
    deliveries.expect_quiet().await;
}

/// The plugin's texts: `PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an
/// existing exchange type` (406, the channel), `COMMAND_INVALID - unknown exchange type 'x'`
/// (503, the connection).
#[tokio::test]
async fn declaring_without_a_known_delayed_type_is_refused() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let declare = |channel: &Channel, name: String, arguments: FieldTable| {
        let channel = channel.clone();
        async move {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    delayed(),
                    ExchangeDeclareOptions::default(),
                    arguments,
                )
                .await
        }
    };
    let missing = declare(&channel, unique("missing"), FieldTable::default());
    let text = expect_channel_closed(&connection, &channel, missing, 406).await;
    assert_eq!(
        text,
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
    );
    let channel = common::channel(&connection).await;
    let wrong = table(&[("x-delayed-type", int(1))]);
    let not_text = declare(&channel, unique("not-text"), wrong);
    expect_channel_closed(&connection, &channel, not_text, 406).await;

    let channel = common::channel(&connection).await;
    let name = unique("redeclare");
    declare_exchange_named(&channel, &name, delayed(), delayed_type("direct")).await;
    declare_exchange_named(&channel, &name, delayed(), delayed_type("direct")).await;
    let other = declare(&channel, name.clone(), delayed_type("topic"));
    let text = expect_channel_closed(&connection, &channel, other, 406).await;
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-delayed-type' for exchange '{name}' in \
             vhost '/': received 'topic' but current is 'direct'"
        )
    );

    let channel = common::channel(&connection).await;
    let unknown = declare(&channel, unique("unknown"), delayed_type("drect"));
    let text = expect_connection_closed(&connection, unknown, 503).await;
    assert_eq!(text, "COMMAND_INVALID - unknown exchange type 'drect'");
}

/// Publishes with `mandatory` on a confirming channel and waits for the confirm; returns the
/// messages lapin hands back with it (a `basic.return` comes with the next confirm).
async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Vec<lapin::message::BasicReturnMessage> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
    match within("confirm", confirm).await.expect("confirm") {
        Confirmation::Ack(returned) => returned.into_iter().collect(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_mandatory_message_unroutable_when_it_fires_is_returned_then() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let (exchange, queue) = delayed_setup(&channel, "mandatory", "direct", "bound").await;
    // Held: acked at once, nothing returned yet, even though no queue is bound to its key.
    let returned = publish_mandatory(&channel, &exchange, "unbound", b"lost", delay(300)).await;
    assert!(
        returned.is_empty(),
        "returned before it fired: {returned:?}"
    );
    let returned = publish_mandatory(&channel, &exchange, "bound", b"kept", delay(300)).await;
    assert!(returned.is_empty());
    // lapin hands a return over with the next confirm: probe until it comes (the delay fires
    // 300 ms after the publish, later on a loaded machine).
    let mut probes = 0;
    let returned = within("the return", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            probes += 1;
            let returned =
                publish_mandatory(&channel, "", &queue, b"probe", BasicProperties::default()).await;
            if !returned.is_empty() {
                return returned;
            }
        }
    })
    .await;
    assert_eq!(returned.len(), 1, "{returned:?}");
    let message = &returned[0];
    assert_eq!(message.reply_code, 312);
    assert_eq!(message.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(message.delivery.routing_key.as_str(), "unbound");
    assert_eq!(&message.delivery.data[..], b"lost");
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got: Vec<String> = deliveries
        .take(1 + probes)
        .await
        .iter()
        .map(body_text)
        .collect();
    assert_eq!(got.iter().filter(|b| *b == "kept").count(), 1, "{got:?}");
    deliveries.expect_quiet().await;
}

#[tokio::test]
async fn confirms_come_when_the_message_is_held_not_when_it_fires() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let exchange = unique("confirm");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "exchange.declare",
        channel.exchange_declare(
            exchange.as_str().into(),
            delayed(),
            durable,
            delayed_type("direct"),
        ),
    )
    .await
    .expect("exchange.declare");
    let started = Instant::now();
    for i in 0..50 {
        let properties = delay(60_000).with_delivery_mode(2);
        let confirm = publish_with(
            &channel,
            &exchange,
            "k",
            format!("{i}").as_bytes(),
            properties,
        )
        .await;
        let confirmation = within("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    within(
        "exchange.delete",
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()),
    )
    .await
    .expect("exchange.delete");
}

// ---------------------------------------------------------------------------------------------
// Restarts and crashes, with the real binary.

const EXCHANGE: &str = "delayed-durable";
const QUEUE: &str = "delayed-durable-q";

async fn connect_process(warren: &WarrenProcess) -> (Connection, Channel) {
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    (connection, channel)
}

/// A durable delayed exchange and a durable queue bound to it.
async fn durable_setup(channel: &Channel) {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "exchange.declare",
        channel.exchange_declare(EXCHANGE.into(), delayed(), durable, delayed_type("direct")),
    )
    .await
    .expect("exchange.declare");
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(channel, QUEUE, options, FieldTable::default()).await;
    bind_queue(channel, QUEUE, EXCHANGE, "k").await;
}

/// Publishes `count` persistent messages (bodies `0..count`) with delays from `base` ms
/// upwards, each confirmed; returns when every confirm has come.
async fn publish_confirmed(channel: &Channel, count: u64, base: i64) {
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..count {
        let properties = delay(base + (i as i64 * 7) % 500).with_delivery_mode(2);
        confirms
            .push(publish_with(channel, EXCHANGE, "k", i.to_string().as_bytes(), properties).await);
    }
    for confirm in confirms {
        let confirmation = within("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
}

/// Consumes until `count` distinct bodies have come (duplicates allowed: at least once).
async fn drain_distinct(channel: &Channel, count: usize) -> BTreeSet<u64> {
    let mut deliveries = consume(channel, QUEUE, BasicConsumeOptions::default()).await;
    let mut seen = BTreeSet::new();
    while seen.len() < count {
        let delivery = deliveries.next().await;
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
        seen.insert(body_text(&delivery).parse::<u64>().expect("a number"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_persistent_messages_survive_a_restart_and_fire_after_it() {
    let dir = TempDir::new("delayed-restart");
    let warren = WarrenProcess::start_with_management(dir.path());
    let (connection, channel) = connect_process(&warren).await;
    durable_setup(&channel).await;
    publish_confirmed(&channel, 200, 4_000).await;
    // Transient: held too, but gone with the restart.
    publish_with(&channel, EXCHANGE, "k", b"999999", delay(4_000)).await;
    let _ = connection.close(200, "bye".into()).await;
    assert!(warren.stop().await, "clean stop");

    let warren = WarrenProcess::start_with_management(dir.path());
    warren.wait_for_log("recovered delayed messages", 1).await;
    let (_connection, channel) = connect_process(&warren).await;
    assert_eq!(queue_counts(&channel, QUEUE).await.0, 0, "not due yet");
    let seen = within("the held messages", drain_distinct(&channel, 200)).await;
    assert_eq!(seen, (0..200).collect::<BTreeSet<u64>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue_counts(&channel, QUEUE).await.0,
        0,
        "the transient one is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_held_messages_survive_kill_9() {
    let dir = TempDir::new("delayed-kill");
    let warren = WarrenProcess::start_with_management(dir.path());
    let (_connection, channel) = connect_process(&warren).await;
    durable_setup(&channel).await;
    publish_confirmed(&channel, 1_000, 1_500).await;
    drop(warren); // SIGKILL

    let warren = WarrenProcess::start_with_management(dir.path());
    let (_connection, channel) = connect_process(&warren).await;
    let seen = within("the held messages", drain_distinct(&channel, 1_000)).await;
    assert_eq!(seen.len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_firing_at_the_kill_come_back_at_least_once() {
    let dir = TempDir::new("delayed-kill-firing");
    let warren = WarrenProcess::start_with_management(dir.path());
    let (_connection, channel) = connect_process(&warren).await;
    durable_setup(&channel).await;
    publish_confirmed(&channel, 2_000, 300).await;
    // Killed while the delays fire (300 to 800 ms after their publish).
    tokio::time::sleep(Duration::from_millis(450)).await;
    drop(warren);

    let warren = WarrenProcess::start_with_management(dir.path());
    let (_connection, channel) = connect_process(&warren).await;
    let seen = within("the held messages", drain_distinct(&channel, 2_000)).await;
    assert_eq!(seen.len(), 2_000);
}

#[tokio::test]
async fn a_dead_letter_exchange_of_the_delayed_type_holds_the_message_for_its_delay() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    // The plugin's retry pattern: reject into a delayed dead-letter exchange.
    let (exchange, target) = delayed_setup(&channel, "dlx-delayed", "fanout", "").await;
    let source = queue_with(
        &channel,
        "dlx-source",
        &[("x-dead-letter-exchange", text(&exchange))],
    )
    .await;
    publish_with(&channel, "", &source, b"again", delay(400)).await;
    let mut deliveries = consume(&channel, &source, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    let rejected = Instant::now();
    within(
        "basic.reject",
        first.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("reject");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        queue_counts(&channel, &target).await.0,
        0,
        "held, not routed"
    );
    let mut later = consume(&channel, &target, BasicConsumeOptions::default()).await;
    let delivery = later.next().await;
    let waited = rejected.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "fired after {waited:?}"
    );
    assert_eq!(body_text(&delivery), "again");
    assert_eq!(
        delivery.exchange.as_str(),
        exchange,
        "through the dead-letter exchange"
    );
    let headers = delivery.properties.headers().clone().expect("headers");
    assert!(
        headers.inner().contains_key("x-death"),
        "dead-lettered: {headers:?}"
    );
}

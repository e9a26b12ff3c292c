//! The unacked (consumer) timeout with a real client (lapin), as Celery-style consumers need it:
//! a delivery held past its timeout is taken back but never handed to the channel that still
//! holds it (it waits for a consumer elsewhere, and the holder's late ack still settles it);
//! `x-consumer-timeout` per consumer; the `cancel` action; and `basic.qos` with `global=false`
//! reaching the channel's running consumers.
//!
//! These are Warren's own behaviours (RabbitMQ 3.10 closes the channel on a timeout and keeps a
//! running consumer's prefetch), so every test skips itself against an external broker.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use warren::{ServerOptions, UnackedTimeoutAction};
use warren_process::{TempDir, WarrenProcess};

/// Longer than every timeout these tests set: what was to happen has happened by then.
const PAST_TIMEOUT: Duration = Duration::from_millis(900);

fn timeout_args(ms: i64) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(ms));
    arguments
}

/// A queue whose deliveries time out after `ms` (none: the server default).
async fn timed_queue(channel: &Channel, test: &str, ms: Option<i64>) -> String {
    let queue = unique(test);
    let arguments = ms.map(timeout_args).unwrap_or_default();
    declare_queue_named(channel, &queue, QueueDeclareOptions::default(), arguments).await;
    queue
}

/// A manual-ack consumer with the given consume arguments.
async fn consume_with(channel: &Channel, queue: &str, arguments: FieldTable) -> Deliveries {
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        ),
    )
    .await
    .expect("basic.consume");
    Deliveries::new(consumer)
}

/// Nothing arrives on `deliveries` for `period`.
async fn quiet_for(deliveries: &mut Deliveries, period: Duration) {
    if let Some(event) = deliveries.event_within(period).await {
        panic!("expected nothing for {period:?}, got {event:?}");
    }
}

#[tokio::test]
async fn a_timed_out_delivery_never_goes_back_to_the_channel_that_holds_it() {
    if skip_if_external("Warren's unacked-timeout redelivery") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = timed_queue(&channel, "held_eta", Some(300)).await;
    let worker = common::channel(&connect(&broker).await).await;
    let mut deliveries = consume(&worker, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"eta task").await;
    let held = deliveries.next().await;

    // Timed out (three times over) and taken back, but the only consumer is on the channel
    // that still holds it: it waits, counted as ready, instead of running again.
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;
    assert_eq!(queue_counts(&channel, &queue).await, (1, 1));

    // The task ran once; its late ack settles the waiting message.
    ack(&worker, held.delivery_tag).await;
    assert_channel_open(&worker).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;
    // The channel goes on being served.
    publish(&channel, "", &queue, b"next").await;
    let next = deliveries.next().await;
    assert_eq!((body(&next).as_str(), next.redelivered), ("next", false));
    ack(&worker, next.delivery_tag).await;
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn a_consumer_on_another_channel_gets_it_and_the_holders_late_ack_is_ignored() {
    if skip_if_external("Warren's unacked-timeout redelivery") {
        return;
    }
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = timed_queue(&channel, "elsewhere", Some(300)).await;
    let holder = common::channel(&connection).await;
    let mut held_deliveries = consume(&holder, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"job").await;
    let held = held_deliveries.next().await;
    quiet_for(&mut held_deliveries, PAST_TIMEOUT).await;

    // Another channel, even of the same connection, is another consumer.
    let other = common::channel(&connection).await;
    let mut other_deliveries = consume(&other, &queue, BasicConsumeOptions::default()).await;
    let again = other_deliveries.next().await;
    assert_eq!((body(&again).as_str(), again.redelivered), ("job", true));
    ack(&holder, held.delivery_tag).await;
    assert_channel_open(&holder).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 2));
    ack(&other, again.delivery_tag).await;
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn late_settles_of_a_timed_out_delivery_requeue_or_dead_letter_it() {
    if skip_if_external("Warren's unacked-timeout redelivery") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let dead = declare_queue(&channel, "timeout_dlq", QueueDeclareOptions::default()).await;
    let queue = unique("late_settles");
    let mut arguments = timeout_args(300);
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    declare_queue_named(&channel, &queue, QueueDeclareOptions::default(), arguments).await;
    let worker = common::channel(&connect(&broker).await).await;
    let mut deliveries = consume(&worker, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"retry me").await;
    let first = deliveries.next().await;
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;

    // A late nack with requeue gives it back to anyone, the holder included.
    within(
        "basic.nack",
        worker.basic_nack(
            first.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        ),
    )
    .await
    .expect("basic.nack");
    let second = deliveries.next().await;
    assert_eq!(
        (body(&second).as_str(), second.redelivered),
        ("retry me", true)
    );
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;

    // A late reject without requeue dead-letters it.
    within(
        "basic.reject",
        worker.basic_reject(second.delivery_tag, BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("basic.reject");
    wait_for_ready(&channel, &dead, 1).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    delete_queue(&channel, &queue).await;
    delete_queue(&channel, &dead).await;
}

#[tokio::test]
async fn closing_the_holding_channel_makes_the_message_ready_for_anyone() {
    if skip_if_external("Warren's unacked-timeout redelivery") {
        return;
    }
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = timed_queue(&channel, "holder_closes", Some(300)).await;
    let holder = common::channel(&connection).await;
    let mut deliveries = consume(&holder, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"orphan").await;
    deliveries.next().await;
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;
    within("channel.close", holder.close(200, "bye".into()))
        .await
        .expect("channel.close");
    assert_eq!(queue_counts(&channel, &queue).await, (1, 0));
    let got = within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("a message");
    assert!(got.delivery.redelivered);
    assert_eq!(got.delivery.data, b"orphan");
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn x_consumer_timeout_on_basic_consume_overrides_the_queue_and_zero_is_never() {
    if skip_if_external("x-consumer-timeout on basic.consume (RabbitMQ 3.12+)") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;

    // The queue says 300 ms; the consumer says never.
    let queue = timed_queue(&channel, "consumer_never", Some(300)).await;
    let worker = common::channel(&connect(&broker).await).await;
    let mut deliveries = consume_with(&worker, &queue, timeout_args(0)).await;
    publish(&channel, "", &queue, b"long task").await;
    let held = deliveries.next().await;
    tokio::time::sleep(PAST_TIMEOUT).await;
    assert_eq!(
        queue_counts(&channel, &queue).await,
        (0, 1),
        "still unacked, not taken back"
    );
    ack(&worker, held.delivery_tag).await;
    delete_queue(&channel, &queue).await;

    // The queue says nothing (the server's 30 minutes); the consumer says 300 ms.
    let queue = timed_queue(&channel, "consumer_short", None).await;
    let mut deliveries = consume_with(&worker, &queue, timeout_args(300)).await;
    publish(&channel, "", &queue, b"short").await;
    let held = deliveries.next().await;
    wait_for_ready(&channel, &queue, 1).await;
    ack(&worker, held.delivery_tag).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn an_invalid_x_consumer_timeout_is_406() {
    if skip_if_external("x-consumer-timeout on basic.consume (RabbitMQ 3.12+)") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = timed_queue(&channel, "bad_timeout", None).await;
    let worker = common::channel(&connect(&broker).await).await;
    let result = within(
        "basic.consume",
        worker.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            timeout_args(-1),
        ),
    )
    .await;
    let text = assert_reply(result, 406);
    assert!(text.contains("invalid arg 'x-consumer-timeout'"), "{text}");
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn the_cancel_action_cancels_the_consumer_and_takes_back_all_it_holds() {
    if skip_if_external("needs ServerOptions::unacked_timeout_action") {
        return;
    }
    let broker = Broker::start_with(ServerOptions {
        unacked_timeout: Duration::from_millis(300),
        unacked_timeout_action: UnackedTimeoutAction::Cancel,
        ..ServerOptions::default()
    })
    .await;
    let (_connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "timeout_cancel", QueueDeclareOptions::default()).await;
    let slow = common::channel(&connect(&broker).await).await;
    let mut slow_deliveries = consume(&slow, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"a").await;
    slow_deliveries.next().await;
    publish(&channel, "", &queue, b"b").await;
    slow_deliveries.next().await;

    // lapin advertises consumer_cancel_notify: it hears basic.cancel; the channel stays open.
    slow_deliveries.expect_cancelled().await;
    assert_channel_open(&slow).await;
    assert_eq!(queue_counts(&channel, &queue).await, (2, 0));
    let other = common::channel(&connect(&broker).await).await;
    let mut other_deliveries = consume(&other, &queue, BasicConsumeOptions::default()).await;
    let got = other_deliveries.take(2).await;
    assert_eq!(
        got.iter()
            .map(|d| (body(d), d.redelivered))
            .collect::<Vec<_>>(),
        [("a".to_owned(), true), ("b".to_owned(), true)]
    );
    for delivery in &got {
        ack(&other, delivery.delivery_tag).await;
    }
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn basic_qos_per_consumer_reaches_the_running_consumers_of_the_channel() {
    if skip_if_external("Warren applies global=false to running consumers (kombu/Celery)") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "qos_raise", QueueDeclareOptions::default()).await;
    publish_numbered(&channel, &queue, 3).await;
    let worker = common::channel(&connect(&broker).await).await;
    qos(&worker, 1).await;
    let mut deliveries = consume(&worker, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    deliveries.expect_quiet().await;

    // As a Celery worker does for each ETA task it holds: raise the prefetch, no ack.
    qos(&worker, 3).await;
    let more = deliveries.take(2).await;
    assert_eq!(numbers(&more), [1, 2]);
    for delivery in std::iter::once(&first).chain(&more) {
        ack(&worker, delivery.delivery_tag).await;
    }
    // And lowering it holds the consumer to the new limit.
    qos(&worker, 1).await;
    publish(&channel, "", &queue, b"3").await;
    publish(&channel, "", &queue, b"4").await;
    let one = deliveries.next().await;
    deliveries.expect_quiet().await;
    ack(&worker, one.delivery_tag).await;
    deliveries.next().await;
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn the_toml_file_sets_a_queues_timeout_and_the_cancel_action() {
    if skip_if_external("starts the real binary with a configuration file") {
        return;
    }
    let data = TempDir::new("consumer-timeout-toml");
    let config = data.path().join("timeouts.toml");
    std::fs::write(
        &config,
        r#"
[server]
unacked_timeout_action = "cancel"

[[queues]]
name = "eta-tasks"
arguments = { "x-consumer-timeout" = 300 }
"#,
    )
    .expect("write the file");
    let warren = WarrenProcess::start(&config, &data.path().join("data"));
    let connection = connect_uri(&format!("amqp://guest:guest@{}/%2f", warren.addr)).await;
    let channel = common::channel(&connection).await;
    let worker = common::channel(&connection).await;
    let mut deliveries = consume(&worker, "eta-tasks", BasicConsumeOptions::default()).await;
    publish(&channel, "", "eta-tasks", b"one").await;
    publish(&channel, "", "eta-tasks", b"two").await;
    deliveries.take(2).await;
    deliveries.expect_cancelled().await;
    assert_channel_open(&worker).await;
    assert_eq!(queue_counts(&channel, "eta-tasks").await, (2, 0));
    // Two deliveries timed out: one line, naming the consumer and the queue.
    let log = warren.wait_for_log("consumer timeout", 1).await;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("consumer timeout"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!("consumer_tag={}", deliveries.tag))
            && lines[0].contains("queue=eta-tasks"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn the_cancel_action_closes_the_channel_of_a_client_that_cannot_hear_a_cancel() {
    if skip_if_external("needs ServerOptions::unacked_timeout_action") {
        return;
    }
    use warren_protocol::spec::{basic, channel as channel_class, AMQPClass};
    let broker = Broker::start_with(ServerOptions {
        unacked_timeout: Duration::from_millis(300),
        unacked_timeout_action: UnackedTimeoutAction::Cancel,
        ..ServerOptions::default()
    })
    .await;
    let (_connection, channel) = open(&broker).await;
    let queue = declare_queue(&channel, "cancel_no_notify", QueueDeclareOptions::default()).await;
    // A raw client advertises no capabilities: no consumer_cancel_notify.
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    let consume = basic::Consume {
        queue: queue.as_str().into(),
        consumer_tag: "no-notify".into(),
        no_local: false,
        no_ack: false,
        exclusive: false,
        nowait: false,
        arguments: Default::default(),
    };
    client
        .send_method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)))
        .await;
    publish(&channel, "", &queue, b"held").await;
    let close = loop {
        match client.recv_method().await {
            Some((1, AMQPClass::Channel(channel_class::AMQPMethod::Close(close)))) => break close,
            Some((_, AMQPClass::Basic(basic::AMQPMethod::Cancel(_)))) => {
                panic!("basic.cancel sent to a client without consumer_cancel_notify")
            }
            Some(_) => continue,
            None => panic!("socket closed without channel.close"),
        }
    };
    assert_eq!(close.reply_code, 406, "{close:?}");
    assert!(close.reply_text.as_str().contains("timed out"), "{close:?}");
    wait_for_ready(&channel, &queue, 1).await;
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn basic_recover_asks_for_a_timed_out_delivery_again() {
    if skip_if_external("Warren's unacked-timeout redelivery") {
        return;
    }
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let queue = timed_queue(&channel, "recover_parked", Some(300)).await;
    let worker = common::channel(&connect(&broker).await).await;
    let mut deliveries = consume(&worker, &queue, BasicConsumeOptions::default()).await;
    publish(&channel, "", &queue, b"again").await;
    deliveries.next().await;
    quiet_for(&mut deliveries, PAST_TIMEOUT).await;
    within(
        "basic.recover",
        worker.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("basic.recover");
    let again = deliveries.next().await;
    assert_eq!((body(&again).as_str(), again.redelivered), ("again", true));
    ack(&worker, again.delivery_tag).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    delete_queue(&channel, &queue).await;
}

//! Message TTL with a real client (lapin): `x-message-ttl` on the queue and the per-message
//! `expiration` property (the lower of the two applies). Expired messages are never delivered;
//! they are dropped, or dead-lettered with reason `expired`, when they reach the head of the
//! queue, and a queue of expired messages empties without a consumer. A TTL of 0 means "to a
//! consumer now, or never". A dead-lettered copy loses `expiration` (kept in its x-death entry as
//! `original-expiration`), and cycles of automatic deaths are broken.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::message::BasicGetMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

fn expiring(milliseconds: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(milliseconds.into())
}

/// Publishes through the default exchange on a confirm-mode channel and waits for the ack: the
/// message is in the queue (or was dropped there) on return.
async fn put(channel: &Channel, queue: &str, body: &str, properties: BasicProperties) {
    publish_confirmed(channel, "", queue, body.as_bytes(), properties).await;
}

/// basic.get (no-ack) once: the body, or None for get-empty.
async fn get_now(channel: &Channel, queue: &str) -> Option<String> {
    within(
        "basic.get",
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"))
    .map(|message| body(&message.delivery))
}

/// basic.get (manual ack), waiting for a message to arrive.
async fn get(channel: &Channel, queue: &str) -> BasicGetMessage {
    within(&format!("a message in {queue}"), async {
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn ready(channel: &Channel, queue: &str) -> u32 {
    queue_counts(channel, queue).await.0
}

/// Waits out `milliseconds`, for what must *not* happen within them (there is nothing to wait
/// for when a message is to stay put).
async fn pause(milliseconds: u64) {
    tokio::time::sleep(Duration::from_millis(milliseconds)).await;
}

fn string(value: Option<&AMQPValue>) -> String {
    match value {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

fn headers(message: &BasicGetMessage) -> FieldTable {
    headers_of(&message.delivery.properties)
}

fn headers_of(properties: &BasicProperties) -> FieldTable {
    properties.headers().clone().expect("headers")
}

/// One x-death entry.
#[derive(Debug, PartialEq)]
struct Death {
    queue: String,
    reason: String,
    count: i64,
    exchange: String,
    routing_keys: Vec<String>,
    original_expiration: Option<String>,
}

fn death(queue: &str, reason: &str, count: i64, exchange: &str, keys: &[&str]) -> Death {
    Death {
        queue: queue.into(),
        reason: reason.into(),
        count,
        exchange: exchange.into(),
        routing_keys: keys.iter().map(|k| k.to_string()).collect(),
        original_expiration: None,
    }
}

impl Death {
    fn original_expiration(mut self, expiration: &str) -> Death {
        self.original_expiration = Some(expiration.into());
        self
    }
}

/// The x-death entries of a dead-lettered message; each has exactly RabbitMQ's keys.
fn deaths(message: &BasicGetMessage) -> Vec<Death> {
    deaths_of(&message.delivery.properties)
}

fn deaths_of(properties: &BasicProperties) -> Vec<Death> {
    let headers = headers_of(properties);
    let Some(AMQPValue::FieldArray(array)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    array
        .as_slice()
        .iter()
        .map(|entry| {
            let AMQPValue::FieldTable(entry) = entry else {
                panic!("x-death entry {entry:?}");
            };
            let entry = entry.inner();
            let mut keys: Vec<&str> = entry.keys().map(|k| k.as_str()).collect();
            keys.sort_unstable();
            let mut expected = vec![
                "count",
                "exchange",
                "queue",
                "reason",
                "routing-keys",
                "time",
            ];
            if entry.contains_key("original-expiration") {
                expected.push("original-expiration");
                expected.sort_unstable();
            }
            assert_eq!(keys, expected, "the keys of the x-death entry {entry:?}");
            assert!(
                matches!(entry.get("time"), Some(AMQPValue::Timestamp(_))),
                "time {:?}",
                entry.get("time")
            );
            let count = match entry.get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                other => panic!("count {other:?}"),
            };
            let routing_keys = match entry.get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => {
                    keys.as_slice().iter().map(|k| string(Some(k))).collect()
                }
                other => panic!("routing-keys {other:?}"),
            };
            Death {
                queue: string(entry.get("queue")),
                reason: string(entry.get("reason")),
                count,
                exchange: string(entry.get("exchange")),
                routing_keys,
                original_expiration: entry
                    .get("original-expiration")
                    .map(|value| string(Some(value))),
            }
        })
        .collect()
}

async fn ack_message(channel: &Channel, message: &BasicGetMessage) {
    ack(channel, message.delivery.delivery_tag).await;
}

// --- x-message-ttl and expiration --------------------------------------------------------------

#[tokio::test]
async fn messages_not_consumed_within_the_queue_ttl_are_gone_without_a_consumer() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(&channel, "ttl_gone", &[("x-message-ttl", int(300))]).await;
    for body in ["a", "b", "c"] {
        put(&channel, &queue, body, BasicProperties::default()).await;
    }
    let published = Instant::now();
    assert_eq!(ready(&channel, &queue).await, 3, "not expired yet");
    wait_until("the queue to empty on its own", || async {
        ready(&channel, &queue).await == 0
    })
    .await;
    assert!(
        published.elapsed() >= Duration::from_millis(250),
        "emptied after {:?}, before the TTL",
        published.elapsed()
    );
    assert_eq!(get_now(&channel, &queue).await, None);
}

#[tokio::test]
async fn a_message_consumed_before_the_queue_ttl_arrives_normally() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = queue_with(&channel, "ttl_in_time", &[("x-message-ttl", int(300))]).await;
    // Fetched at once.
    put(&channel, &queue, "fetched", BasicProperties::default()).await;
    assert_eq!(get_now(&channel, &queue).await.as_deref(), Some("fetched"));
    // Pushed to a waiting consumer, without an expiration property of its own.
    let consumer_channel = common::channel(&connection).await;
    let mut consumer = consume(
        &consumer_channel,
        &queue,
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await;
    put(&channel, &queue, "consumed", BasicProperties::default()).await;
    let delivery = consumer.next().await;
    assert_eq!(body(&delivery), "consumed");
    assert_eq!(delivery.properties.expiration(), &None);
    consumer.expect_quiet().await;
}

#[tokio::test]
async fn a_per_message_expiration_expires_that_message_only() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(&channel, "expiration", &[]).await;
    put(&channel, &queue, "short", expiring("100")).await;
    put(&channel, &queue, "long", expiring("60000")).await;
    put(&channel, &queue, "forever", BasicProperties::default()).await;
    wait_until("the expired head to go", || async {
        ready(&channel, &queue).await == 2
    })
    .await;
    let long = get(&channel, &queue).await;
    assert_eq!(long.delivery.data, b"long");
    // The property is delivered as it was published.
    assert_eq!(
        long.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some("60000")
    );
    ack_message(&channel, &long).await;
    assert_eq!(get_now(&channel, &queue).await.as_deref(), Some("forever"));
    assert_eq!(get_now(&channel, &queue).await, None);
}

#[tokio::test]
async fn the_lower_of_queue_ttl_and_expiration_applies() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    // The queue's TTL is the lower.
    let short_queue = queue_with(&channel, "lower_queue_ttl", &[("x-message-ttl", int(100))]).await;
    put(&channel, &short_queue, "x", expiring("60000")).await;
    // The message's expiration is the lower; the message behind it has the queue's long TTL.
    let long_queue = queue_with(
        &channel,
        "lower_expiration",
        &[("x-message-ttl", int(60_000))],
    )
    .await;
    put(&channel, &long_queue, "short", expiring("100")).await;
    put(&channel, &long_queue, "kept", BasicProperties::default()).await;
    wait_until("both short-lived messages to expire", || async {
        ready(&channel, &short_queue).await == 0 && ready(&channel, &long_queue).await == 1
    })
    .await;
    assert_eq!(get_now(&channel, &short_queue).await, None);
    assert_eq!(
        get_now(&channel, &long_queue).await.as_deref(),
        Some("kept")
    );
}

#[tokio::test]
async fn an_expired_message_behind_an_unexpired_head_waits_for_the_head() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(&channel, "behind_head", &[]).await;
    put(&channel, &queue, "A", expiring("10000")).await;
    put(&channel, &queue, "B", expiring("100")).await;
    pause(300).await;
    // Expiry happens at the head only: B is still counted.
    assert_eq!(ready(&channel, &queue).await, 2);
    assert_eq!(get_now(&channel, &queue).await.as_deref(), Some("A"));
    // B reached the head, expired: never delivered.
    assert_eq!(get_now(&channel, &queue).await, None);
    assert_eq!(ready(&channel, &queue).await, 0);
}

#[tokio::test]
async fn ttl_zero_delivers_to_a_waiting_consumer_and_drops_otherwise() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let ttl_zero = queue_with(&channel, "ttl_zero", &[("x-message-ttl", int(0))]).await;
    let plain = queue_with(&channel, "expiration_zero", &[]).await;
    for (queue, properties) in [
        (&ttl_zero, BasicProperties::default()),
        (&plain, expiring("0")),
    ] {
        let consumer_channel = common::channel(&connection).await;
        let mut consumer = consume(
            &consumer_channel,
            queue,
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
        )
        .await;
        put(&channel, queue, "now", properties.clone()).await;
        assert_eq!(body(&consumer.next().await), "now");
        close_channel(&consumer_channel).await;
        consumer.expect_cancelled().await;
        // Nobody waiting: dropped at once.
        put(&channel, queue, "never", properties).await;
        assert_eq!(get_now(&channel, queue).await, None, "{queue}");
        assert_eq!(ready(&channel, queue).await, 0, "{queue}");
    }
}

#[tokio::test]
async fn ttl_zero_drops_a_message_no_consumer_has_credit_for() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = queue_with(&channel, "ttl_zero_credit", &[("x-message-ttl", int(0))]).await;
    let consumer_channel = common::channel(&connection).await;
    qos(&consumer_channel, 1).await;
    let mut consumer = consume(&consumer_channel, &queue, BasicConsumeOptions::default()).await;
    put(&channel, &queue, "one", BasicProperties::default()).await;
    let one = consumer.next().await;
    assert_eq!(body(&one), "one");
    // The consumer's prefetch is used up: nobody can take "two" now.
    put(&channel, &queue, "two", BasicProperties::default()).await;
    assert_eq!(ready(&channel, &queue).await, 0);
    ack(&consumer_channel, one.delivery_tag).await;
    consumer.expect_quiet().await;
    put(&channel, &queue, "three", BasicProperties::default()).await;
    assert_eq!(body(&consumer.next().await), "three");
}

#[tokio::test]
async fn an_unacked_message_requeued_after_its_ttl_is_not_delivered_again() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = queue_with(&channel, "requeued_dlq", &[]).await;
    let queue = queue_with(
        &channel,
        "requeued_late",
        &[
            ("x-message-ttl", int(200)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&dlq)),
        ],
    )
    .await;
    put(&channel, &queue, "late", BasicProperties::default()).await;
    put(&channel, &queue, "later", BasicProperties::default()).await;
    let late = get(&channel, &queue).await;
    assert_eq!(late.delivery.data, b"late");
    // Unacked messages do not expire; the ready one behind it does.
    wait_until("the ready message to expire", || async {
        ready(&channel, &queue).await == 0
    })
    .await;
    within(
        "basic.nack",
        channel.basic_nack(
            late.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        ),
    )
    .await
    .expect("basic.nack");
    // Requeued past its TTL: it expires at once, after "later".
    let first = get(&channel, &dlq).await;
    let second = get(&channel, &dlq).await;
    assert_eq!(
        [body(&first.delivery), body(&second.delivery)],
        ["later", "late"]
    );
    assert_eq!(
        deaths(&second),
        [death(&queue, "expired", 1, "", &[&queue])]
    );
    assert_eq!(get_now(&channel, &queue).await, None);
    ack_message(&channel, &first).await;
    ack_message(&channel, &second).await;
}

// --- dead-lettering of expired messages ---------------------------------------------------------

#[tokio::test]
async fn an_expired_message_is_dead_lettered_with_reason_expired() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = queue_with(&channel, "expired_dlq", &[]).await;
    let queue = queue_with(
        &channel,
        "expired_ttl",
        &[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&dlq)),
        ],
    )
    .await;
    let properties = BasicProperties::default()
        .with_headers(table(&[("app", text("kept"))]))
        .with_message_id("m-1".into());
    put(&channel, &queue, "stale", properties).await;
    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"stale");
    assert_eq!(dead.delivery.exchange.as_str(), "");
    assert_eq!(dead.delivery.routing_key.as_str(), dlq);
    assert!(!dead.delivery.redelivered);
    assert_eq!(dead.delivery.properties.expiration(), &None);
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some("m-1")
    );
    assert_eq!(deaths(&dead), [death(&queue, "expired", 1, "", &[&queue])]);
    let h = headers(&dead);
    assert_eq!(h.inner().get("app"), Some(&text("kept")));
    assert_eq!(
        h.inner().get("x-first-death-reason"),
        Some(&text("expired"))
    );
    assert_eq!(h.inner().get("x-first-death-queue"), Some(&text(&queue)));
    assert_eq!(h.inner().get("x-first-death-exchange"), Some(&text("")));
    assert_eq!(ready(&channel, &queue).await, 0);
    ack_message(&channel, &dead).await;
}

#[tokio::test]
async fn a_message_expired_by_its_expiration_is_dead_lettered_without_it() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = queue_with(&channel, "expiration_dlq", &[]).await;
    let queue = queue_with(
        &channel,
        "expiration_dl",
        &[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&dlq)),
        ],
    )
    .await;
    // Through a named exchange, which the x-death entry names.
    bind_queue(&channel, &queue, "amq.direct", &queue).await;
    let properties = expiring("150").with_correlation_id("c-1".into());
    publish_confirmed(&channel, "amq.direct", &queue, b"stale", properties).await;
    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"stale");
    assert_eq!(
        dead.delivery.properties.expiration(),
        &None,
        "the copy must not expire again"
    );
    assert_eq!(
        dead.delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("c-1")
    );
    assert_eq!(
        deaths(&dead),
        [death(&queue, "expired", 1, "amq.direct", &[&queue]).original_expiration("150")]
    );
    assert_eq!(
        headers(&dead).inner().get("x-first-death-exchange"),
        Some(&text("amq.direct"))
    );
    ack_message(&channel, &dead).await;
}

#[tokio::test]
async fn a_retry_loop_brings_the_message_back_after_the_delay_with_growing_x_death_counts() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    // work_x --"job"--> work --reject--> retry_x (fanout) --> retry (TTL 200) --expired--> work_x
    let work_x = declare_exchange(&channel, "loop_work_x", ExchangeKind::Direct).await;
    let retry_x = declare_exchange(&channel, "loop_retry_x", ExchangeKind::Fanout).await;
    let work = queue_with(
        &channel,
        "loop_work",
        &[("x-dead-letter-exchange", text(&retry_x))],
    )
    .await;
    bind_queue(&channel, &work, &work_x, "job").await;
    let retry = queue_with(
        &channel,
        "loop_retry",
        &[
            ("x-message-ttl", int(200)),
            ("x-dead-letter-exchange", text(&work_x)),
        ],
    )
    .await;
    bind_queue(&channel, &retry, &retry_x, "").await;

    let consumer_channel = common::channel(&connection).await;
    let mut consumer = consume(&consumer_channel, &work, BasicConsumeOptions::default()).await;
    publish_confirmed(
        &channel,
        &work_x,
        "job",
        b"task",
        BasicProperties::default(),
    )
    .await;
    let first = consumer.next().await;
    assert_eq!(body(&first), "task");
    assert_eq!(first.properties.headers(), &None);
    let reject = |tag: u64| {
        let consumer_channel = consumer_channel.clone();
        async move {
            within(
                "basic.reject",
                consumer_channel.basic_reject(tag, BasicRejectOptions { requeue: false }),
            )
            .await
            .expect("basic.reject");
            Instant::now()
        }
    };
    let mut rejected = reject(first.delivery_tag).await;
    for round in 1..=2i64 {
        let again = consumer.next().await;
        assert!(
            rejected.elapsed() >= Duration::from_millis(180),
            "round {round}: back after {:?}, before the retry delay",
            rejected.elapsed()
        );
        assert_eq!(body(&again), "task");
        assert!(!again.redelivered, "a dead-lettered copy is a new message");
        assert_eq!(again.exchange.as_str(), work_x);
        assert_eq!(again.routing_key.as_str(), "job");
        assert_eq!(
            deaths_of(&again.properties),
            [
                death(&retry, "expired", round, &retry_x, &["job"]),
                death(&work, "rejected", round, &work_x, &["job"]),
            ],
            "round {round}"
        );
        let h = headers_of(&again.properties);
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&text("rejected"))
        );
        assert_eq!(h.inner().get("x-first-death-queue"), Some(&text(&work)));
        assert_eq!(
            h.inner().get("x-first-death-exchange"),
            Some(&text(&work_x))
        );
        if round == 1 {
            rejected = reject(again.delivery_tag).await;
        } else {
            ack(&consumer_channel, again.delivery_tag).await;
        }
    }
    consumer.expect_quiet().await;
    delete_exchange(&channel, &work_x).await;
    delete_exchange(&channel, &retry_x).await;
}

// --- dead-letter cycles -------------------------------------------------------------------------

/// A fanout exchange for the test and an exclusive observer queue bound to it.
async fn observed_fanout(channel: &Channel, test: &str) -> (String, String) {
    let exchange = declare_exchange(channel, test, ExchangeKind::Fanout).await;
    let observer = queue_with(channel, "observer", &[]).await;
    bind_queue(channel, &observer, &exchange, "").await;
    (exchange, observer)
}

#[tokio::test]
async fn a_cycle_of_expirations_between_two_queues_is_broken() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    // a --expired--> b (default exchange) --expired--> fanout --> a (a cycle) and the observer.
    let (fanout, observer) = observed_fanout(&channel, "cycle_fanout").await;
    let b = queue_with(
        &channel,
        "cycle_b",
        &[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text(&fanout)),
        ],
    )
    .await;
    let a = queue_with(
        &channel,
        "cycle_a",
        &[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&b)),
        ],
    )
    .await;
    bind_queue(&channel, &a, &fanout, "").await;
    put(&channel, &a, "loop", BasicProperties::default()).await;
    wait_for_ready(&channel, &observer, 1).await;
    // Had it gone back to a, it would expire there again and reach the observer once more.
    pause(600).await;
    assert_eq!(ready(&channel, &observer).await, 1);
    assert_eq!(ready(&channel, &a).await, 0);
    assert_eq!(ready(&channel, &b).await, 0);
    let seen = get(&channel, &observer).await;
    assert_eq!(
        deaths(&seen),
        [
            death(&b, "expired", 1, "", &[&b]),
            death(&a, "expired", 1, "", &[&a]),
        ]
    );
    ack_message(&channel, &seen).await;
    delete_exchange(&channel, &fanout).await;
}

#[tokio::test]
async fn a_queue_that_dead_letters_its_expired_messages_to_itself_drops_them() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let (fanout, observer) = observed_fanout(&channel, "self_fanout").await;
    let queue = queue_with(
        &channel,
        "self_cycle",
        &[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text(&fanout)),
        ],
    )
    .await;
    bind_queue(&channel, &queue, &fanout, "").await;
    put(&channel, &queue, "once", BasicProperties::default()).await;
    wait_for_ready(&channel, &observer, 1).await;
    pause(400).await;
    assert_eq!(ready(&channel, &observer).await, 1);
    assert_eq!(ready(&channel, &queue).await, 0);
    let seen = get(&channel, &observer).await;
    assert_eq!(deaths(&seen), [death(&queue, "expired", 1, "", &[&queue])]);
    ack_message(&channel, &seen).await;

    // Through the default exchange, with nothing else to observe it: both queues stay empty.
    let lonely = unique("self_cycle_default");
    declare_queue_named(
        &channel,
        &lonely,
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        table(&[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("")),
        ]),
    )
    .await;
    put(&channel, &lonely, "gone", BasicProperties::default()).await;
    wait_until("the self-dead-lettering queue to empty", || async {
        ready(&channel, &lonely).await == 0
    })
    .await;
    pause(300).await;
    assert_eq!(ready(&channel, &lonely).await, 0);
    assert_eq!(get_now(&channel, &lonely).await, None);
    delete_exchange(&channel, &fanout).await;
}

// --- invalid values -----------------------------------------------------------------------------

#[tokio::test]
async fn a_negative_message_ttl_is_406_naming_the_argument() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let queue = unique("negative_ttl");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            table(&[("x-message-ttl", int(-1))]),
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{queue}' in vhost '/': \
             {{value_negative,-1}}"
        )
    );
}

/// Publishes with `expiration` on a confirm-mode channel and expects the channel to be closed
/// with 406; returns the reply text.
async fn refused_expiration(connection: &Connection, expiration: &str) -> String {
    let channel = confirm_channel(connection).await;
    let queue = queue_with(&channel, "bad_expiration", &[]).await;
    let confirm = publish_with(&channel, "", &queue, b"bad", expiring(expiration)).await;
    let text = match within("the broker's answer", confirm).await {
        Err(error) => assert_reply::<()>(Err(error), 406),
        Ok(confirmation) => panic!("expected the channel to close, got {confirmation:?}"),
    };
    wait_until("the channel to close", || async {
        !channel.status().connected()
    })
    .await;
    assert!(connection.status().connected());
    text
}

#[tokio::test]
async fn an_invalid_expiration_closes_the_channel_with_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    assert_eq!(
        refused_expiration(&connection, "abc").await,
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
    assert_eq!(
        refused_expiration(&connection, "-5").await,
        "PRECONDITION_FAILED - invalid expiration '-5': {value_negative,-5}"
    );
    // Nothing was queued, and the connection still serves.
    let channel = common::channel(&connection).await;
    assert_channel_open(&channel).await;
}

#[tokio::test]
async fn get_ok_counts_what_is_left_without_the_expired_messages_the_get_uncovered() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let queue = queue_with(&channel, "get_ok_count", &[]).await;
    put(&channel, &queue, "A", expiring("10000")).await;
    put(&channel, &queue, "B", expiring("100")).await;
    put(&channel, &queue, "C", BasicProperties::default()).await;
    pause(300).await;
    assert_eq!(ready(&channel, &queue).await, 3, "B waits behind A");
    let a = within(
        "basic.get",
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("a message");
    assert_eq!(a.delivery.data, b"A");
    // B reached the head expired and was dropped before the count: only C is left.
    assert_eq!(a.message_count, 1);
    assert_eq!(get_now(&channel, &queue).await.as_deref(), Some("C"));
}

#[tokio::test]
async fn an_expiration_of_minus_zero_is_a_ttl_of_zero() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = queue_with(&channel, "minus_zero", &[]).await;
    // Nobody waiting: dropped at once, as "0" is.
    put(&channel, &queue, "never", expiring("-0")).await;
    assert_eq!(ready(&channel, &queue).await, 0);
    assert_eq!(get_now(&channel, &queue).await, None);
}

#[tokio::test]
async fn expirations_are_checked_as_rabbitmq_does() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = queue_with(&channel, "long_expiration", &[]).await;
    // Up to ten years is fine.
    put(&channel, &queue, "a", expiring("4294967296")).await;
    put(&channel, &queue, "b", expiring("315360000000")).await;
    assert_eq!(ready(&channel, &queue).await, 2);
    assert_eq!(
        refused_expiration(&connection, "315360000001").await,
        "PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}"
    );
    assert_eq!(
        refused_expiration(&connection, "1.5").await,
        "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}"
    );
    assert_eq!(
        refused_expiration(&connection, "100ms").await,
        "PRECONDITION_FAILED - invalid expiration '100ms': {leftover_string,\"ms\"}"
    );
}

#[tokio::test]
async fn a_message_ttl_above_ten_years_is_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let fine = queue_with(
        &channel,
        "ten_years",
        &[("x-message-ttl", int(315_360_000_000))],
    )
    .await;
    assert_eq!(ready(&channel, &fine).await, 0);
    let queue = unique("above_ten_years");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            table(&[("x-message-ttl", int(315_360_000_001))]),
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{queue}' in vhost '/': \
             {{value_too_large,315360000001}}"
        )
    );
}

// --- Warren's own: messages paged out to disk ---------------------------------------------------

/// A Warren whose queues keep only 16 KiB of ready messages in memory: the rest of a backlog is
/// paged out to disk (the log of a durable queue, a spill log otherwise) and read back.
async fn small_window_broker() -> Broker {
    Broker::start_with(warren::ServerOptions {
        queue_memory_window: 16 * 1024,
        ..warren::ServerOptions::default()
    })
    .await
}

/// A 1 KiB body starting with `label`.
fn kib(label: &str) -> Vec<u8> {
    let mut body = label.as_bytes().to_vec();
    body.resize(1024, b'.');
    body
}

fn label(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('.')
        .to_owned()
}

#[tokio::test]
async fn expired_messages_paged_out_to_disk_are_dead_lettered_whole_and_in_order() {
    if skip_if_external("the memory window is Warren's") {
        return;
    }
    let broker = small_window_broker().await;
    let (_connection, channel) = open_confirming(&broker).await;
    for durable in [false, true] {
        let dlq = queue_with(&channel, "paged_dlq", &[]).await;
        let queue = unique("paged_ttl");
        declare_queue_named(
            &channel,
            &queue,
            QueueDeclareOptions {
                durable,
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            table(&[
                ("x-message-ttl", int(200)),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(&dlq)),
            ]),
        )
        .await;
        let mut confirms = Vec::new();
        for n in 0..100 {
            let properties = BasicProperties::default().with_delivery_mode(2);
            confirms
                .push(publish_with(&channel, "", &queue, &kib(&format!("m{n}")), properties).await);
        }
        for confirm in confirms {
            assert!(within("confirm", confirm).await.expect("confirm").is_ack());
        }
        wait_for_ready(&channel, &dlq, 100).await;
        assert_eq!(ready(&channel, &queue).await, 0, "durable: {durable}");
        for n in 0..100 {
            let dead = get(&channel, &dlq).await;
            assert_eq!(
                dead.delivery.data,
                kib(&format!("m{n}")),
                "durable: {durable}"
            );
            assert_eq!(
                deaths(&dead),
                [death(&queue, "expired", 1, "", &[&queue])],
                "{}",
                label(&dead.delivery.data)
            );
            ack_message(&channel, &dead).await;
        }
    }
}

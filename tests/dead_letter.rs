//! Dead-lettering of rejected messages with a real client (lapin): `basic.reject` / `basic.nack`
//! with `requeue=false` republishes the message to the queue's `x-dead-letter-exchange` (with
//! `x-dead-letter-routing-key` if set), with RabbitMQ's `x-death` and `x-first-death-*` headers;
//! a retry loop through two queues counts each death per queue and reason.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::message::BasicGetMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn shared_queue_with(
    channel: &Channel,
    test: &str,
    arguments: &[(&str, AMQPValue)],
) -> String {
    let name = unique(test);
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        table.insert(ShortString::from(*key), value.clone());
    }
    declare_queue_named(channel, &name, QueueDeclareOptions::default(), table).await;
    name
}

/// A queue named after `test` that dead-letters to `dlq` through the default exchange, with
/// `more` arguments.
async fn dead_lettering_to(
    channel: &Channel,
    test: &str,
    dlq: &str,
    more: &[(&str, AMQPValue)],
) -> String {
    let mut arguments = vec![
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(dlq)),
    ];
    arguments.extend(more.iter().cloned());
    shared_queue_with(channel, test, &arguments).await
}

async fn ack_got(channel: &Channel, message: &BasicGetMessage) {
    within(
        "basic.ack",
        channel.basic_ack(message.delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await
    .expect("basic.ack");
}

/// basic.get (manual ack), waiting for a message to arrive.
async fn get(channel: &Channel, queue: &str) -> BasicGetMessage {
    within("a message", async {
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn reject(channel: &Channel, message: &BasicGetMessage) {
    within(
        "basic.reject",
        channel.basic_reject(
            message.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ),
    )
    .await
    .expect("basic.reject");
}

fn headers(message: &BasicGetMessage) -> FieldTable {
    message
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers")
}

/// The x-death entries: (queue, reason, count, exchange, routing keys).
fn deaths(message: &BasicGetMessage) -> Vec<(String, String, i64, String, Vec<String>)> {
    let headers = headers(message);
    let Some(AMQPValue::FieldArray(array)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    let string = |value: Option<&AMQPValue>| match value {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("expected a string, got {other:?}"),
    };
    array
        .as_slice()
        .iter()
        .map(|death| {
            let AMQPValue::FieldTable(table) = death else {
                panic!("x-death entry {death:?}");
            };
            let table = table.inner();
            let count = match table.get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                other => panic!("count {other:?}"),
            };
            let keys = match table.get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => {
                    keys.as_slice().iter().map(|k| string(Some(k))).collect()
                }
                other => panic!("routing-keys {other:?}"),
            };
            assert!(matches!(table.get("time"), Some(AMQPValue::Timestamp(_))));
            (
                string(table.get("queue")),
                string(table.get("reason")),
                count,
                string(table.get("exchange")),
                keys,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_with_x_death() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let dlx = declare_exchange(&channel, "dlx", ExchangeKind::Fanout).await;
    let dlq = shared_queue_with(&channel, "dlq", &[]).await;
    bind_queue(&channel, &dlq, &dlx, "").await;
    let work = shared_queue_with(&channel, "work", &[("x-dead-letter-exchange", text(&dlx))]).await;
    let mut app_headers = FieldTable::default();
    app_headers.insert("app".into(), text("kept"));
    publish_with(
        &channel,
        "",
        &work,
        b"job",
        BasicProperties::default()
            .with_headers(app_headers)
            .with_message_id("m-1".into()),
    )
    .await;
    let message = get(&channel, &work).await;
    reject(&channel, &message).await;

    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"job");
    assert_eq!(dead.delivery.exchange.as_str(), dlx);
    assert_eq!(
        dead.delivery.routing_key.as_str(),
        work,
        "its own routing key"
    );
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some("m-1")
    );
    let h = headers(&dead);
    assert_eq!(h.inner().get("app"), Some(&text("kept")));
    assert_eq!(
        h.inner().get("x-first-death-reason"),
        Some(&text("rejected"))
    );
    assert_eq!(h.inner().get("x-first-death-queue"), Some(&text(&work)));
    assert_eq!(h.inner().get("x-first-death-exchange"), Some(&text("")));
    assert_eq!(
        deaths(&dead),
        [(
            work.clone(),
            "rejected".into(),
            1,
            "".into(),
            vec![work.clone()]
        )]
    );
    ack_got(&channel, &dead).await;
}

#[tokio::test]
async fn a_retry_loop_counts_deaths_per_queue_and_reason() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    // work --reject--> retry (via the default exchange and a dead-letter routing key)
    // retry --reject--> work (likewise).
    let work_name = unique("loop_work");
    let retry = shared_queue_with(
        &channel,
        "loop_retry",
        &[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&work_name)),
        ],
    )
    .await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), text(""));
    arguments.insert("x-dead-letter-routing-key".into(), text(&retry));
    declare_queue_named(
        &channel,
        &work_name,
        QueueDeclareOptions::default(),
        arguments,
    )
    .await;
    let work = work_name;
    publish(&channel, "", &work, b"try").await;

    let first = get(&channel, &work).await;
    reject(&channel, &first).await;
    let in_retry = get(&channel, &retry).await;
    assert_eq!(
        in_retry.delivery.routing_key.as_str(),
        retry,
        "dead-letter routing key"
    );
    assert_eq!(
        deaths(&in_retry),
        [(
            work.clone(),
            "rejected".into(),
            1,
            "".into(),
            vec![work.clone()]
        )]
    );
    reject(&channel, &in_retry).await;
    let second = get(&channel, &work).await;
    assert_eq!(
        deaths(&second),
        [
            (
                retry.clone(),
                "rejected".into(),
                1,
                "".into(),
                vec![retry.clone()]
            ),
            (
                work.clone(),
                "rejected".into(),
                1,
                "".into(),
                vec![work.clone()]
            ),
        ]
    );
    reject(&channel, &second).await;
    let third = get(&channel, &retry).await;
    // The work queue's entry counts again and moves to the front.
    assert_eq!(
        deaths(&third),
        [
            (
                work.clone(),
                "rejected".into(),
                2,
                "".into(),
                vec![work.clone()]
            ),
            (
                retry.clone(),
                "rejected".into(),
                1,
                "".into(),
                vec![retry.clone()]
            ),
        ]
    );
    assert_eq!(
        headers(&third).inner().get("x-first-death-queue"),
        Some(&text(&work))
    );
    ack_got(&channel, &third).await;
}

#[tokio::test]
async fn a_message_pushed_out_by_max_length_is_dead_lettered_as_maxlen() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let dlq = shared_queue_with(&channel, "maxlen_dlq", &[]).await;
    let bounded = dead_lettering_to(
        &channel,
        "maxlen_bounded",
        &dlq,
        &[("x-max-length", AMQPValue::LongLongInt(1))],
    )
    .await;
    publish(&channel, "", &bounded, b"first").await;
    publish(&channel, "", &bounded, b"second").await;
    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"first", "the head was pushed out");
    assert_eq!(
        deaths(&dead),
        [(
            bounded.clone(),
            "maxlen".into(),
            1,
            "".into(),
            vec![bounded.clone()]
        )]
    );
    let kept = get(&channel, &bounded).await;
    assert_eq!(kept.delivery.data, b"second");
    ack_got(&channel, &dead).await;
    ack_got(&channel, &kept).await;
}

#[tokio::test]
async fn reject_publish_dlx_nacks_and_dead_letters_the_refused_message() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let dlq = shared_queue_with(&channel, "reject_dlx_dlq", &[]).await;
    let bounded = dead_lettering_to(
        &channel,
        "reject_dlx",
        &dlq,
        &[
            ("x-max-length", AMQPValue::LongLongInt(1)),
            ("x-overflow", text("reject-publish-dlx")),
        ],
    )
    .await;
    let confirm = |body: &'static [u8]| {
        let channel = channel.clone();
        let bounded = bounded.clone();
        async move {
            publish_with(&channel, "", &bounded, body, BasicProperties::default())
                .await
                .await
                .expect("confirm")
        }
    };
    assert!(confirm(b"kept").await.is_ack());
    assert!(confirm(b"refused").await.is_nack());
    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"refused");
    assert_eq!(
        deaths(&dead),
        [(
            bounded.clone(),
            "maxlen".into(),
            1,
            "".into(),
            vec![bounded.clone()]
        )]
    );
    let kept = get(&channel, &bounded).await;
    assert_eq!(kept.delivery.data, b"kept");
    ack_got(&channel, &dead).await;
    ack_got(&channel, &kept).await;
}

#[tokio::test]
async fn a_reject_inside_a_transaction_is_dead_lettered_at_commit() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    let dlq = shared_queue_with(&channel, "tx_dlq", &[]).await;
    let work = dead_lettering_to(&channel, "tx_work", &dlq, &[]).await;
    publish(&channel, "", &work, b"job").await;
    let message = get(&channel, &work).await;
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
    reject(&channel, &message).await;
    assert_eq!(
        queue_counts(&channel, &dlq).await.0,
        0,
        "not before the commit"
    );
    within("tx.commit", channel.tx_commit())
        .await
        .expect("tx.commit");
    let dead = get(&channel, &dlq).await;
    assert_eq!(dead.delivery.data, b"job");
    assert_eq!(
        deaths(&dead),
        [(
            work.clone(),
            "rejected".into(),
            1,
            "".into(),
            vec![work.clone()]
        )]
    );
}

//! Consumer priorities (`x-priority` on basic.consume) and single active consumer
//! (`x-single-active-consumer` on queue.declare) with a real client (lapin).
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

async fn consume_with(
    channel: &Channel,
    queue: &str,
    priority: Option<i32>,
    no_ack: bool,
) -> Deliveries {
    let mut arguments = FieldTable::default();
    if let Some(priority) = priority {
        arguments.insert("x-priority".into(), AMQPValue::LongInt(priority));
    }
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            arguments,
        ),
    )
    .await
    .expect("basic.consume");
    Deliveries::new(consumer)
}

#[tokio::test]
async fn a_higher_priority_consumer_gets_messages_while_it_has_credit() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let control = common::channel(&connection).await;
    let queue = declare_queue(&control, "priority", QueueDeclareOptions::default()).await;
    let low_channel = common::channel(&connection).await;
    let high_channel = common::channel(&connection).await;
    qos(&high_channel, 2).await;
    let mut low = consume_with(&low_channel, &queue, None, true).await;
    let mut high = consume_with(&high_channel, &queue, Some(10), false).await;
    for i in 0..10 {
        publish(&control, "", &queue, i.to_string().as_bytes()).await;
    }
    // The high-priority consumer takes what its prefetch allows, in order; the rest overflow to
    // the low-priority one.
    let got_high = high.take(2).await;
    assert_eq!(numbers(&got_high), [0, 1]);
    let got_low = low.take(8).await;
    assert_eq!(numbers(&got_low), (2..10).collect::<Vec<_>>());
    high.expect_quiet().await;
    // Credit back: the next message goes to the high-priority consumer again.
    let last = got_high.last().expect("deliveries").delivery_tag;
    within(
        "basic.ack",
        high_channel.basic_ack(last, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    publish(&control, "", &queue, b"10").await;
    assert_eq!(numbers(&high.take(1).await), [10]);
    low.expect_quiet().await;
    delete_queue(&control, &queue).await;
}

#[tokio::test]
async fn a_single_active_consumer_gets_everything_until_it_goes() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let control = common::channel(&connection).await;
    let queue = unique("single_active");
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    declare_queue_named(&control, &queue, QueueDeclareOptions::default(), arguments).await;
    let first_channel = common::channel(&connection).await;
    let second_channel = common::channel(&connection).await;
    let mut first = consume_with(&first_channel, &queue, None, true).await;
    // A newcomer with a higher priority does not take over.
    let mut second = consume_with(&second_channel, &queue, Some(5), true).await;
    for i in 0..4 {
        publish(&control, "", &queue, i.to_string().as_bytes()).await;
    }
    assert_eq!(numbers(&first.take(4).await), [0, 1, 2, 3]);
    second.expect_quiet().await;
    within("channel.close", first_channel.close(200, "done".into()))
        .await
        .expect("channel.close");
    for i in 4..6 {
        publish(&control, "", &queue, i.to_string().as_bytes()).await;
    }
    assert_eq!(numbers(&second.take(2).await), [4, 5]);
    delete_queue(&control, &queue).await;
}

#[tokio::test]
async fn a_priority_that_is_not_an_integer_is_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let control = common::channel(&connection).await;
    let queue = declare_queue(&control, "bad_priority", QueueDeclareOptions::default()).await;
    let channel = common::channel(&connection).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-priority".into(),
        AMQPValue::LongString(lapin::types::LongString::from("high")),
    );
    let error = within(
        "basic.consume",
        channel.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        ),
    )
    .await
    .expect_err("refused");
    let error = amqp_error(&error).expect("a channel.close");
    assert_eq!(error.get_id(), 406);
    assert_eq!(
        error.get_message().as_str(),
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in vhost '/': \
             \"expected integer, got longstr\""
        )
    );
    delete_queue(&control, &queue).await;
}

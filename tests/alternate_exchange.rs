//! Alternate exchanges (`alternate-exchange` argument of exchange.declare) with a real client
//! (lapin): a message its exchange routes nowhere goes to the alternate exchange, counts as routed
//! for `mandatory`, and chains of alternates (missing ones, cycles) end as RabbitMQ ends them.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, ExchangeKind};

/// `{alternate-exchange: alternate}`.
fn alternate_argument(alternate: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(LongString::from(alternate)),
    );
    arguments
}

/// Declares an exchange named after `test` whose alternate exchange is `alternate`.
async fn declare_with_alternate(
    channel: &Channel,
    test: &str,
    kind: ExchangeKind,
    alternate: &str,
) -> String {
    let name = unique(test);
    declare_exchange_named(channel, &name, kind, alternate_argument(alternate)).await;
    name
}

/// Publishes with `mandatory` and waits for the confirm; returns the messages sent back (lapin
/// hands a `basic.return` over with the confirm that follows it).
async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Vec<lapin::message::BasicReturnMessage> {
    let confirmation = within(
        "basic.publish mandatory",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish")
    .await
    .expect("confirm");
    match confirmation {
        Confirmation::Ack(returned) => returned.into_iter().collect(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

async fn exclusive_queue(channel: &Channel, test: &str) -> String {
    declare_queue(
        channel,
        test,
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange_and_count_as_routed() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    let alternate = declare_exchange(&channel, "ae", ExchangeKind::Fanout).await;
    let unrouted = exclusive_queue(&channel, "ae_unrouted").await;
    bind_queue(&channel, &unrouted, &alternate, "").await;
    let main = declare_with_alternate(&channel, "ae_main", ExchangeKind::Direct, &alternate).await;
    let orders = exclusive_queue(&channel, "ae_orders").await;
    bind_queue(&channel, &orders, &main, "orders").await;

    let returned = publish_mandatory(&channel, &main, "unknown", b"to the alternate").await;
    assert!(
        returned.is_empty(),
        "reached a queue through the alternate: not returned"
    );
    let returned = publish_mandatory(&channel, &main, "orders", b"to orders").await;
    assert!(returned.is_empty());

    wait_for_ready(&channel, &unrouted, 1).await;
    wait_for_ready(&channel, &orders, 1).await;
    let mut deliveries = consume(&channel, &unrouted, BasicConsumeOptions::default()).await;
    let message = deliveries.next().await;
    assert_eq!(message.data, b"to the alternate");
    assert_eq!(
        message.exchange.as_str(),
        main,
        "delivered with the exchange it was published to"
    );
    assert_eq!(message.routing_key.as_str(), "unknown");
    assert_eq!(
        queue_counts(&channel, &orders).await.0,
        1,
        "routed messages skip the alternate"
    );
    deliveries.expect_quiet().await;
}

#[tokio::test]
async fn an_alternate_that_routes_nowhere_or_is_missing_returns_mandatory_messages() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    // The alternate exists but has no bindings.
    let empty = declare_exchange(&channel, "ae_empty", ExchangeKind::Fanout).await;
    let main = declare_with_alternate(&channel, "ae_to_empty", ExchangeKind::Direct, &empty).await;
    let returned = publish_mandatory(&channel, &main, "k", b"nowhere").await;
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
    assert_eq!(returned[0].exchange.as_str(), main);
    // The alternate does not exist.
    let missing = unique("ae_missing");
    let main =
        declare_with_alternate(&channel, "ae_to_missing", ExchangeKind::Topic, &missing).await;
    let returned = publish_mandatory(&channel, &main, "a.b", b"nowhere").await;
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
    assert_channel_open(&channel).await;
}

#[tokio::test]
async fn alternates_chain_and_a_cycle_of_them_ends() {
    let broker = Broker::start().await;
    let (_connection, channel) = open_confirming(&broker).await;
    // a -> b -> c (a fanout with a queue): two hops of alternates.
    let c = declare_exchange(&channel, "ae_c", ExchangeKind::Fanout).await;
    let queue = exclusive_queue(&channel, "ae_chain").await;
    bind_queue(&channel, &queue, &c, "").await;
    let b = declare_with_alternate(&channel, "ae_b", ExchangeKind::Direct, &c).await;
    let a = declare_with_alternate(&channel, "ae_a", ExchangeKind::Direct, &b).await;
    assert!(publish_mandatory(&channel, &a, "k", b"two hops")
        .await
        .is_empty());
    wait_for_ready(&channel, &queue, 1).await;

    // x and y name each other and route nowhere: the message is returned, once, and nothing hangs.
    let x_name = unique("ae_x");
    let y = declare_with_alternate(&channel, "ae_y", ExchangeKind::Direct, &x_name).await;
    declare_exchange_named(
        &channel,
        &x_name,
        ExchangeKind::Direct,
        alternate_argument(&y),
    )
    .await;
    let returned = publish_mandatory(&channel, &x_name, "k", b"in circles").await;
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
    assert_channel_open(&channel).await;
}

//! Publisher confirms with a real client (lapin) and, where lapin hides the wire (delivery tags,
//! frame order), a raw client: every publish acked, tags from 1, a mandatory message's return
//! before its ack, channel errors on a confirm channel, and confirm/tx exclusion.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use std::collections::BTreeSet;

use common::*;
use lapin::options::*;
use lapin::{Confirmation, ExchangeKind};
use warren_protocol::method::Method;
use warren_protocol::spec::{basic, confirm, AMQPClass};

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

#[tokio::test]
async fn every_publish_on_a_confirm_channel_is_acked() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    assert!(channel.status().confirm());
    let queue = declare_queue(&channel, "all_acked", exclusive()).await;

    let mut confirms = Vec::new();
    for i in 0..200u32 {
        let properties = lapin::BasicProperties::default().with_delivery_mode(2);
        confirms.push(publish_with(&channel, "", &queue, &i.to_be_bytes(), properties).await);
    }
    for confirm in confirms {
        let confirmation = within("publisher confirm", confirm)
            .await
            .expect("publisher confirm");
        assert_eq!(confirmation, Confirmation::Ack(None));
    }
    // Unroutable but not mandatory: acked too (nothing to return).
    let confirm = publish_with(&channel, "amq.direct", "nowhere", b"x", Default::default()).await;
    assert_eq!(
        within("publisher confirm", confirm).await.expect("confirm"),
        Confirmation::Ack(None)
    );
    assert!(within("wait_for_confirms", channel.wait_for_confirms())
        .await
        .expect("wait_for_confirms")
        .is_empty());
    assert_eq!(queue_counts(&channel, &queue).await, (200, 0));
}

/// Collects confirm acks (single or multiple) until `last` is covered; returns the tags covered.
async fn acked_tags(client: &mut RawClient, last: u64) -> BTreeSet<u64> {
    let mut acked = BTreeSet::new();
    while !acked.contains(&last) {
        match client.recv_any_method().await {
            Some((1, Method::Ack(ack))) => {
                assert!(ack.delivery_tag >= 1 && ack.delivery_tag <= last, "{ack:?}");
                if ack.multiple {
                    acked.extend(1..=ack.delivery_tag);
                } else {
                    assert!(acked.insert(ack.delivery_tag), "acked twice: {ack:?}");
                }
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
    acked
}

async fn raw_confirm_channel(broker: &Broker) -> (RawClient, u32) {
    let (mut client, tune) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    let select = confirm::AMQPMethod::Select(confirm::Select { nowait: false });
    client.send_method(1, AMQPClass::Confirm(select)).await;
    match client.recv_method().await {
        Some((1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))) => {}
        other => panic!("expected confirm.select-ok, got {other:?}"),
    }
    (client, tune.frame_max)
}

#[tokio::test]
async fn confirm_delivery_tags_count_publishes_from_1() {
    let broker = Broker::start().await;
    let (mut client, frame_max) = raw_confirm_channel(&broker).await;
    for i in 0..5u8 {
        client
            .send_publish(1, "amq.direct", "nowhere", false, &[i], frame_max)
            .await;
    }
    let acked = acked_tags(&mut client, 5).await;
    assert_eq!(acked, (1..=5).collect());
}

/// RabbitMQ sends basic.return (with its content) before the basic.ack of the same publish.
#[tokio::test]
async fn a_mandatory_unroutable_publish_is_returned_before_it_is_acked() {
    let broker = Broker::start().await;
    let (mut client, frame_max) = raw_confirm_channel(&broker).await;
    client
        .send_publish(1, "amq.direct", "nowhere", true, b"back", frame_max)
        .await;
    match client.recv_any_method().await {
        Some((1, Method::Other(AMQPClass::Basic(basic::AMQPMethod::Return(returned))))) => {
            assert_eq!(returned.reply_code, 312);
            assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(returned.routing_key.as_str(), "nowhere");
        }
        other => panic!("expected basic.return first, got {other:?}"),
    }
    assert_eq!(acked_tags(&mut client, 1).await, BTreeSet::from([1]));

    // The same through lapin: the return rides on the ack.
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            "amq.direct".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"back",
            Default::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "{confirmation:?}");
    let returned = confirmation
        .take_message()
        .expect("the return arrived before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.data, b"back");
}

#[tokio::test]
async fn publishing_to_a_deleted_or_missing_exchange_fails_the_confirm_with_404() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "deleted", ExchangeKind::Fanout).await;
    publish_confirmed(&channel, &exchange, "", b"ok", Default::default()).await;
    delete_exchange(&channel, &exchange).await;
    let confirm = publish_with(&channel, &exchange, "", b"gone", Default::default()).await;
    let text = assert_reply(within("publisher confirm", confirm).await, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'")
    );
    wait_until("the channel to close", || async {
        !channel.status().connected()
    })
    .await;
    assert!(connection.status().connected());

    let channel = confirm_channel(&connection).await;
    let missing = unique("missing");
    let confirm = publish_with(&channel, &missing, "", b"x", Default::default()).await;
    let text = assert_reply(within("publisher confirm", confirm).await, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
}

#[tokio::test]
async fn tx_select_on_a_confirm_channel_is_406_and_the_reverse_too() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let text = expect_channel_closed(&connection, &channel, channel.tx_select(), 406).await;
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );

    let channel = common::channel(&connection).await;
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.confirm_select(ConfirmSelectOptions::default()),
        406,
    )
    .await;
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    );

    // confirm.select twice is fine.
    let channel = confirm_channel(&connection).await;
    within(
        "confirm.select again",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("a second confirm.select");
    assert_channel_open(&channel).await;
}

//! Bad input over a raw socket: every fault gets the AMQP reply code RabbitMQ uses, as a channel or
//! connection exception, and the broker keeps serving everyone else.

mod common;

use std::time::Duration;

use common::{Broker, RawClient};
use warren_protocol::frame::{FrameType, PROTOCOL_HEADER};
use warren_protocol::spec::{channel, queue, AMQPClass};

#[tokio::test]
async fn wrong_protocol_header_gets_ours_and_eof() {
    let broker = Broker::start().await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(client.read_to_close().await, PROTOCOL_HEADER.to_vec());
    let mut old = RawClient::connect(broker.addr).await;
    old.send(b"AMQP\x01\x01\x00\x09").await;
    assert_eq!(old.read_to_close().await, PROTOCOL_HEADER.to_vec());
    broker.assert_serving().await;
}

#[tokio::test]
async fn garbage_after_the_handshake_is_501_frame_error() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    // A "frame" of unknown type 0x47 ('G').
    client.send(b"GARBAGE GARBAGE GARBAGE").await;
    client.expect_connection_exception(501).await;
    broker.assert_serving().await;
}

#[tokio::test]
async fn bad_frame_end_is_501() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.send(&[8, 0, 0, 0, 0, 0, 0, 0x00]).await;
    client.expect_connection_exception(501).await;
}

#[tokio::test]
async fn oversize_frame_is_501_without_waiting_for_the_payload() {
    let broker = Broker::start().await;
    let (mut client, tune) = RawClient::handshake(broker.addr, 0).await;
    // Only the header of a frame one byte over frame_max is sent.
    let mut header = vec![1u8, 0, 1];
    header.extend_from_slice(&(tune.frame_max - 7).to_be_bytes());
    client.send(&header).await;
    client.expect_connection_exception(501).await;
}

#[tokio::test]
async fn unknown_method_is_501_as_in_rabbitmq() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    client
        .send_frame(FrameType::Method, 1, &[0, 60, 0, 200])
        .await;
    client.expect_connection_exception(501).await;
    // An unknown class too (RabbitMQ drops the socket there; Warren answers).
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    client
        .send_frame(FrameType::Method, 1, &[0, 99, 0, 7])
        .await;
    client.expect_connection_exception(501).await;
}

#[tokio::test]
async fn truncated_arguments_are_501_cannot_decode() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    // queue.declare (50.10) cut after the ticket.
    client
        .send_frame(FrameType::Method, 1, &[0, 50, 0, 10, 0, 0])
        .await;
    client.expect_connection_exception(501).await;
}

#[tokio::test]
async fn deeply_nested_table_is_501_not_a_crash() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    // queue.declare whose arguments nest 10,000 tables deep (fits in frame_max).
    let mut table: Vec<u8> = vec![0, 0, 0, 0];
    for _ in 0..10_000 {
        let mut entry = vec![0u8, b'F'];
        entry.extend_from_slice(&table);
        table = (entry.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
    }
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&table);
    client.send_frame(FrameType::Method, 1, &payload).await;
    client.expect_connection_exception(501).await;
    broker.assert_serving().await;
}

#[tokio::test]
async fn frames_on_a_channel_that_is_not_open_are_504() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client
        .send_method(
            3,
            AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
        )
        .await;
    client.expect_connection_exception(504).await;
}

#[tokio::test]
async fn opening_a_channel_twice_is_504() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    client.send_channel_open(1).await;
    client.expect_connection_exception(504).await;
}

#[tokio::test]
async fn channel_above_channel_max_is_530() {
    let broker = Broker::start().await;
    let (mut client, tune) = RawClient::handshake(broker.addr, 0).await;
    client.send_channel_open(tune.channel_max + 1).await;
    client.expect_connection_exception(530).await;
}

#[tokio::test]
async fn opening_more_channels_than_channel_max_is_530_in_rabbitmqs_words() {
    if common::skip_if_external("sets the broker's channel_max") {
        return;
    }
    let broker = Broker::start_with(warren::ServerOptions {
        tuning: warren::server::Tuning {
            channel_max: 2,
            ..warren::server::Tuning::default()
        },
        ..warren::ServerOptions::default()
    })
    .await;
    let (mut client, tune) = RawClient::handshake(broker.addr, 0).await;
    assert_eq!(tune.channel_max, 2);
    client.open_channel(1).await;
    client.open_channel(2).await;
    client.send_channel_open(3).await;
    assert_eq!(
        client.expect_connection_close_text().await,
        (
            530,
            "NOT_ALLOWED - number of channels opened (2) has reached the negotiated \
             channel_max (2)"
                .into()
        )
    );
}

#[tokio::test]
async fn heartbeat_on_a_channel_is_505() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.send_frame(FrameType::Heartbeat, 5, &[]).await;
    client.expect_connection_exception(505).await;
}

#[tokio::test]
async fn methods_in_the_wrong_connection_state_are_504() {
    let broker = Broker::start().await;
    // connection.open again once open.
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.send_open("/").await;
    client.expect_connection_exception(504).await;
    // channel.open on channel 0.
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.send_channel_open(0).await;
    client.expect_connection_exception(504).await;
}

#[tokio::test]
async fn content_without_a_method_is_505() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    client.send_frame(FrameType::Body, 1, b"orphan body").await;
    client.expect_connection_exception(505).await;
}

#[tokio::test]
async fn channel_flow_is_acknowledged() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(2).await;
    for active in [false, true] {
        client
            .send_method(
                2,
                AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active })),
            )
            .await;
        match client.recv_method().await {
            Some((2, AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)))) => {
                assert_eq!(ok.active, active)
            }
            other => panic!("expected flow-ok, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn after_close_only_close_ok_counts_and_the_socket_closes_in_bounded_time() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.send(&[8, 0, 0, 0, 0, 0, 0, 0x00]).await;
    assert_eq!(client.expect_connection_close().await, 501);
    // More traffic is ignored, and without close-ok the broker hangs up on its own.
    client.send_channel_open(1).await;
    let started = tokio::time::Instant::now();
    match client.recv_within(Duration::from_secs(8)).await {
        Ok(None) => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn a_channel_exception_leaves_the_connection_open() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    // A passive declare of a queue that does not exist: 404, a soft error on channel 1 only.
    client
        .send_method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "no-such-queue".into(),
                passive: true,
                ..Default::default()
            })),
        )
        .await;
    match client.recv_method().await {
        Some((1, AMQPClass::Channel(channel::AMQPMethod::Close(close)))) => {
            assert_eq!(
                (close.reply_code, close.class_id, close.method_id),
                (404, 50, 10)
            );
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    client
        .send_method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        )
        .await;
    client.open_channel(1).await;
}

//! What the broker answered: reply codes and texts of channel and connection exceptions, and
//! checks that a channel is still open.

use std::fmt::Debug;
use std::future::Future;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::protocol::AMQPError;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use warren_protocol::types::FieldTable;

use super::*;

/// The AMQP error (reply code and text) a lapin error carries, if the broker sent one.
pub fn amqp_error(error: &lapin::Error) -> Option<AMQPError> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.clone()),
        _ => None,
    }
}

/// The spec's name for a reply code; RabbitMQ's reply texts start with it.
pub fn reply_name(code: u16) -> &'static str {
    match code {
        200 => "REPLY_SUCCESS",
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "?",
    }
}

/// Asserts that `result` is the broker's error with reply `code` and a reply text in RabbitMQ's
/// `NAME - detail` form; returns the text.
pub fn assert_reply<T: Debug>(result: lapin::Result<T>, code: u16) -> String {
    let error = match result {
        Ok(value) => panic!("expected reply code {code}, the method succeeded: {value:?}"),
        Err(error) => error,
    };
    let Some(amqp) = amqp_error(&error) else {
        panic!("expected reply code {code}, got a client-side error: {error}");
    };
    let text = amqp.get_message().to_string();
    assert_eq!(amqp.get_id(), code, "reply text: {text}");
    assert!(
        text.starts_with(reply_name(code)),
        "reply text {text:?} should start with {}",
        reply_name(code)
    );
    text
}

/// Runs `operation` on `channel` and expects the broker to close the channel with `code` (a
/// channel exception; the connection stays open). Returns the reply text.
///
/// Works for asynchronous methods too (ack, reject, nack, but not publish: see
/// [`expect_publish_closes_channel`]): a passive declare of `amq.direct` is queued right behind the
/// operation, before any answer can arrive, so the close fails it.
pub async fn expect_channel_closed<T: Debug>(
    connection: &Connection,
    channel: &Channel,
    operation: impl Future<Output = lapin::Result<T>>,
    code: u16,
) -> String {
    let probe = passive_probe(channel);
    let (result, probe) = within("the broker's answer", async {
        tokio::join!(biased; operation, probe)
    })
    .await;
    let text = match result {
        Err(error) => assert_reply::<T>(Err(error), code),
        Ok(_) => assert_reply(probe, code),
    };
    wait_until("the channel to close", || async {
        !channel.status().connected()
    })
    .await;
    assert!(
        connection.status().connected(),
        "a channel exception must leave the connection open ({text})"
    );
    text
}

/// Publishes `body` (not mandatory) and expects the broker to close the channel with `code`;
/// returns the reply text when lapin could observe it.
///
/// lapin queues publishes behind other methods, so a probe cannot be queued ahead of the answer
/// as [`expect_channel_closed`] does: the probe follows the publish, and if the close already
/// arrived the probe is refused by lapin itself and the code is not observable (`None`). Tests
/// that must see the code use a confirm-mode channel, where the publish's confirm carries it.
pub async fn expect_publish_closes_channel(
    connection: &Connection,
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    code: u16,
) -> Option<String> {
    let published = within(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            b"refused",
            BasicProperties::default(),
        ),
    )
    .await;
    let text = match published {
        Err(error) => Some(assert_reply::<()>(Err(error), code)),
        Ok(_) => match within("the broker's answer", passive_probe(channel)).await {
            Err(error) if amqp_error(&error).is_none() => None,
            probe => Some(assert_reply(probe, code)),
        },
    };
    wait_until("the channel to close", || async {
        !channel.status().connected()
    })
    .await;
    assert!(
        connection.status().connected(),
        "a channel exception must leave the connection open ({text:?})"
    );
    text
}

/// A passive declare of `amq.direct`: a synchronous no-op that fails only on a closed channel.
fn passive_probe(channel: &Channel) -> impl Future<Output = lapin::Result<()>> + '_ {
    channel.exchange_declare(
        "amq.direct".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
}

/// Runs `operation` and expects the broker to close the whole connection with `code`.
pub async fn expect_connection_closed<T: Debug>(
    connection: &Connection,
    operation: impl Future<Output = lapin::Result<T>>,
    code: u16,
) -> String {
    let text = assert_reply(within("the broker's answer", operation).await, code);
    wait_until("the connection to close", || async {
        !connection.status().connected()
    })
    .await;
    text
}

/// Proves `channel` is still open and served: a passive declare of `amq.direct` succeeds.
pub async fn assert_channel_open(channel: &Channel) {
    within("exchange.declare (passive)", passive_probe(channel))
        .await
        .expect("the channel is still open");
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy whose connections can be cut abruptly.
// ---------------------------------------------------------------------------------------------

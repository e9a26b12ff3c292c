//! Durable declarations pipelined on one channel (issue 19): a client that sends thousands of
//! `queue.declare`s and `queue.bind`s before it reads a reply gets every `*-ok`, in the order of
//! its requests, with replies that do not wait for the disk (`basic.qos-ok`, a non-durable
//! queue's `declare-ok`) and a channel exception kept in their place; everything answered
//! survives `kill -9`. The replies share group commits (`server/channel/held.rs`).

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use common::RawClient;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable as LapinTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_protocol::method::encode_method;
use warren_protocol::spec::{basic, channel, exchange, queue, AMQPClass};
use warren_protocol::types::FieldTable;

use warren_process::{TempDir, WarrenProcess};

const QUEUES: usize = 2_000;
/// A `basic.qos` (answered at once) after this many queues, to check it waits its turn.
const QOS_EVERY: usize = 250;

fn declare(name: &str, durable: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        durable,
        auto_delete: !durable,
        arguments: FieldTable::default(),
        ..Default::default()
    }))
}

fn bind(name: &str, exchange: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: name.into(),
        exchange: exchange.into(),
        routing_key: name.into(),
        arguments: FieldTable::default(),
        ..Default::default()
    }))
}

/// What the broker must answer, in order.
#[derive(Debug, PartialEq)]
enum Reply {
    DeclareOk(String),
    BindOk,
    QosOk,
    Close(u16),
}

fn reply_of(method: AMQPClass) -> Reply {
    match method {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => {
            Reply::DeclareOk(ok.queue.to_string())
        }
        AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => Reply::BindOk,
        AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => Reply::QosOk,
        AMQPClass::Channel(channel::AMQPMethod::Close(close)) => Reply::Close(close.reply_code),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Every durable queue with its binding, a non-durable queue and a qos now and then, then a bind
/// to an exchange that does not exist (404): all sent before reading anything.
fn requests() -> (BytesMut, Vec<Reply>) {
    let (mut out, mut expected) = (BytesMut::new(), Vec::new());
    for i in 0..QUEUES {
        let name = format!("piped-{i}");
        encode_method(&mut out, 1, &declare(&name, true));
        expected.push(Reply::DeclareOk(name.clone()));
        encode_method(&mut out, 1, &bind(&name, "piped"));
        expected.push(Reply::BindOk);
        if i % QOS_EVERY == 0 {
            let qos = basic::Qos {
                prefetch_count: 10,
                ..Default::default()
            };
            encode_method(&mut out, 1, &AMQPClass::Basic(basic::AMQPMethod::Qos(qos)));
            expected.push(Reply::QosOk);
            let transient = format!("transient-{i}");
            encode_method(&mut out, 1, &declare(&transient, false));
            expected.push(Reply::DeclareOk(transient));
        }
    }
    encode_method(&mut out, 1, &bind("piped-0", "no-such-exchange"));
    expected.push(Reply::Close(404));
    (out, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_durable_declares_are_answered_in_order_and_survive_kill_9() {
    let data = TempDir::new("pipelined-declares");
    let warren = WarrenProcess::start_with_management(data.path());
    let (mut client, _) = RawClient::handshake(warren.addr, 0).await;
    client.open_channel(1).await;
    let durable = exchange::Declare {
        exchange: "piped".into(),
        kind: "direct".into(),
        durable: true,
        arguments: FieldTable::default(),
        ..Default::default()
    };
    let declare_exchange = AMQPClass::Exchange(exchange::AMQPMethod::Declare(durable));
    client.send_method(1, declare_exchange).await;
    assert!(matches!(
        client.recv_method().await,
        Some((1, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))))
    ));
    let (bytes, expected) = requests();
    client.send(&bytes).await;
    for (index, wanted) in expected.iter().enumerate() {
        let (number, method) = client.recv_method().await.expect("a reply");
        assert_eq!(number, 1);
        assert_eq!(&reply_of(method), wanted, "reply {index}");
    }
    drop(client);
    drop(warren); // SIGKILL

    let warren = WarrenProcess::start_with_management(data.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for i in 0..QUEUES {
        let name = format!("piped-{i}");
        let properties = BasicProperties::default();
        let publish = BasicPublishOptions::default();
        channel
            .basic_publish(
                "piped".into(),
                name.as_str().into(),
                publish,
                b"x",
                properties,
            )
            .await
            .expect("publish");
    }
    for i in 0..QUEUES {
        let name = format!("piped-{i}");
        let queue = channel
            .queue_declare(name.as_str().into(), passive, LapinTable::default())
            .await
            .unwrap_or_else(|e| panic!("{name} was lost: {e}"));
        assert_eq!(queue.message_count(), 1, "{name} lost its binding");
    }
}

/// Sends a lapin method without waiting for its answer: polls its future once (which writes
/// the frame, in call order) and hands it back to be awaited later.
fn sent<F: Future>(future: F) -> std::pin::Pin<Box<F>> {
    let mut future = Box::pin(future);
    let mut context = Context::from_waker(Waker::noop());
    assert!(matches!(future.as_mut().poll(&mut context), Poll::Pending));
    future
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_gets_every_pipelined_declare_ok_in_order() {
    let data = TempDir::new("pipelined-lapin");
    let warren = WarrenProcess::start_with_management(data.path());
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let names: Vec<String> = (0..QUEUES).map(|i| format!("lapin-{i}")).collect();
    let pending: Vec<_> = names
        .iter()
        .map(|name| {
            sent(channel.queue_declare(name.as_str().into(), durable, LapinTable::default()))
        })
        .collect();
    for (name, declared) in names.iter().zip(pending) {
        let queue = declared.await.expect("declare-ok");
        assert_eq!(queue.name().as_str(), name);
    }
    let _ = pin!(connection.close(200, "bye".into())).await;
    assert_eq!(warren.log().matches("panicked").count(), 0);
}

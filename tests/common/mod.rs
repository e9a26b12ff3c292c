//! Shared test harness: a broker started in-process on an ephemeral loopback port (or, with
//! `WARREN_TEST_EXTERNAL_ADDR=127.0.0.1:5673`, an already running broker such as RabbitMQ, to check
//! that the tests describe RabbitMQ's behaviour), a raw AMQP client for the cases real clients
//! cannot produce (garbage, silence, bad frames), lapin helpers shared by the integration tests, and
//! a TCP proxy whose connections a test can cut abruptly.
//!
//! Every wait here is bounded (see [`WAIT`]) so that a broken broker fails a test instead of
//! hanging it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::AMQPError;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
    PublisherConfirm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use warren::server::Tuning;
use warren::{Server, ServerOptions};
use warren_protocol::content::{encode_content, encode_properties};
use warren_protocol::frame::{parse_frame, Frame, FrameType, PROTOCOL_HEADER};
use warren_protocol::method::{decode_method, encode_method, Method};
use warren_protocol::spec::{basic, channel, connection, AMQPClass};
use warren_protocol::types::{AMQPValue, FieldTable, LongString};

/// The environment variable naming an external broker to test instead of an in-process Warren.
pub const EXTERNAL_ADDR_VAR: &str = "WARREN_TEST_EXTERNAL_ADDR";

/// The external broker's address, when the tests run against one.
pub fn external_addr() -> Option<SocketAddr> {
    let addr = std::env::var(EXTERNAL_ADDR_VAR).ok()?;
    Some(
        addr.parse()
            .unwrap_or_else(|_| panic!("{EXTERNAL_ADDR_VAR}={addr} is not an ip:port")),
    )
}

/// Whether the tests run against an external broker (shared, so names must be unique).
pub fn external() -> bool {
    external_addr().is_some()
}

/// For tests of Warren-only features or options: true (after saying why) when running against an
/// external broker, so the test can return early.
///
/// ```ignore
/// if common::skip_if_external("x-consumer-timeout redelivery is Warren's own") { return; }
/// ```
pub fn skip_if_external(why: &str) -> bool {
    if external() {
        eprintln!("skipped against an external broker: {why}");
        return true;
    }
    false
}

pub struct Broker {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    data_dir: Option<PathBuf>,
}

impl Broker {
    /// An in-process Warren with default options, or the external broker when
    /// `WARREN_TEST_EXTERNAL_ADDR` is set.
    pub async fn start() -> Broker {
        if let Some(addr) = external_addr() {
            return Broker {
                addr,
                stop: None,
                task: None,
                data_dir: None,
            };
        }
        Broker::start_with(ServerOptions::default()).await
    }

    /// Always an in-process Warren: tests that need special options skip themselves first with
    /// [`skip_if_external`].
    pub async fn start_with(mut options: ServerOptions) -> Broker {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data_dir = std::env::temp_dir().join(format!("warren-test-{}-{n}", std::process::id()));
        options.listen = "127.0.0.1:0".into();
        options.data_dir = data_dir.clone();
        let server = Server::bind(options).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Broker {
            addr,
            stop: Some(stop),
            task: Some(task),
            data_dir: Some(data_dir),
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn uri_with(&self, user: &str, password: &str, vhost: &str) -> String {
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    /// Proves the broker still serves a well-behaved client (lapin): connect, open and close a
    /// channel, close.
    pub async fn assert_serving(&self) {
        let conn = Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("broker still accepts connections");
        let channel = conn.create_channel().await.expect("and opens channels");
        channel
            .close(200, "ok".into())
            .await
            .expect("channel close");
        conn.close(200, "ok".into()).await.expect("close");
    }

    /// Stops the broker the way SIGTERM does and waits for it (nothing for an external broker).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(data_dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
}

pub fn tuning_with_heartbeat(heartbeat: u16) -> Tuning {
    Tuning {
        heartbeat,
        ..Tuning::default()
    }
}

/// A hand-driven AMQP client over a raw socket.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method);
        self.send(&out).await;
    }

    /// The next frame, or None when the broker closed the socket. Panics after 10 s of silence.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("no frame within 10 s")
    }

    /// Ok(None): socket closed; Err: nothing within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) =
                parse_frame(&mut self.buf, 1 << 20).expect("broker sent a bad frame")
            {
                return Ok(Some(frame));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads raw bytes until the socket closes (bounded).
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = self.buf.split().to_vec();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut all)).await;
        all
    }

    pub async fn recv_method(&mut self) -> Option<(u16, AMQPClass)> {
        loop {
            let frame = self.recv().await?;
            if frame.frame_type != FrameType::Method {
                continue;
            }
            match decode_method(&frame.payload).expect("broker sent a bad method") {
                Method::Other(class) => return Some((frame.channel, class)),
                other => panic!("unexpected fast-path method {other:?}"),
            }
        }
    }

    /// Waits for `connection.close` from the broker and returns its reply code.
    pub async fn expect_connection_close(&mut self) -> u16 {
        loop {
            match self.recv_method().await {
                Some((0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))) => {
                    return close.reply_code
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Performs the whole handshake as guest, with the given heartbeat; returns the tune offer.
    pub async fn handshake(addr: SocketAddr, heartbeat: u16) -> (RawClient, connection::Tune) {
        let (mut client, tune) = RawClient::login(addr, heartbeat).await;
        client.send_open("/").await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) =
            client.recv_method().await
        else {
            panic!("expected connection.open-ok");
        };
        (client, tune)
    }

    /// Sends `channel.open` on `number` (no reply awaited).
    pub async fn send_channel_open(&mut self, number: u16) {
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        self.send_method(number, open).await;
    }

    /// Opens channel `number` and waits for its open-ok.
    pub async fn open_channel(&mut self, number: u16) {
        self.send_channel_open(number).await;
        match self.recv_method().await {
            Some((n, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) if n == number => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Expects a connection exception with `code`, answers close-ok, and expects the socket to
    /// close.
    pub async fn expect_connection_exception(&mut self, code: u16) {
        assert_eq!(self.expect_connection_close().await, code);
        let close_ok = connection::AMQPMethod::CloseOk(connection::CloseOk {});
        self.send_method(0, AMQPClass::Connection(close_ok)).await;
        assert!(self.recv().await.is_none(), "socket closes after close-ok");
    }

    /// Sends `connection.open` for `vhost`.
    pub async fn send_open(&mut self, vhost: &str) {
        let open = connection::Open {
            virtual_host: vhost.into(),
        };
        self.send_method(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))
            .await;
    }

    /// The handshake up to and including `tune-ok` (as guest); `connection.open` is the caller's.
    pub async fn login(addr: SocketAddr, heartbeat: u16) -> (RawClient, connection::Tune) {
        let mut client = RawClient::connect(addr).await;
        client.send(&PROTOCOL_HEADER).await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) =
            client.recv_method().await
        else {
            panic!("expected connection.start");
        };
        let mut caps = FieldTable::default();
        caps.insert(
            "authentication_failure_close".into(),
            AMQPValue::Boolean(true),
        );
        caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        client
            .send_method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: props,
                    mechanism: "PLAIN".into(),
                    response: LongString::from(b"\0guest\0guest".to_vec()),
                    locale: "en_US".into(),
                })),
            )
            .await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)))) =
            client.recv_method().await
        else {
            panic!("expected connection.tune");
        };
        client
            .send_method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat,
                })),
            )
            .await;
        (client, tune)
    }

    pub async fn send_frame(&mut self, frame_type: FrameType, channel: u16, payload: &[u8]) {
        let mut out = BytesMut::new();
        warren_protocol::frame::encode_frame(&mut out, frame_type, channel, payload);
        self.send(&out).await;
    }
}

// ---------------------------------------------------------------------------------------------
// lapin helpers shared by the integration tests.
// ---------------------------------------------------------------------------------------------

/// How long any one wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a test watches for something that must *not* happen (a delivery beyond a limit, ...).
pub const QUIET: Duration = Duration::from_millis(300);

/// Awaits `future`, failing the test after [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A name no other test (nor an earlier run against a shared broker) uses: `{test}-{random}-{n}`.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let random = RandomState::new().hash_one((std::process::id(), n, Instant::now()));
    format!("{test}-{random:016x}-{n}")
}

/// A lapin connection to `broker` as guest.
pub async fn connect(broker: &Broker) -> Connection {
    connect_uri(&broker.uri()).await
}

pub async fn connect_uri(uri: &str) -> Connection {
    within(
        "connect",
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect")
}

/// A new channel on `connection`.
pub async fn channel(connection: &Connection) -> Channel {
    within("channel.open", connection.create_channel())
        .await
        .expect("channel.open")
}

/// A connection to `broker` and one channel on it. Keep both alive: lapin closes a channel (and a
/// connection) whose last handle is dropped.
pub async fn open(broker: &Broker) -> (Connection, Channel) {
    let connection = connect(broker).await;
    let channel = channel(&connection).await;
    (connection, channel)
}

/// [`open`], with the channel in confirm mode.
pub async fn open_confirming(broker: &Broker) -> (Connection, Channel) {
    let (connection, channel) = open(broker).await;
    within(
        "confirm.select",
        channel.confirm_select(lapin::options::ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    (connection, channel)
}

/// Declares a queue named `unique(test)` with `options` and no arguments; returns its name.
pub async fn declare_queue(channel: &Channel, test: &str, options: QueueDeclareOptions) -> String {
    let name = unique(test);
    declare_queue_named(channel, &name, options, FieldTable::default()).await;
    name
}

/// A string value for arguments and headers (a long string, as clients send them).
pub fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// An integer value for arguments and headers.
pub fn int(n: i64) -> AMQPValue {
    AMQPValue::LongLongInt(n)
}

/// A field table of `entries`.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}

/// An exclusive queue named after `test` with `arguments` (it goes with the connection).
pub async fn queue_with(channel: &Channel, test: &str, arguments: &[(&str, AMQPValue)]) -> String {
    let name = unique(test);
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue_named(channel, &name, options, table(arguments)).await;
    name
}

/// Declares `name` and expects declare-ok.
pub async fn declare_queue_named(
    channel: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Queue {
    within(
        "queue.declare",
        channel.queue_declare(name.into(), options, arguments),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"))
}

/// (message count, consumer count) of an existing queue, from a passive declare.
pub async fn queue_counts(channel: &Channel, name: &str) -> (u32, u32) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = declare_queue_named(channel, name, passive, FieldTable::default()).await;
    (queue.message_count(), queue.consumer_count())
}

/// Deletes a queue this test declared (a shared broker must be left as it was found).
pub async fn delete_queue(channel: &Channel, name: &str) {
    within(
        "queue.delete",
        channel.queue_delete(name.into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.delete {name}: {e}"));
}

/// Declares an exchange named `unique(test)` of `kind`; returns its name.
pub async fn declare_exchange(channel: &Channel, test: &str, kind: ExchangeKind) -> String {
    let name = unique(test);
    declare_exchange_named(channel, &name, kind, FieldTable::default()).await;
    name
}

/// Declares the exchange `name` of `kind` with `arguments` and expects declare-ok.
pub async fn declare_exchange_named(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) {
    within(
        "exchange.declare",
        channel.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            arguments,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.declare {name}: {e}"));
}

pub async fn delete_exchange(channel: &Channel, name: &str) {
    within(
        "exchange.delete",
        channel.exchange_delete(name.into(), ExchangeDeleteOptions::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.delete {name}: {e}"));
}

pub async fn bind_queue(channel: &Channel, queue: &str, exchange: &str, binding_key: &str) {
    bind_queue_with(channel, queue, exchange, binding_key, FieldTable::default()).await
}

pub async fn bind_queue_with(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    binding_key: &str,
    arguments: FieldTable,
) {
    within(
        "queue.bind",
        channel.queue_bind(
            queue.into(),
            exchange.into(),
            binding_key.into(),
            QueueBindOptions::default(),
            arguments,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange} with {binding_key:?}: {e}"));
}

/// Publishes `body` with default properties and no flags (no confirm awaited).
pub async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(
        channel,
        exchange,
        routing_key,
        body,
        BasicProperties::default(),
    )
    .await;
}

pub async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> PublisherConfirm {
    within(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish")
}

/// Publishes bodies "0", "1", ... "count-1" to `queue` through the default exchange, then waits
/// until the queue holds them all (publishes are asynchronous).
pub async fn publish_numbered(channel: &Channel, queue: &str, count: usize) {
    for i in 0..count {
        publish(channel, "", queue, i.to_string().as_bytes()).await;
    }
    wait_for_ready(channel, queue, count as u32).await;
}

/// Waits until `queue` holds exactly `count` ready messages.
pub async fn wait_for_ready(channel: &Channel, queue: &str, count: u32) {
    wait_until(
        &format!("{queue} to hold {count} ready messages"),
        || async { queue_counts(channel, queue).await.0 == count },
    )
    .await
}

/// A delivery's body as text.
pub fn body(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.data).into_owned()
}

/// The bodies of `deliveries`, as numbers (see [`publish_numbered`]).
pub fn numbers(deliveries: &[Delivery]) -> Vec<usize> {
    deliveries
        .iter()
        .map(|d| body(d).parse().expect("a numbered body"))
        .collect()
}

/// Starts a consumer with a server-generated tag.
pub async fn consume(channel: &Channel, queue: &str, options: BasicConsumeOptions) -> Deliveries {
    try_consume(channel, queue, "", options)
        .await
        .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

pub async fn try_consume(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Deliveries> {
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            consumer_tag.into(),
            options,
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(Deliveries::new(consumer))
}

/// What happened to a consumer, in order: deliveries, then at most one error and a cancel.
///
/// lapin's `Consumer` is a `futures::Stream`; the tests have no `futures` crate, so a delegate
/// forwards every event, in order, into a channel that is read with timeouts.
pub struct Deliveries {
    pub tag: String,
    events: mpsc::UnboundedReceiver<DeliveryResult>,
    /// Kept alive: lapin cancels a consumer whose last handle is dropped.
    consumer: Consumer,
}

impl Deliveries {
    pub fn new(consumer: Consumer) -> Deliveries {
        let (sender, events) = mpsc::unbounded_channel();
        // The closure runs synchronously on lapin's dispatch path, so order is kept.
        consumer.set_delegate(move |event: DeliveryResult| {
            let _ = sender.send(event);
            std::future::ready(())
        });
        Deliveries {
            tag: consumer.tag().to_string(),
            events,
            consumer,
        }
    }

    /// The next event within `limit`: `Some(Ok(Some(_)))` a delivery, `Some(Ok(None))` the
    /// consumer was cancelled, `Some(Err(_))` its channel or connection failed; `None` nothing.
    pub async fn event_within(&mut self, limit: Duration) -> Option<DeliveryResult> {
        match tokio::time::timeout(limit, self.events.recv()).await {
            Ok(Some(event)) => Some(event),
            Ok(None) => Some(Ok(None)),
            Err(_) => None,
        }
    }

    /// The next delivery; fails the test on a cancel, an error or [`WAIT`] of silence.
    pub async fn next(&mut self) -> Delivery {
        match self.event_within(WAIT).await {
            Some(Ok(Some(delivery))) => delivery,
            Some(Ok(None)) => panic!(
                "consumer {} was cancelled, a delivery was expected",
                self.tag
            ),
            Some(Err(e)) => panic!(
                "consumer {} failed ({e}), a delivery was expected",
                self.tag
            ),
            None => panic!("no delivery within {WAIT:?} on consumer {}", self.tag),
        }
    }

    /// The next `count` deliveries.
    pub async fn take(&mut self, count: usize) -> Vec<Delivery> {
        let mut deliveries = Vec::with_capacity(count);
        for _ in 0..count {
            deliveries.push(self.next().await);
        }
        deliveries
    }

    /// Fails the test if anything is delivered within [`QUIET`].
    pub async fn expect_quiet(&mut self) {
        if let Some(event) = self.event_within(QUIET).await {
            panic!("consumer {} expected nothing, got {event:?}", self.tag);
        }
    }

    /// Waits for the consumer to be cancelled (by the broker or by its channel closing),
    /// skipping a channel error; fails on a delivery.
    pub async fn expect_cancelled(&mut self) {
        loop {
            match self.event_within(WAIT).await {
                Some(Ok(None)) => return,
                Some(Err(_)) => continue,
                Some(Ok(Some(delivery))) => {
                    panic!("consumer {} expected a cancel, got {delivery:?}", self.tag)
                }
                None => panic!("consumer {} was not cancelled within {WAIT:?}", self.tag),
            }
        }
    }

    /// Waits for the consumer's channel (or connection) to fail; returns the error. Fails the test
    /// on a delivery or a plain cancel.
    pub async fn expect_error(&mut self) -> lapin::Error {
        match self.event_within(WAIT).await {
            Some(Err(error)) => error,
            Some(Ok(Some(delivery))) => {
                panic!("consumer {} expected an error, got {delivery:?}", self.tag)
            }
            Some(Ok(None)) => panic!("consumer {} was cancelled without an error", self.tag),
            None => panic!("consumer {} saw no error within {WAIT:?}", self.tag),
        }
    }

    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }
}

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

/// Forwards every connection it accepts on a loopback port to `target`, until [`Proxy::cut`]
/// resets them all at once, as a crashed client host or a dropped network would.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, cut_seen) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target, cut_seen.clone()));
            }
        });
        Proxy { addr, cut, accept }
    }

    /// A guest URI for the default vhost through the proxy.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Resets every proxied connection (RST both ways, no AMQP close) and stops accepting.
    pub fn cut(&self) {
        self.accept.abort();
        let _ = self.cut.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let was_cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = async {
            while !*cut.borrow_and_update() {
                if cut.changed().await.is_err() {
                    break;
                }
            }
        } => true,
    };
    if was_cut {
        // Dropping a socket with a zero linger sends RST instead of FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// A new channel on `connection` in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = channel(connection).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    channel
}

/// Publishes on a confirm-mode channel and waits for the broker's ack, so that the message has
/// been routed (and queued, if routable) when this returns.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = publish_with(channel, exchange, routing_key, body, properties).await;
    let confirmation = within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
    assert!(
        confirmation.is_ack(),
        "publish to {exchange:?}/{routing_key:?} confirmed with {confirmation:?}"
    );
}

/// Empties `queue` with basic.get (no-ack); returns the bodies in order.
pub async fn get_all(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let got = within(
            "basic.get",
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"));
        match got {
            Some(message) => bodies.push(body(&message.delivery)),
            None => return bodies,
        }
    }
}

/// basic.qos with a per-consumer `prefetch_count`.
pub async fn qos(channel: &Channel, prefetch_count: u16) {
    within(
        "basic.qos",
        channel.basic_qos(prefetch_count, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
}

/// Acks one delivery tag (the broker answers nothing; errors close the channel later).
pub async fn ack(channel: &Channel, delivery_tag: u64) {
    within(
        "basic.ack",
        channel.basic_ack(delivery_tag, BasicAckOptions::default()),
    )
    .await
    .expect("basic.ack");
}

/// Closes a channel normally.
pub async fn close_channel(channel: &Channel) {
    within("channel.close", channel.close(200, "bye".into()))
        .await
        .expect("channel.close");
}

impl RawClient {
    /// Sends basic.publish with default properties and `body`, split at `frame_max`.
    pub async fn send_publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        frame_max: u32,
    ) {
        let publish = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory,
            immediate: false,
        };
        let mut out = BytesMut::new();
        encode_method(
            &mut out,
            channel,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        );
        let properties = encode_properties(&BasicProperties::default());
        encode_content(&mut out, channel, &properties, body, frame_max);
        self.send(&out).await;
    }

    /// The next method as decoded, fast-path ones (ack, publish) included; content frames and
    /// heartbeats are skipped. None when the broker closed the socket.
    pub async fn recv_any_method(&mut self) -> Option<(u16, Method)> {
        loop {
            let frame = self.recv().await?;
            if frame.frame_type == FrameType::Method {
                let method = decode_method(&frame.payload).expect("broker sent a bad method");
                return Some((frame.channel, method));
            }
        }
    }
}

//! Shared test harness: a broker started in-process on an ephemeral loopback port (or, with
//! `WARREN_TEST_EXTERNAL_ADDR=127.0.0.1:5673`, an already running broker such as RabbitMQ, to check
//! that the tests describe RabbitMQ's behaviour), lapin helpers shared by the integration tests,
//! and a TCP proxy whose connections a test can cut abruptly. Beside it: `raw.rs`, a raw AMQP
//! client for the cases real clients cannot produce (garbage, silence, bad frames);
//! `deliveries.rs`, a consumer's events in order; `replies.rs`, the broker's exceptions and
//! their reply texts. (Not every test file uses every helper: hence the allowances below.)
//!
//! Every wait here is bounded (see [`WAIT`]) so that a broken broker fails a test instead of
//! hanging it.
#![allow(dead_code)]

mod deliveries;
mod raw;
mod replies;

#[allow(unused_imports)]
pub use deliveries::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use replies::*;

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use warren::server::Tuning;
use warren::{Server, ServerOptions};
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
    /// The management API's address, when it was asked for (`management_listeners`).
    pub management: Option<SocketAddr>,
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
                management: None,
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
        let mut server = Server::bind(options).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let management = server
            .management_addrs()
            .expect("management addrs")
            .first()
            .copied();
        let running = warren::management::start(&mut server).expect("management API");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
            drop(running);
            result
        });
        Broker {
            addr,
            management,
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

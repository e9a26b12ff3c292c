//! The definitions tests' harness: a Warren running in this process with its broker and users
//! at hand, a varied topology to export, and comparisons of documents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{connect_uri, declare_queue_named, int, table, text, within};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::{Channel, Connection, ExchangeKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren::broker::vhost::VhostLimits;
use warren::broker::Broker;
use warren::definitions::{self, Definitions};
use warren::server::{Password, Permission, TopicPermission, User, Users};
use warren::{Server, ServerOptions};
use warren_protocol::types::{AMQPValue, FieldTable};

/// A Warren running in this process, with its broker and users at hand.
pub struct Node {
    pub addr: std::net::SocketAddr,
    pub broker: Arc<Broker>,
    pub users: Users,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

pub fn data_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-defs-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Node {
    pub async fn start(dir: &Path, vhosts: &[&str]) -> Node {
        let options = ServerOptions {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.to_owned(),
            vhosts: vhosts.iter().map(|v| v.to_string()).collect(),
            ..ServerOptions::default()
        };
        let server = Server::bind(options).await.expect("bind");
        let (addr, broker, users) = (
            server.local_addr().expect("addr"),
            server.broker(),
            server.users(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            broker,
            users,
            stop,
            task,
        }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server run");
    }

    pub async fn open(&self, user: &str, password: &str, vhost: &str) -> (Connection, Channel) {
        let vhost = vhost.replace('/', "%2f");
        let conn = connect_uri(&format!("amqp://{user}:{password}@{}/{vhost}", self.addr)).await;
        let channel = conn.create_channel().await.expect("channel");
        (conn, channel)
    }

    pub fn export(&self) -> Definitions {
        definitions::export(&self.broker, &self.users)
    }
}

pub fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

pub async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) {
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, options, args),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.declare {name}: {e}"));
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within(
        "queue.bind",
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.bind {queue}: {e}"));
}

/// A varied topology over AMQP, a user with a topic permission, and a second vhost with limits.
pub async fn populate(node: &Node) {
    let (conn, ch) = node.open("guest", "guest", "/").await;
    declare_exchanges(&ch).await;
    declare_queues_and_bindings(&ch).await;
    add_vhost_and_user(node);
    // The exclusive queue and its connection stay for the export.
    std::mem::forget(conn);
}

async fn declare_exchanges(ch: &Channel) {
    exchange(
        ch,
        "ex.topic",
        ExchangeKind::Topic,
        durable(),
        FieldTable::default(),
    )
    .await;
    exchange(
        ch,
        "ex.headers",
        ExchangeKind::Headers,
        durable(),
        FieldTable::default(),
    )
    .await;
    let internal = ExchangeDeclareOptions {
        durable: true,
        internal: true,
        ..Default::default()
    };
    exchange(
        ch,
        "ex.internal",
        ExchangeKind::Fanout,
        internal,
        FieldTable::default(),
    )
    .await;
    let alt = table(&[("alternate-exchange", text("ex.internal"))]);
    exchange(ch, "ex.alt", ExchangeKind::Fanout, durable(), alt).await;
    let transient = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    exchange(
        ch,
        "ex.transient",
        ExchangeKind::Direct,
        transient,
        FieldTable::default(),
    )
    .await;
}

async fn declare_queues_and_bindings(ch: &Channel) {
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let nested = AMQPValue::FieldTable(table(&[("deep", int(1))]));
    let args = table(&[
        ("x-message-ttl", int(60000)),
        ("x-dead-letter-exchange", text("ex.topic")),
        ("x-custom", nested),
    ]);
    declare_queue_named(ch, "q.durable", durable_q, args).await;
    declare_queue_named(
        ch,
        "q.transient",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare_queue_named(ch, "q.exclusive", exclusive, FieldTable::default()).await;
    let server_named = declare_queue_named(
        ch,
        "",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    bind(ch, "q.durable", "ex.topic", "a.#", FieldTable::default()).await;
    let headers = table(&[
        ("x-match", text("any")),
        ("k", text("v")),
        ("n", int(5)),
        ("on", AMQPValue::Boolean(true)),
    ]);
    bind(ch, "q.durable", "ex.headers", "", headers).await;
    bind(
        ch,
        "q.durable",
        "amq.direct",
        "direct-key",
        FieldTable::default(),
    )
    .await;
    bind(
        ch,
        "q.transient",
        "ex.transient",
        "k",
        FieldTable::default(),
    )
    .await;
    bind(ch, "q.exclusive", "ex.topic", "#", FieldTable::default()).await;
    bind(
        ch,
        server_named.name().as_str(),
        "ex.topic",
        "#",
        FieldTable::default(),
    )
    .await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            "ex.topic".into(),
            "ex.alt".into(),
            "x".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
}

fn add_vhost_and_user(node: &Node) {
    let other = node.broker.add_vhost("other").expect("vhost");
    other.set_limits(VhostLimits {
        max_connections: Some(7),
        max_queues: Some(20),
    });
    let mut users = node.users.list();
    users.push(User {
        name: "carol".into(),
        password: Password::Plain("carol-pw".into()),
        loopback_only: false,
        tags: vec!["monitoring".into()],
        max_connections: Some(3),
    });
    let mut permissions = node.users.permissions();
    permissions.push(Permission::full("carol", "/"));
    permissions.push(Permission::full("carol", "other"));
    let regex = |r: &str| regex::Regex::new(r).expect("regex");
    let topic = TopicPermission {
        user: "carol".into(),
        vhost: "/".into(),
        exchange: "ex.topic".into(),
        write: regex("^a\\."),
        read: regex(".*"),
    };
    node.users.replace_all(users, permissions, vec![topic]);
}

/// Only what survives a restart: durable exchanges, queues and the bindings between them.
pub fn durable_part(
    defs: &Definitions,
) -> (
    Vec<definitions::ExchangeDef>,
    Vec<definitions::QueueDef>,
    Vec<definitions::BindingDef>,
) {
    let exchanges: Vec<_> = defs
        .exchanges
        .iter()
        .flatten()
        .filter(|x| x.durable)
        .cloned()
        .collect();
    let queues: Vec<_> = defs
        .queues
        .iter()
        .flatten()
        .filter(|q| q.durable)
        .cloned()
        .collect();
    let lasting = |name: &str, kind: &str| match kind {
        "queue" => queues.iter().any(|q| q.name == name),
        _ => name.starts_with("amq.") || exchanges.iter().any(|x| x.name == name),
    };
    let bindings = defs
        .bindings
        .iter()
        .flatten()
        .filter(|b| lasting(&b.source, "exchange") && lasting(&b.destination, &b.destination_type))
        .cloned()
        .collect();
    (exchanges, queues, bindings)
}

/// Each list of a document in one order (RabbitMQ writes them in no particular order).
pub fn sorted<T: serde::Serialize>(list: Option<&Vec<T>>) -> Vec<String> {
    let mut out: Vec<String> = list
        .into_iter()
        .flatten()
        .map(|item| serde_json::to_string(item).expect("json"))
        .collect();
    out.sort();
    out
}

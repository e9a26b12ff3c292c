//! A large durable topology survives `kill -9`: thousands of durable queues, each bound to a
//! durable exchange, some deleted and some unbound again, all answered before the broker is
//! killed; after a restart every queue and binding answered is there and nothing deleted is
//! (the definitions log, `store/definitions/`).

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use warren_process::{TempDir, WarrenProcess};

const QUEUES: usize = 5_000;
const CONNECTIONS: usize = 4;

fn uri(warren: &WarrenProcess) -> String {
    format!("amqp://guest:guest@{}/%2f", warren.addr)
}

async fn open(uri: &str) -> (Connection, Channel) {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Declares queues `first..QUEUES` step `CONNECTIONS`, each bound to `scale` by its name; deletes
/// every tenth and unbinds every tenth plus one.
async fn declare_some(uri: String, first: usize) {
    let (_connection, channel) = open(&uri).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for i in (first..QUEUES).step_by(CONNECTIONS) {
        let name = format!("q{i}");
        channel
            .queue_declare(name.as_str().into(), durable, FieldTable::default())
            .await
            .expect("declare");
        let bind = QueueBindOptions::default();
        let (queue, key) = (name.as_str().into(), name.as_str().into());
        channel
            .queue_bind(queue, "scale".into(), key, bind, FieldTable::default())
            .await
            .expect("bind");
        match i % 10 {
            0 => {
                let options = QueueDeleteOptions::default();
                channel
                    .queue_delete(name.as_str().into(), options)
                    .await
                    .expect("delete");
            }
            1 => {
                let (queue, key) = (name.as_str().into(), name.as_str().into());
                channel
                    .queue_unbind(queue, "scale".into(), key, FieldTable::default())
                    .await
                    .expect("unbind");
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_durable_queues_and_bindings_survive_kill_9() {
    let data = TempDir::new("topology-scale");
    let warren = WarrenProcess::start_with_management(data.path());
    let (connection, channel) = open(&uri(&warren)).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            "scale".into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let declarers: Vec<_> = (0..CONNECTIONS)
        .map(|first| tokio::spawn(declare_some(uri(&warren), first)))
        .collect();
    for declarer in declarers {
        declarer.await.expect("declarer");
    }
    drop(connection);
    drop(warren); // SIGKILL

    let warren = WarrenProcess::start_with_management(data.path());
    warren
        .wait_for_log("recovered durable definitions", 1)
        .await;
    let (connection, channel) = open(&uri(&warren)).await;
    for i in 0..QUEUES {
        let name = format!("q{i}");
        let properties = BasicProperties::default();
        channel
            .basic_publish(
                "scale".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                properties,
            )
            .await
            .expect("publish");
    }
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut channel = channel;
    for i in 0..QUEUES {
        let name = format!("q{i}");
        let declared = channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await;
        match (i % 10, declared) {
            (0, Err(_)) => channel = connection.create_channel().await.expect("channel"),
            (0, Ok(_)) => panic!("{name} was deleted before the kill and is back"),
            (1, Ok(queue)) => assert_eq!(queue.message_count(), 0, "{name} was unbound"),
            (_, Ok(queue)) => assert_eq!(queue.message_count(), 1, "{name} lost its binding"),
            (_, Err(e)) => panic!("{name} was lost: {e}"),
        }
    }
}

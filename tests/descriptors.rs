//! File descriptors: the real broker started with a low `RLIMIT_NOFILE` (soft and hard) keeps
//! thousands of durable queues with messages (their logs open files on demand and close idle
//! ones), and when descriptors do run out (client connections holding them) it refuses the one
//! operation that needed a file, keeps accepting once some are freed, and loses nothing.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use common::{connect_uri, within};
use warren_process::{TempDir, WarrenProcess};

fn uri(warren: &WarrenProcess) -> String {
    format!("amqp://guest:guest@{}/%2f", warren.addr)
}

const DURABLE: QueueDeclareOptions = QueueDeclareOptions {
    passive: false,
    durable: true,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

async fn confirming_channel(connection: &Connection) -> Channel {
    let channel = within("channel", connection.create_channel())
        .await
        .expect("channel");
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    channel
}

/// Publishes `body` persistently to `queue` and waits for its confirm; true if acked.
async fn publish(channel: &Channel, queue: &str, body: &[u8]) -> bool {
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let publish = async {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                persistent,
            )
            .await?
            .await
    };
    within("publish", publish)
        .await
        .is_ok_and(|confirm| confirm.is_ack())
}

const QUEUES: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_durable_queues_at_256_descriptors_keep_every_message() {
    let data = TempDir::new("fds-queues");
    let warren = WarrenProcess::start_with_open_files(data.path(), 256);
    let connection = connect_uri(&uri(&warren)).await;
    let channel = confirming_channel(&connection).await;
    for i in 0..QUEUES {
        let queue = format!("q{i}");
        within(
            "declare",
            channel.queue_declare(queue.as_str().into(), DURABLE, FieldTable::default()),
        )
        .await
        .expect("declare a durable queue");
    }
    // Every queue gets a message; the confirms are awaited in groups of 100.
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for group in (0..QUEUES).collect::<Vec<_>>().chunks(100) {
        let mut confirms = Vec::new();
        for i in group {
            let body = format!("message {i}");
            let confirm = channel
                .basic_publish(
                    "".into(),
                    format!("q{i}").as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    persistent.clone(),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirm = within("confirm", confirm).await.expect("confirm");
            assert!(confirm.is_ack(), "a persistent message was not confirmed");
        }
    }
    assert!(warren.open_files() < 256, "{} open", warren.open_files());
    // Idle: the logs give their descriptors back (two sweeps of a second).
    let started = Instant::now();
    while warren.open_files() > 64 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        warren.open_files() <= 64,
        "{} open when idle",
        warren.open_files()
    );
    within("close", connection.close(200, "bye".into()))
        .await
        .expect("close");
    assert!(warren.stop().await, "the broker stops cleanly");

    let warren = WarrenProcess::start_with_open_files(data.path(), 256);
    let connection = connect_uri(&uri(&warren)).await;
    let channel = within("channel", connection.create_channel())
        .await
        .expect("channel");
    for i in 0..QUEUES {
        let got = within(
            "get",
            channel.basic_get(
                format!("q{i}").as_str().into(),
                BasicGetOptions { no_ack: true },
            ),
        )
        .await
        .expect("basic.get")
        .unwrap_or_else(|| panic!("q{i} lost its message"));
        assert_eq!(got.delivery.data, format!("message {i}").into_bytes());
    }
    let log = warren.log();
    assert!(!log.contains("Too many open files"), "{log}");
    within("close", connection.close(200, "bye".into()))
        .await
        .expect("close");
    assert!(warren.stop().await);
}

/// The broker's soft and hard limit in the next test: few enough to run out quickly.
const TINY: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_refuses_cleanly_and_serves_again_once_connections_close() {
    let data = TempDir::new("fds-out");
    let warren = WarrenProcess::start_with_open_files(data.path(), TINY);
    let control = connect_uri(&uri(&warren)).await;
    let channel = confirming_channel(&control).await;
    within(
        "declare",
        channel.queue_declare("before".into(), DURABLE, FieldTable::default()),
    )
    .await
    .expect("declare");
    assert!(publish(&channel, "before", b"kept").await);

    // Sockets that never speak hold the broker's descriptors (the rest wait in the backlog).
    let hogs: Vec<_> = (0..2 * TINY)
        .map(|_| std::net::TcpStream::connect(warren.addr).expect("connect"))
        .collect();
    warren
        .wait_for_log("accept failed: out of file descriptors", 1)
        .await;

    let refused = within(
        "declare while out of descriptors",
        channel.queue_declare("during".into(), DURABLE, FieldTable::default()),
    )
    .await
    .expect_err("no descriptor for the new queue's log");
    let text = format!("{refused:?}");
    assert!(text.contains("INTERNAL_ERROR"), "541: {text}");
    assert!(text.contains("out of file descriptors"), "{text}");
    assert!(text.contains(&format!("limit is {TINY}")), "{text}");

    drop(hogs);
    warren.wait_for_log("accepting connections again", 1).await;
    let connection = connect_uri(&uri(&warren)).await;
    let channel = confirming_channel(&connection).await;
    let during = within(
        "declare",
        channel.queue_declare("during".into(), DURABLE, FieldTable::default()),
    )
    .await
    .expect("declares succeed again");
    let before = within(
        "declare",
        channel.queue_declare("before".into(), DURABLE, FieldTable::default()),
    )
    .await
    .expect("declares succeed again");
    assert_eq!(during.message_count(), 0);
    assert_eq!(before.message_count(), 1, "nothing lost");
    assert!(publish(&channel, "during", b"after").await);
    let log = warren.log();
    let bursts = log.matches("accept failed").count();
    assert!(
        (1..=3).contains(&bursts),
        "logged once per burst, not per attempt: {log}"
    );
    within("close", connection.close(200, "bye".into()))
        .await
        .expect("close");
    assert!(warren.stop().await);
}

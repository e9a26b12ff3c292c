//! The real `warren` started with `config/orders.toml`: messages published with lapin go where the
//! file says (topic patterns, the alternate exchange, the retry path through a dead-letter
//! exchange and a TTL'd queue), the file's user logs in and guest does not, and a restart whose
//! file disagrees with a recovered durable queue is refused, naming both definitions, with
//! nothing applied.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::path::{Path, PathBuf};

use lapin::options::{BasicGetOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use common::{confirm_channel, connect_uri, get_all, publish_confirmed, within};
use warren_process::{run_warren, TempDir, WarrenProcess};

fn orders_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/orders.toml")
}

/// The file's user, in the file's vhost.
fn shop_uri(process: &WarrenProcess) -> String {
    format!("amqp://shop:orders-secret@{}/shop", process.addr)
}

#[tokio::test]
async fn messages_are_routed_as_orders_toml_says() {
    let data = TempDir::new("orders-routing");
    let warren = WarrenProcess::start(&orders_toml(), data.path());
    let connection = connect_uri(&shop_uri(&warren)).await;
    let channel = confirm_channel(&connection).await;
    for key in [
        "order.eu.placed",
        "order.us.cancelled",
        "order.eu.shipped",
        "order.us.paid",
        "invoice.eu.sent",
    ] {
        publish_confirmed(
            &channel,
            "orders",
            key,
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let expected = [
        ("payments", vec!["order.eu.placed", "order.us.cancelled"]),
        ("risk", vec!["order.eu.placed"]),
        (
            "notifications",
            vec!["order.us.cancelled", "order.eu.shipped"],
        ),
        (
            "analytics",
            vec![
                "order.eu.placed",
                "order.us.cancelled",
                "order.eu.shipped",
                "order.us.paid",
            ],
        ),
        // Routed nowhere by "orders": its alternate exchange parks it.
        ("orders.parked", vec!["invoice.eu.sent"]),
        ("payments.retry", vec![]),
    ];
    for (queue, bodies) in expected {
        assert_eq!(get_all(&channel, queue).await, bodies, "queue {queue}");
    }
    // With [[users]] in the file, guest is not a user.
    let guest = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let refused = within(
        "guest login",
        Connection::connect(&guest, ConnectionProperties::default()),
    )
    .await;
    assert!(refused.is_err(), "guest logged in");
    assert!(warren.stop().await, "warren did not stop cleanly");
}

#[tokio::test]
async fn a_rejected_payment_comes_back_through_the_retry_queue() {
    // orders.toml with a 200 ms wait instead of 30 s, so that the test is quick.
    let dir = TempDir::new("orders-retry");
    let text = std::fs::read_to_string(orders_toml()).expect("orders.toml");
    assert!(text.contains("\"x-message-ttl\" = 30000"));
    let file = dir.path().join("orders.toml");
    std::fs::write(
        &file,
        text.replace("\"x-message-ttl\" = 30000", "\"x-message-ttl\" = 200"),
    )
    .expect("write the file");
    let warren = WarrenProcess::start(&file, &dir.path().join("data"));
    let connection = connect_uri(&shop_uri(&warren)).await;
    let channel = confirm_channel(&connection).await;
    publish_confirmed(
        &channel,
        "orders",
        "order.eu.placed",
        b"charge 42",
        BasicProperties::default(),
    )
    .await;
    let first = within(
        "basic.get",
        channel.basic_get("payments".into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .expect("the payment");
    within(
        "basic.reject",
        channel.basic_reject(
            first.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ),
    )
    .await
    .expect("basic.reject");
    // Rejected -> orders.retry -> payments.retry (200 ms) -> "" -> payments.
    let again = within("the payment to come back", async {
        loop {
            let got = channel
                .basic_get("payments".into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            match got {
                Some(message) => return message,
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(again.delivery.data, b"charge 42");
    let headers = again
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    // One death in payments (rejected), one in payments.retry (expired).
    assert_eq!(deaths.as_slice().len(), 2, "{deaths:?}");
    assert!(warren.stop().await);
}

#[tokio::test]
async fn a_file_that_disagrees_with_a_recovered_queue_stops_the_start() {
    let dir = TempDir::new("orders-conflict");
    let data = dir.path().join("data");
    let warren = WarrenProcess::start(&orders_toml(), &data);
    assert!(warren.stop().await);
    // The same file, but payments.retry waits a minute and a new queue is added.
    let text = std::fs::read_to_string(orders_toml()).expect("orders.toml");
    let changed = text.replace("\"x-message-ttl\" = 30000", "\"x-message-ttl\" = 60000")
        + "\n[[queues]]\nname = \"extra\"\nvhost = \"shop\"\ndurable = true\n";
    let file = dir.path().join("changed.toml");
    std::fs::write(&file, &changed).expect("write the file");
    let output = run_warren(&[
        "--config",
        file.to_str().expect("a UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let line = changed
        .lines()
        .position(|l| l == "name = \"payments.retry\"")
        .expect("the queue's line")
        + 1;
    let expected = format!(
        "{}:{line}:8: queue 'payments.retry' in vhost 'shop' is declared here as a durable \
         queue with arguments x-dead-letter-exchange = '', x-message-ttl = '60000', but it \
         exists as a durable queue with arguments x-dead-letter-exchange = '', x-message-ttl = \
         '30000' (recovered from the data directory): inequivalent arg 'x-message-ttl' for queue \
         'payments.retry' in vhost 'shop': received '60000' but current is '30000'",
        file.display()
    );
    assert!(log.contains(&expected), "expected\n{expected}\nin\n{log}");
    // Nothing was applied: the new queue does not exist after a start with the old file.
    let warren = WarrenProcess::start(&orders_toml(), &data);
    let connection = connect_uri(&shop_uri(&warren)).await;
    let channel = common::channel(&connection).await;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    common::assert_reply(
        channel
            .queue_declare("extra".into(), passive, Default::default())
            .await,
        404,
    );
    assert!(warren.stop().await);
}

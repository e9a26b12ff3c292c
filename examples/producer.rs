//! Publishes persistent messages to the durable queue "warren-example" with publisher confirms,
//! and reports how many the broker acknowledged.
//!
//! ```sh
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example producer -- 1000
//! ```

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const QUEUE: &str = "warren-example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1000,
    };

    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(QUEUE.into(), durable, FieldTable::default())
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    // Publish everything first, then wait for the confirms: the broker acks as it goes.
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!("message {i}");
        let confirm = channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                persistent.clone(),
            )
            .await?;
        confirms.push(confirm);
    }
    let mut acked = 0;
    for confirm in confirms {
        if confirm.await?.is_ack() {
            acked += 1;
        }
    }
    println!("published {count} messages to {QUEUE}, {acked} acked by the broker");

    connection.close(200, "done".into()).await?;
    Ok(())
}

//! Consumes from the durable queue "warren-example" (prefetch 100, manual acks), printing each
//! message; stops after N messages (default 1000) or when nothing arrives for 5 seconds.
//!
//! ```sh
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example consumer -- 1000
//! ```

use std::time::Duration;

use lapin::message::DeliveryResult;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

const QUEUE: &str = "warren-example";
const IDLE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let limit: usize = match std::env::args().nth(1) {
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
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // Hand each delivery to this task in order (lapin's Consumer is also a futures Stream).
    let (sender, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |delivery: DeliveryResult| {
        let _ = sender.send(delivery);
        std::future::ready(())
    });

    let mut received = 0;
    while received < limit {
        let delivery = match tokio::time::timeout(IDLE, deliveries.recv()).await {
            Err(_) => {
                println!("nothing for {IDLE:?}, stopping");
                break;
            }
            Ok(None) | Ok(Some(Ok(None))) => {
                println!("the broker cancelled the consumer");
                break;
            }
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(Some(Ok(Some(delivery)))) => delivery,
        };
        received += 1;
        println!("{received}: {}", String::from_utf8_lossy(&delivery.data));
        delivery.ack(BasicAckOptions::default()).await?;
    }
    println!("received {received} messages from {QUEUE}");

    connection.close(200, "done".into()).await?;
    Ok(())
}

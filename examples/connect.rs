//! Connects to a running Warren (or any AMQP 0-9-1 broker) with lapin, opens a few channels,
//! prints the negotiated limits, and closes cleanly.
//!
//! ```sh
//! cargo run --release -- --listen 127.0.0.1:5672 --data-dir ./warren-data &
//! cargo run --example connect -- amqp://guest:guest@127.0.0.1:5672/%2f
//! ```

use lapin::{Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&uri, ConnectionProperties::default()).await?;
    println!("connected to {uri}");
    let configuration = connection.configuration();
    println!(
        "  channel_max={} frame_max={} heartbeat={}",
        configuration.channel_max(),
        configuration.frame_max(),
        configuration.heartbeat()
    );
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(connection.create_channel().await?);
    }
    println!(
        "  opened channels {:?}",
        channels.iter().map(|c| c.id()).collect::<Vec<_>>()
    );
    for channel in &channels {
        channel.close(200, "bye".into()).await?;
    }
    connection.close(200, "bye".into()).await?;
    println!("closed cleanly");
    Ok(())
}

//! The real `warren` started with `config/flash-sale.toml`: the checkout queue takes 1000
//! waiting checkouts, and a producer in confirm mode is nacked at once for the next one
//! (reject-publish), while the queue keeps the first thousand.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::path::Path;

use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;

use common::{confirm_channel, connect_uri, queue_counts, within};
use warren_process::{TempDir, WarrenProcess};

#[tokio::test]
async fn a_full_checkout_queue_nacks_the_next_checkout() {
    let data = TempDir::new("flash-sale");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/flash-sale.toml");
    let warren = WarrenProcess::start(&file, data.path());
    let connection = connect_uri(&format!("amqp://guest:guest@{}/%2f", warren.addr)).await;
    let channel = confirm_channel(&connection).await;
    let mut confirms = Vec::new();
    for i in 0..1001 {
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "shop".into(),
                "checkout".into(),
                BasicPublishOptions::default(),
                format!("checkout {i}").as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    let mut acked = 0;
    let mut nacked = Vec::new();
    for (i, confirm) in confirms.into_iter().enumerate() {
        let confirmation = within("confirm", confirm).await.expect("confirm");
        if confirmation.is_ack() {
            acked += 1;
        } else {
            nacked.push(i);
        }
    }
    assert_eq!((acked, nacked), (1000, vec![1000]));
    assert_eq!(queue_counts(&channel, "checkout").await.0, 1000);
    // Refused, not dead-lettered (that would be reject-publish-dlx).
    assert_eq!(queue_counts(&channel, "checkout.failed").await.0, 0);
    assert!(warren.stop().await);
}

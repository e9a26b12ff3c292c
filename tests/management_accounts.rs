//! Users, vhosts and permissions made through the management API outlive a reload of the
//! configuration file (which owns the accounts it lists) and a restart: they are recorded in the
//! data directory and applied over the file's.

#[path = "management/api.rs"]
mod api;
mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;
use warren_process::{TempDir, WarrenProcess};

async fn alice_declares(process: &WarrenProcess, queue: &str) -> u32 {
    let uri = format!("amqp://alice:s3cret@{}/shop", process.addr);
    let connection = common::connect_uri(&uri).await;
    let channel = common::channel(&connection).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .expect("alice may declare in shop");
    let _ = connection.close(200, "bye".into()).await;
    declared.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_made_through_the_api_outlive_a_reload_and_a_restart() {
    let dir = TempDir::new("management-accounts");
    let config = dir.path().join("warren.toml");
    std::fs::write(&config, "[server]\nlog_level = \"info\"\n").expect("config");
    let data = dir.path().join("data");
    let process = WarrenProcess::start_with_config_and_management(&config, &data);
    let api = api::Api::new(process.management.expect("management"));
    let made = api::blocking({
        let api = api.clone();
        move || {
            let vhost = api.put("/api/vhosts/shop", json!({})).status;
            let user = api
                .put(
                    "/api/users/alice",
                    json!({"password": "s3cret", "tags": ""}),
                )
                .status;
            let grant = json!({"configure": ".*", "write": ".*", "read": ".*"});
            let perm = api.put("/api/permissions/shop/alice", grant).status;
            (vhost, user, perm)
        }
    })
    .await;
    assert_eq!(made, (201, 201, 201));
    alice_declares(&process, "orders").await;
    // A reload replaces the accounts with the file's, then applies the API's again.
    process.hangup();
    process.wait_for_log("configuration reloaded", 1).await;
    assert_eq!(
        alice_declares(&process, "orders").await,
        0,
        "after the reload"
    );
    drop(process);
    let process = WarrenProcess::start_with_config_and_management(&config, &data);
    assert_eq!(
        alice_declares(&process, "orders").await,
        0,
        "after a restart"
    );
    let api = api::Api::new(process.management.expect("management"));
    let (queues, removed) = api::blocking(move || {
        let queues = api.get("/api/queues/shop");
        let removed = api.delete("/api/users/alice").status;
        (queues, removed)
    })
    .await;
    assert_eq!(
        queues.body[0]["name"], "orders",
        "the durable queue came back in its vhost"
    );
    assert_eq!(removed, 204);
    drop(process);
    let process = WarrenProcess::start_with_config_and_management(&config, &data);
    let uri = format!("amqp://alice:s3cret@{}/shop", process.addr);
    let refused = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()).await;
    assert!(
        refused.is_err(),
        "alice's deletion outlived the restart too"
    );
}

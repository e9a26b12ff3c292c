//! Warren's management API driven by RabbitMQ's own Rust client of it, `rabbitmq_http_client`
//! (blocking): its typed responses only deserialize when the JSON has the fields and types
//! RabbitMQ's has, so every call below checks a shape as well as a behaviour.

mod common;

use common::{open_confirming, Broker};
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use rabbitmq_http_client::blocking_api::Client;
use rabbitmq_http_client::commons::ExchangeType;
use rabbitmq_http_client::password_hashing;
use rabbitmq_http_client::requests::{
    ExchangeParams, Permissions, QueueParams, UserParams, VirtualHostParams,
};
use warren::ServerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqs_http_client_manages_warren() {
    let broker = Broker::start_with(ServerOptions {
        management_listeners: vec!["127.0.0.1:0".into()],
        ..ServerOptions::default()
    })
    .await;
    let endpoint = format!("http://{}/api", broker.management.expect("management"));
    let (_conn, channel) = open_confirming(&broker).await;
    let client_endpoint = endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let rc = Client::new(client_endpoint.as_str(), "guest", "guest");
        let overview = rc.overview().expect("overview");
        assert_eq!(overview.rabbitmq_version, "3.10.8");
        assert!(!overview.listeners.is_empty());
        let vhost = VirtualHostParams::named("reports");
        rc.create_vhost(&vhost).expect("create vhost");
        let salt = password_hashing::salt();
        let hash = password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "pw");
        rc.create_user(&UserParams {
            name: "reporter",
            password_hash: &hash,
            tags: "management",
        })
        .expect("create user");
        let grant = Permissions {
            user: "reporter",
            vhost: "reports",
            configure: ".*",
            read: ".*",
            write: ".*",
        };
        rc.declare_permissions(&grant).expect("permissions");
        let queue = QueueParams::new_durable_classic_queue("daily", None);
        rc.declare_queue("reports", &queue).expect("declare queue");
        let exchange = ExchangeParams::durable("feeds", ExchangeType::Topic, None);
        rc.declare_exchange("reports", &exchange)
            .expect("declare exchange");
        rc.bind_queue("reports", "daily", "feeds", Some("daily.#"), None)
            .expect("bind");
        let routed = rc
            .publish_message("reports", "feeds", "daily.sales", "42", Default::default())
            .expect("publish");
        assert!(routed.routed);
        let info = rc.get_queue_info("reports", "daily").expect("queue info");
        assert_eq!((info.name.as_str(), info.durable), ("daily", true));
        assert_eq!(info.message_count, 1);
        let got = rc
            .get_messages("reports", "daily", 1, "ack_requeue_false")
            .expect("get");
        assert_eq!(got[0].payload, "42");
        let bindings = rc
            .list_queue_bindings("reports", "daily")
            .expect("bindings");
        assert!(bindings
            .iter()
            .any(|b| b.source == "feeds" && b.routing_key == "daily.#"));
        let users = rc.list_users().expect("users");
        assert!(users.iter().any(|u| u.name == "reporter"));
        let perms = rc.list_permissions_of("reporter").expect("permissions");
        assert_eq!(perms[0].vhost, "reports");
        assert!(rc
            .list_exchanges_in("reports")
            .expect("exchanges")
            .iter()
            .any(|x| x.name == "feeds"));
        assert!(rc
            .list_vhosts()
            .expect("vhosts")
            .iter()
            .any(|v| v.name == "reports"));
        rc.health_check_local_alarms().expect("no alarms");
        rc.health_check_cluster_wide_alarms().expect("no alarms");
        let definitions = rc.export_cluster_wide_definitions().expect("export");
        assert!(definitions.contains("\"daily\""));
        rc.purge_queue("reports", "daily").expect("purge");
        rc.delete_queue("reports", "daily", false)
            .expect("delete queue");
        rc.delete_exchange("reports", "feeds", false)
            .expect("delete exchange");
        rc.delete_user("reporter", false).expect("delete user");
        rc.delete_vhost("reports", false).expect("delete vhost");
        assert!(
            rc.get_queue_info("reports", "daily").is_err(),
            "gone with its vhost"
        );
    })
    .await
    .expect("the client's calls");
    channel
        .basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    tokio::task::spawn_blocking(move || {
        let rc = Client::new(endpoint.as_str(), "guest", "guest");
        let connections = rc.list_connections().expect("connections");
        assert_eq!(connections.len(), 1);
        assert_eq!(connections[0].username, "guest");
        rc.list_channels().expect("channels");
        rc.list_consumers().expect("consumers");
        rc.list_nodes().expect("nodes");
        let name = connections[0].name.clone();
        rc.close_connection(&name, Some("done"), false)
            .expect("close");
    })
    .await
    .expect("the client's calls");
}

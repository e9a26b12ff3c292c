//! The `[server]` settings that change how the broker is reached: several listeners, a limit on
//! connections, the file named by `WARREN_CONFIG` with command-line flags overriding it, and
//! JSON log lines.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use warren::{Server, ServerOptions};

use common::{connect_uri, within};
use warren_process::{TempDir, WarrenProcess};

/// An in-process server with `options` on loopback ports; its addresses and a stop switch.
async fn start(
    mut options: ServerOptions,
    data: &TempDir,
) -> (Vec<std::net::SocketAddr>, tokio::sync::oneshot::Sender<()>) {
    options.listen = "127.0.0.1:0".into();
    options.data_dir = data.path().to_owned();
    let server = Server::bind(options).await.expect("bind");
    let addrs = server.local_addrs().expect("addresses");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (addrs, stop)
}

fn uri(addr: std::net::SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

#[tokio::test]
async fn every_listener_serves() {
    let data = TempDir::new("listeners");
    let options = ServerOptions {
        extra_listeners: vec!["127.0.0.1:0".into(), "127.0.0.1:0".into()],
        ..ServerOptions::default()
    };
    let (addrs, _stop) = start(options, &data).await;
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    for addr in addrs {
        let connection = connect_uri(&uri(addr)).await;
        let channel = common::channel(&connection).await;
        common::close_channel(&channel).await;
    }
}

#[tokio::test]
async fn max_connections_refuses_one_more() {
    let data = TempDir::new("max-connections");
    let options = ServerOptions {
        max_connections: Some(2),
        ..ServerOptions::default()
    };
    let (addrs, _stop) = start(options, &data).await;
    let uri = uri(addrs[0]);
    let first = connect_uri(&uri).await;
    let second = connect_uri(&uri).await;
    let third = within(
        "a third connection",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await;
    // Refused as RabbitMQ refuses it: 530 at connection.open.
    let error = third.expect_err("a third connection was accepted");
    let refusal =
        common::amqp_error(&error).unwrap_or_else(|| panic!("not a connection.close: {error:?}"));
    assert_eq!(refusal.get_id(), 530);
    assert_eq!(
        refusal.get_message().as_str(),
        "NOT_ALLOWED - connection refused: node connection limit (2) is reached"
    );
    // The first two still work; once one closes, a new one is let in.
    common::channel(&second).await;
    within("close", first.close(200, "bye".into()))
        .await
        .expect("close");
    common::wait_until("a connection after one closed", || {
        let uri = uri.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                Connection::connect(&uri, ConnectionProperties::default()),
            )
            .await
            .is_ok_and(|connected| connected.is_ok())
        }
    })
    .await;
}

#[tokio::test]
async fn warren_config_names_the_file_and_flags_override_it() {
    let dir = TempDir::new("warren-config-env");
    let file_data_dir = dir.path().join("from-the-file");
    let flag_data_dir = dir.path().join("from-the-flag");
    let file = dir.path().join("warren.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisteners = [\"127.0.0.1:1\"]\ndata_dir = {:?}\nlog_format = \"json\"\n\n\
             [[queues]]\nname = \"from-env\"\n",
            file_data_dir.display().to_string()
        ),
    )
    .expect("write the file");
    // The process listens where --listen says (not port 1), in --data-dir.
    let warren = WarrenProcess::start_with_env(&file, &flag_data_dir);
    assert!(flag_data_dir.is_dir());
    assert!(!file_data_dir.exists());
    let connection = connect_uri(&uri(warren.addr)).await;
    let channel = common::channel(&connection).await;
    // The file's queue was declared.
    assert_eq!(common::queue_counts(&channel, "from-env").await, (0, 0));
    // log_format = "json": one JSON object per line.
    let log = warren.wait_for_log("listening for AMQP 0-9-1", 1).await;
    let line = log
        .lines()
        .find(|line| line.contains("listening for AMQP 0-9-1"))
        .expect("the line");
    assert!(
        line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":\"INFO\""),
        "{line}"
    );
    assert!(warren.stop().await);
}

//! Resource alarms: above the memory high watermark (or under the free disk limit) publishing
//! connections get `connection.blocked` and are not read from; consumers keep working; when the
//! alarm clears they get `connection.unblocked` and what they sent meanwhile is handled.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{within, RawClient};
use warren_protocol::method::Method;
use warren_protocol::spec::{connection, queue, AMQPClass};

async fn queue_depth(client: &mut RawClient, channel: u16, name: &str) -> u32 {
    let declare = queue::Declare {
        queue: name.into(),
        passive: true,
        ..Default::default()
    };
    client
        .send_method(
            channel,
            AMQPClass::Queue(queue::AMQPMethod::Declare(declare)),
        )
        .await;
    match client.recv_any_method().await {
        Some((_, Method::Other(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))))) => {
            ok.message_count
        }
        other => panic!("expected declare-ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_memory_alarm_blocks_publishers_until_it_clears() {
    let dir = std::env::temp_dir().join(format!("warren-alarms-{}", std::process::id()));
    let options = warren::ServerOptions {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.clone(),
        memory_high_watermark: u64::MAX,
        alarm_interval: Duration::from_millis(20),
        ..warren::ServerOptions::default()
    };
    let server = warren::Server::bind(options).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let thresholds = server.thresholds();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let (mut publisher, tune) = RawClient::handshake(addr, 0).await;
    publisher.open_channel(1).await;
    let (mut observer, _) = RawClient::handshake(addr, 0).await;
    observer.open_channel(1).await;
    let declare = queue::Declare {
        queue: "alarmed".into(),
        ..Default::default()
    };
    observer
        .send_method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare)))
        .await;
    observer.recv_any_method().await.expect("declare-ok");

    publisher
        .send_publish(1, "", "alarmed", false, b"before", tune.frame_max)
        .await;
    within("first publish", async {
        while queue_depth(&mut observer, 1, "alarmed").await < 1 {}
    })
    .await;

    // The alarm goes off: the publishing connection is told, and its next publish waits.
    thresholds.memory_high_watermark.store(1, Ordering::Relaxed);
    match within("connection.blocked", publisher.recv_any_method()).await {
        Some((0, Method::Other(AMQPClass::Connection(connection::AMQPMethod::Blocked(b))))) => {
            assert!(
                b.reason.as_str().starts_with("memory alarm"),
                "{}",
                b.reason
            );
        }
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    publisher
        .send_publish(1, "", "alarmed", false, b"during", tune.frame_max)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A connection that only consumes and declares is still served.
    assert_eq!(queue_depth(&mut observer, 1, "alarmed").await, 1);

    // Cleared: unblocked, and the held publish is handled.
    thresholds
        .memory_high_watermark
        .store(u64::MAX, Ordering::Relaxed);
    match within("connection.unblocked", publisher.recv_any_method()).await {
        Some((0, Method::Other(AMQPClass::Connection(connection::AMQPMethod::Unblocked(_))))) => {}
        other => panic!("expected connection.unblocked, got {other:?}"),
    }
    within("held publish", async {
        while queue_depth(&mut observer, 1, "alarmed").await < 2 {}
    })
    .await;

    let _ = stop.send(());
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&dir);
}

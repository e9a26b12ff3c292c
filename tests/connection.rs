//! Connections with a real client (lapin): handshake, channels, close, authentication, vhosts,
//! heartbeats and graceful shutdown.

mod common;

use std::time::Duration;

use common::{tuning_with_heartbeat, Broker, RawClient};
use lapin::{Connection, ConnectionProperties};
use warren::ServerOptions;
use warren_protocol::frame::FrameType;
use warren_protocol::spec::{basic, channel, connection, AMQPClass};

#[tokio::test]
async fn lapin_opens_100_channels_and_closes_cleanly() {
    let broker = Broker::start().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let mut channels = Vec::new();
    for _ in 0..100 {
        channels.push(conn.create_channel().await.expect("channel.open"));
    }
    let ids: std::collections::HashSet<u16> = channels.iter().map(|c| c.id()).collect();
    assert_eq!(ids.len(), 100);
    assert!(channels.iter().all(|c| c.status().connected()));
    for channel in channels.iter().take(50) {
        channel
            .close(200, "bye".into())
            .await
            .expect("channel.close");
    }
    // Closed numbers can be used again, and the others still work.
    let again = conn.create_channel().await.expect("reopen");
    assert!(again.status().connected());
    conn.close(200, "done".into())
        .await
        .expect("connection.close");
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn wrong_password_is_refused_with_403() {
    let broker = Broker::start().await;
    let err = Connection::connect(
        &broker.uri_with("guest", "nope", "%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect_err("login must fail");
    let text = format!("{err:?}");
    assert!(
        text.contains("403") || text.contains("ACCESS_REFUSED") || text.contains("AccessRefused"),
        "{text}"
    );
    // The broker keeps serving.
    let ok = Connection::connect(&broker.uri(), ConnectionProperties::default()).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn unknown_vhost_is_530_not_allowed() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::login(broker.addr, 0).await;
    client.send_open("/nope").await;
    assert_eq!(client.expect_connection_close().await, 530);
    // lapin sees the same refusal.
    let err = Connection::connect(
        &broker.uri_with("guest", "guest", "nope"),
        ConnectionProperties::default(),
    )
    .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled() {
    if common::skip_if_external("Warren's login throttle") {
        return;
    }
    let broker = Broker::start().await;
    let login = |password: &'static str| {
        let uri = broker.uri_with("guest", password, "%2f");
        async move { Connection::connect(&uri, ConnectionProperties::default()).await }
    };
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert!(login("wrong").await.is_err());
    }
    // Within the same second even the right password is refused (five failed logins take a few
    // milliseconds; on a machine so slow that they took most of the second, there is nothing
    // to check).
    let throttled = login("guest").await;
    if started.elapsed() < Duration::from_millis(900) {
        assert!(
            throttled.is_err(),
            "a sixth attempt within the second was let in"
        );
    }
    // ...and once the second is over, it gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let connection = login("guest")
        .await
        .expect("the right password after the window");
    connection.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn connections_stuck_in_their_handshake_are_bounded() {
    if common::skip_if_external("Warren's handshake bound") {
        return;
    }
    let broker = Broker::start_with(ServerOptions {
        max_handshakes: 2,
        ..ServerOptions::default()
    })
    .await;
    // Open connections no longer count: they are past their handshake.
    let open: Vec<Connection> = open_connections(&broker, 3).await;
    // Two sockets that never speak hold the two handshake places...
    let silent = [
        RawClient::connect(broker.addr).await,
        RawClient::connect(broker.addr).await,
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third socket is closed at once.
    let mut third = RawClient::connect(broker.addr).await;
    assert_eq!(
        third.recv_within(Duration::from_secs(2)).await,
        Ok(None),
        "the third socket was not closed"
    );
    // Once they are gone, clients get in again.
    drop(silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.assert_serving().await;
    drop(open);
}

/// `count` connections opened one after another (each past `connection.open`).
async fn open_connections(broker: &Broker, count: usize) -> Vec<Connection> {
    let mut open = Vec::new();
    for _ in 0..count {
        let connection = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .expect("connect");
        open.push(connection);
    }
    open
}

#[tokio::test]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let broker = Broker::start_with(ServerOptions {
        tuning: tuning_with_heartbeat(1),
        ..ServerOptions::default()
    })
    .await;
    let (mut client, tune) = RawClient::handshake(broker.addr, 1).await;
    assert_eq!(tune.heartbeat, 1);
    let started = tokio::time::Instant::now();
    // The broker sends heartbeats at half the interval...
    let frame = client.recv().await.expect("a heartbeat");
    assert_eq!(frame.frame_type, FrameType::Heartbeat);
    // ...and, hearing nothing, closes the socket after two intervals.
    loop {
        match client.recv_within(Duration::from_secs(5)).await {
            Ok(Some(frame)) => assert_eq!(frame.frame_type, FrameType::Heartbeat),
            Ok(None) => break,
            Err(()) => panic!("silent client was not dropped"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "dropped too early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(4),
        "dropped too late: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_client_that_sends_heartbeats_stays_connected() {
    let broker = Broker::start_with(ServerOptions {
        tuning: tuning_with_heartbeat(1),
        ..ServerOptions::default()
    })
    .await;
    let (mut client, _) = RawClient::handshake(broker.addr, 1).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        client.send_frame(FrameType::Heartbeat, 0, &[]).await;
    }
    // Still alive after 3.2 s: a channel opens.
    client
        .send_method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
    match client.recv_method().await {
        Some((1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) => {}
        Some(other) => panic!("unexpected {other:?}"),
        None => panic!("connection was dropped"),
    }
}

#[tokio::test]
async fn shutdown_sends_320_connection_forced() {
    let broker = Broker::start().await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let shutdown = tokio::spawn(broker.shutdown());
    assert_eq!(client.expect_connection_close().await, 320);
    client
        .send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        )
        .await;
    assert!(
        client.recv().await.is_none(),
        "socket closes after close-ok"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn update_secret_is_answered_and_the_connection_goes_on() {
    // RabbitMQ's extension for refreshing a token (connection.update-secret, 10/70): for a user
    // of the broker's own user list, whose credentials cannot expire, RabbitMQ answers
    // update-secret-ok to any secret; the clients' own test suites send one that is not the
    // password.
    let broker = Broker::start().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    for secret in ["guest", "a-refreshed-token"] {
        conn.update_secret(secret.into(), "token refresh".into())
            .await
            .expect("update-secret-ok");
    }
    let channel = conn
        .create_channel()
        .await
        .expect("the connection still serves");
    channel
        .close(200, "ok".into())
        .await
        .expect("channel close");
    conn.close(200, "done".into()).await.expect("close");
}

/// A user removed since login (a reload) is disconnected at once with 320, as RabbitMQ's
/// `delete_user` does; an update-secret racing with it would get 403 (`Users::update_secret`).
#[tokio::test]
async fn a_user_removed_since_login_is_disconnected_with_320() {
    if common::skip_if_external("replaces the broker's users") {
        return;
    }
    let users = warren::server::Users::default();
    let options = ServerOptions {
        users: users.clone(),
        ..ServerOptions::default()
    };
    let broker = Broker::start_with(options).await;
    let (mut client, _) = RawClient::handshake(broker.addr, 0).await;
    users.replace(Vec::new(), Vec::new());
    assert_eq!(
        client.expect_connection_close_text().await,
        (320, "CONNECTION_FORCED - user 'guest' is deleted".into())
    );
    let default = warren::server::Users::default();
    users.replace(default.list(), default.permissions());
    broker.assert_serving().await;
}

#[tokio::test]
async fn the_default_listener_takes_ipv6_and_ipv4_clients() {
    if common::skip_if_external("binds its own listener") {
        return;
    }
    // "[::]" is bound dual-stack (RabbitMQ's default listener); port 0 here so that tests can
    // run side by side.
    let data_dir = std::env::temp_dir().join(format!("warren-test-dual-{}", std::process::id()));
    let options = ServerOptions {
        listen: "[::]:0".into(),
        data_dir: data_dir.clone(),
        ..ServerOptions::default()
    };
    let server = warren::Server::bind(options).await.expect("bind [::]:0");
    let port = server.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    for host in ["127.0.0.1", "[::1]"] {
        let uri = format!("amqp://guest:guest@{host}:{port}/%2f");
        // guest is loopback-only: an IPv4 client seen as ::ffff:127.0.0.1 must count as loopback.
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect over {host}: {e}"));
        let channel = conn.create_channel().await.expect("channel");
        channel
            .close(200, "ok".into())
            .await
            .expect("channel close");
        conn.close(200, "ok".into()).await.expect("close");
    }
    let _ = stop.send(());
    task.await.expect("server task").expect("server run");
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn after_close_ok_the_broker_reads_until_the_client_closes_its_socket() {
    // amqplib sends connection.close ahead of publishes it had queued on a channel; RabbitMQ
    // answers close-ok and discards what follows until the client closes. A broker that closes
    // its socket at once resets the client's further writes (EPIPE), and amqplib's close callback
    // never fires.
    use tokio::io::AsyncWriteExt;
    let broker = Broker::start().await;
    let (mut client, tune) = RawClient::handshake(broker.addr, 0).await;
    client.open_channel(1).await;
    let close = connection::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    };
    client
        .send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        )
        .await;
    loop {
        match client.recv_method().await {
            Some((0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => break,
            Some(_) => continue,
            None => panic!("socket closed before close-ok"),
        }
    }
    // Frames the client had queued before its close keep coming after close-ok: 4 MiB of them,
    // more than the socket buffers take, so a broker that stopped reading would be found out.
    for _ in 0..64 {
        let body = vec![7u8; 64 * 1024];
        let publish = basic::Publish {
            exchange: "".into(),
            routing_key: "nowhere".into(),
            mandatory: false,
            immediate: false,
        };
        let mut out = bytes::BytesMut::new();
        warren_protocol::method::encode_method(
            &mut out,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        );
        let properties = warren_protocol::content::encode_properties(&Default::default());
        warren_protocol::content::encode_content(&mut out, 1, &properties, &body, tune.frame_max);
        tokio::time::timeout(Duration::from_secs(2), client.stream.write_all(&out))
            .await
            .expect("the broker keeps reading after close-ok")
            .expect("no reset after close-ok");
    }
    client.stream.shutdown().await.expect("shutdown");
    // Then the broker closes its side at once, without waiting for its close timeout.
    let closed = client.recv_within(Duration::from_secs(1)).await;
    assert!(
        matches!(closed, Ok(None)),
        "socket not closed after the client's FIN"
    );
    broker.assert_serving().await;
}

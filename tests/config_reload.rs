//! SIGHUP reloads the configuration file of the real `warren` with no restart: a binding added to
//! the file is added and one removed is removed, a queue dropped from the file is deleted, and
//! nothing else moves: messages in untouched queues stay, and what a client declared survives.
//! An invalid file, or one that would need a queue redeclared, changes nothing of the kind.

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_protocol::spec::{connection, AMQPClass};

use common::{
    assert_reply, confirm_channel, connect_uri, declare_queue_named, get_all, publish_confirmed,
    queue_counts, within, RawClient,
};
use warren_process::{TempDir, WarrenProcess};

const BEFORE: &str = r#"
[[exchanges]]
name = "events"
type = "direct"

[[queues]]
name = "kept"

[[queues]]
name = "moved"

[[queues]]
name = "dropped"

[[bindings]]
source = "events"
destination = "kept"
routing_key = "k"

[[bindings]]
source = "events"
destination = "moved"
routing_key = "old"
"#;

/// The binding of `moved` changes from "old" to "new", `dropped` goes, `added` comes.
const AFTER: &str = r#"
[[exchanges]]
name = "events"
type = "direct"

[[queues]]
name = "kept"

[[queues]]
name = "moved"

[[queues]]
name = "added"

[[bindings]]
source = "events"
destination = "kept"
routing_key = "k"

[[bindings]]
source = "events"
destination = "moved"
routing_key = "new"

[[bindings]]
source = "events"
destination = "added"
routing_key = "old"
"#;

/// Publishes to `events` with `key`, waiting for the confirm.
async fn publish_event(channel: &lapin::Channel, key: &str, body: &str) {
    publish_confirmed(
        channel,
        "events",
        key,
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await;
}

/// Whether a mandatory publish with `key` comes back unroutable.
async fn unroutable(channel: &lapin::Channel, key: &str) -> bool {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            "events".into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"probe",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("confirm", confirm).await.expect("confirm");
    confirmation.take_message().is_some()
}

#[tokio::test]
async fn sighup_adds_and_removes_bindings_without_a_restart() {
    let dir = TempDir::new("reload");
    let file = dir.path().join("warren.toml");
    std::fs::write(&file, BEFORE).expect("write the file");
    let warren = WarrenProcess::start(&file, &dir.path().join("data"));
    let pid = warren.pid();
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = confirm_channel(&connection).await;
    // A client's own queue and binding on the file's exchange.
    declare_queue_named(
        &channel,
        "client",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    within(
        "queue.bind",
        channel.queue_bind(
            "client".into(),
            "events".into(),
            "c".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind");
    for i in 0..5 {
        publish_event(&channel, "k", &format!("kept {i}")).await;
    }
    publish_event(&channel, "old", "moved 0").await;
    publish_event(&channel, "c", "client 0").await;
    assert_eq!(queue_counts(&channel, "kept").await.0, 5);

    std::fs::write(&file, AFTER).expect("edit the file");
    warren.hangup();
    warren.wait_for_log("configuration reloaded", 1).await;
    assert_eq!(warren.pid(), pid);

    // The binding with "old" went from `moved` and came to `added`; "new" reaches `moved`.
    publish_event(&channel, "old", "added 0").await;
    publish_event(&channel, "new", "moved 1").await;
    assert_eq!(get_all(&channel, "moved").await, vec!["moved 0", "moved 1"]);
    assert_eq!(get_all(&channel, "added").await, vec!["added 0"]);
    // `dropped` is gone; the untouched queue kept every message; the client's things stayed.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let probe = common::channel(&connection).await;
    assert_reply(
        probe
            .queue_declare("dropped".into(), passive, FieldTable::default())
            .await,
        404,
    );
    publish_event(&channel, "c", "client 1").await;
    assert_eq!(
        get_all(&channel, "client").await,
        vec!["client 0", "client 1"]
    );
    let kept: Vec<String> = (0..5).map(|i| format!("kept {i}")).collect();
    assert_eq!(get_all(&channel, "kept").await, kept);
    assert!(warren.stop().await);
}

#[tokio::test]
async fn an_invalid_or_conflicting_file_changes_nothing() {
    let dir = TempDir::new("reload-refused");
    let file = dir.path().join("warren.toml");
    std::fs::write(&file, BEFORE).expect("write the file");
    let warren = WarrenProcess::start(&file, &dir.path().join("data"));
    let uri = format!("amqp://guest:guest@{}/%2f", warren.addr);
    let connection = connect_uri(&uri).await;
    let channel = confirm_channel(&connection).await;
    publish_event(&channel, "k", "kept 0").await;

    // A broken file: the problems are logged with their place, and nothing changes.
    std::fs::write(
        &file,
        AFTER.replace("type = \"direct\"", "type = \"direkt\""),
    )
    .expect("edit");
    warren.hangup();
    let log = warren
        .wait_for_log("the configuration is invalid: nothing was changed", 1)
        .await;
    assert!(
        log.contains("warren.toml:4:8: unknown exchange type 'direkt'"),
        "{log}"
    );
    assert!(!unroutable(&channel, "old").await, "the old binding went");
    assert!(unroutable(&channel, "new").await, "the new binding came");

    // A queue redeclared with other arguments is refused (and keeps its messages); the rest of
    // the file is applied.
    let conflicting = AFTER.replace(
        "name = \"kept\"\n",
        "name = \"kept\"\narguments = { \"x-max-length\" = 10 }\n",
    );
    std::fs::write(&file, conflicting).expect("edit");
    warren.hangup();
    let log = warren.wait_for_log("configuration reloaded", 1).await;
    assert!(
        log.contains(
            "queue 'kept' in vhost '/' is declared here as a transient queue with \
                      arguments x-max-length = '10', but it exists as a transient queue with no \
                      arguments"
        ),
        "{log}"
    );
    assert!(
        !unroutable(&channel, "new").await,
        "the new binding did not come"
    );
    assert_eq!(get_all(&channel, "kept").await, vec!["kept 0"]);
    assert!(warren.stop().await);
}

#[tokio::test]
async fn sighup_replaces_the_users() {
    let dir = TempDir::new("reload-users");
    let file = dir.path().join("warren.toml");
    std::fs::write(&file, BEFORE).expect("write the file");
    let warren = WarrenProcess::start(&file, &dir.path().join("data"));
    let app = format!("amqp://app:app-secret@{}/%2f", warren.addr);
    let login = |uri: String| async move {
        within(
            "connect",
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
    };
    assert!(login(app.clone()).await.is_err(), "app is not a user yet");
    let users = "[[users]]\nname = \"app\"\n\
                 password_hash = \"AQIDBKSR723asempcKRBlyrPWcL1zhEiLhyy/se3Vks7S5g+\"\n\
                 [[permissions]]\nuser = \"app\"\nconfigure = \".*\"\nwrite = \".*\"\nread = \".*\"\n";
    std::fs::write(&file, format!("{BEFORE}\n{users}")).expect("edit the file");
    warren.hangup();
    warren.wait_for_log("configuration reloaded", 1).await;
    let connection = login(app).await.expect("app logs in");
    // guest is no longer a user: the file now lists the users.
    let guest = format!("amqp://guest:guest@{}/%2f", warren.addr);
    assert!(login(guest).await.is_err(), "guest still logs in");
    drop(connection);
    assert!(warren.stop().await);
}

/// Users and vhosts a reload adds and removes (passwords: the user's name).
fn accounts(vhosts: &[&str], users: &[&str]) -> String {
    let mut text = String::new();
    for vhost in vhosts {
        text += &format!("[[vhosts]]\nname = \"{vhost}\"\n");
    }
    for user in users {
        text += &format!("[[users]]\nname = \"{user}\"\npassword = \"{user}\"\n");
        for vhost in std::iter::once(&"/").chain(vhosts) {
            text += &format!(
                "[[permissions]]\nuser = \"{user}\"\nvhost = \"{vhost}\"\n\
                 configure = \".*\"\nwrite = \".*\"\nread = \".*\"\n"
            );
        }
    }
    text
}

/// Logs in as `user` (password: its name) and opens `vhost`: the reply to connection.open.
async fn open_as(
    addr: std::net::SocketAddr,
    user: &str,
    vhost: &str,
) -> (RawClient, Option<(u16, String)>) {
    let (mut client, _) = RawClient::login_as(addr, user, user, 0).await;
    client.send_open(vhost).await;
    match client.recv_method().await {
        Some((0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) => (client, None),
        Some((0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))) => {
            let refused = (close.reply_code, close.reply_text.as_str().to_owned());
            (client, Some(refused))
        }
        other => panic!("expected open-ok or close, got {other:?}"),
    }
}

#[tokio::test]
async fn sighup_creates_and_deletes_vhosts_and_closes_the_connections_of_what_it_removed() {
    let dir = TempDir::new("reload-vhosts");
    let file = dir.path().join("warren.toml");
    let reload = |text: String| {
        std::fs::write(&file, text).expect("write the file");
    };
    reload(accounts(&[], &["guest", "app"]));
    let warren = WarrenProcess::start(&file, &dir.path().join("data"));
    let (_, refused) = open_as(warren.addr, "guest", "extra").await;
    assert_eq!(
        refused,
        Some((530, "NOT_ALLOWED - vhost extra not found".into()))
    );

    // Added: opened at once, and usable (a durable queue with a persistent message).
    reload(accounts(&["extra"], &["guest", "app"]));
    warren.hangup();
    warren.wait_for_log("configuration reloaded", 1).await;
    let (mut app, refused) = open_as(warren.addr, "app", "extra").await;
    assert_eq!(refused, None);
    let guest = connect_uri(&format!("amqp://guest:guest@{}/extra", warren.addr)).await;
    let channel = confirm_channel(&guest).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue_named(&channel, "q", durable, FieldTable::default()).await;
    publish_confirmed(
        &channel,
        "",
        "q",
        b"kept?",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    drop(guest);

    // A user removed: its connections close with 320.
    reload(accounts(&["extra"], &["guest"]));
    warren.hangup();
    assert_eq!(
        within("the close", app.expect_connection_close_text()).await,
        (320, "CONNECTION_FORCED - user 'app' is deleted".into())
    );

    // A vhost removed: its connections close with 320, and it is gone with its queues.
    let (mut guest_raw, refused) = open_as(warren.addr, "guest", "extra").await;
    assert_eq!(refused, None);
    reload(accounts(&[], &["guest"]));
    warren.hangup();
    assert_eq!(
        within("the close", guest_raw.expect_connection_close_text()).await,
        (320, "CONNECTION_FORCED - vhost 'extra' is deleted".into())
    );
    let (_, refused) = open_as(warren.addr, "guest", "extra").await;
    assert_eq!(
        refused,
        Some((530, "NOT_ALLOWED - vhost extra not found".into()))
    );
    reload(accounts(&["extra"], &["guest"]));
    warren.hangup();
    warren.wait_for_log("configuration reloaded", 4).await;
    let guest = connect_uri(&format!("amqp://guest:guest@{}/extra", warren.addr)).await;
    let channel = guest.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = channel
        .queue_declare("q".into(), passive, FieldTable::default())
        .await;
    assert_reply(missing, 404);
    drop(guest);
    assert!(warren.stop().await);
}

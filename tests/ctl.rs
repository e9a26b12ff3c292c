//! `warren ctl` against the real broker: the binary started with its management API on a free
//! port, things made over AMQP with lapin, and `warren ctl ...` run as a subprocess whose
//! tables (aligned columns, right values), `--json` output, changes and exit codes are checked.
//!
//! Export and import (`/api/definitions`) are checked against Warren, and against a RabbitMQ
//! management API too when `WARREN_TEST_RABBITMQ_MGMT` is set (its URL, or empty for
//! http://127.0.0.1:15673).

mod common;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::process::{Command, Output};

use futures_core::Stream;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use common::{channel, connect_uri, publish, queue_counts, wait_for_ready, within};
use warren_process::{free_port, TempDir, WarrenProcess};

/// `warren ctl --url URL ARGS`, to its end, with no `WARREN_*` settings from the environment.
fn ctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("ctl")
        .args(["--url", url])
        .args(args)
        .env_remove("WARREN_URL")
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .output()
        .expect("run warren ctl")
}

/// [`ctl`], which must succeed: its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let output = ctl(url, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "warren ctl {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// [`ok`] with `--json`, parsed.
fn json(url: &str, args: &[&str]) -> Value {
    let stdout = ok(url, &[args, &["--json"]].concat());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {stdout}"))
}

/// A table's cells, split where two positions running are blank on every line (the gaps
/// between aligned columns; a cell may hold single spaces): the header, then the rows.
fn cells(table: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let lines: Vec<&str> = table.lines().collect();
    let width = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let space = |at: usize| {
        lines
            .iter()
            .all(|l| l.as_bytes().get(at).is_none_or(|&b| b == b' '))
    };
    let blank = |at: usize| space(at) && (space(at + 1) || (at > 0 && space(at - 1)));
    let mut spans = Vec::new();
    let mut start = None;
    for at in 0..=width {
        match (start, at < width && !blank(at)) {
            (None, true) => start = Some(at),
            (Some(from), false) => {
                spans.push((from, at));
                start = None;
            }
            _ => {}
        }
    }
    let split = |line: &str| {
        spans
            .iter()
            .map(|&(from, to)| {
                line.get(from..to.min(line.len()))
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let mut rows = lines.iter().map(|l| split(l));
    let header = rows.next().unwrap_or_default();
    (header, rows.collect())
}

/// The row whose column `key` is `value`, as column -> cell.
fn row(table: &str, key: &str, value: &str) -> std::collections::HashMap<String, String> {
    let (header, rows) = cells(table);
    let column = header.iter().position(|h| h == key).expect(key);
    let found = rows.into_iter().find(|r| r[column] == value);
    let found = found.unwrap_or_else(|| panic!("no row with {key} = {value} in\n{table}"));
    header.into_iter().zip(found).collect()
}

/// The broker with its management API; its API's URL and an AMQP URI (as guest).
fn start(test: &str) -> (WarrenProcess, TempDir, String, String) {
    let data = TempDir::new(test);
    let process = WarrenProcess::start_with_management(data.path());
    let management = process.management.expect("a management address");
    let url = format!("http://{management}");
    let uri = format!("amqp://guest:guest@{}/%2f", process.addr);
    (process, data, url, uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_is_an_aligned_table_and_json() {
    let (_process, _data, url, uri) = start("ctl-list-queues");
    let connection = connect_uri(&uri).await;
    let ch = channel(&connection).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    common::declare_queue_named(&ch, "orders", durable, FieldTable::default()).await;
    common::declare_queue_named(&ch, "idle", Default::default(), FieldTable::default()).await;
    for _ in 0..3 {
        publish(&ch, "", "orders", b"order").await;
    }
    wait_for_ready(&ch, "orders", 3).await;
    let options = BasicConsumeOptions::default();
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "idle".into(),
            "ctl-tag".into(),
            options,
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume");

    let table = ok(&url, &["list", "queues"]);
    let (header, rows) = cells(&table);
    assert_eq!(
        header,
        [
            "vhost",
            "name",
            "type",
            "durable",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "publish_rate",
            "deliver_rate"
        ],
        "{table}"
    );
    assert_eq!(rows.len(), 2, "{table}");
    let orders = row(&table, "name", "orders");
    assert_eq!(orders["vhost"], "/");
    assert_eq!(orders["type"], "classic");
    assert_eq!(orders["durable"], "true");
    assert_eq!(orders["messages_ready"], "3");
    assert_eq!(orders["messages_unacknowledged"], "0");
    assert_eq!(orders["consumers"], "0");
    let idle = row(&table, "name", "idle");
    assert_eq!(
        (idle["durable"].as_str(), idle["consumers"].as_str()),
        ("false", "1")
    );
    // Numbers are right-aligned under their header.
    let lines: Vec<&str> = table.lines().collect();
    let end = lines[0].find("messages_ready").expect("header") + "messages_ready".len();
    let line = lines
        .iter()
        .find(|l| l.contains("orders"))
        .expect("orders line");
    assert_eq!(&line[end - 2..end], " 3", "{table}");

    let listed = json(&url, &["list", "queues"]);
    let orders = listed
        .as_array()
        .and_then(|all| all.iter().find(|q| q["name"] == "orders"))
        .unwrap_or_else(|| panic!("no orders in {listed}"));
    assert_eq!(orders["messages_ready"], 3);
    assert_eq!(orders["durable"], true);
    let in_vhost = ok(&url, &["list", "queues", "--vhost", "/"]);
    assert_eq!(cells(&in_vhost).1.len(), 2, "{in_vhost}");
    let nowhere = ctl(&url, &["list", "queues", "--vhost", "nowhere"]);
    assert_eq!(nowhere.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert!(stderr.contains("404"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_shows_what_amqp_made() {
    let (_process, _data, url, uri) = start("ctl-listings");
    let properties = ConnectionProperties::default().with_connection_name("ctl-client".into());
    let connection = within("connect", Connection::connect(&uri, properties))
        .await
        .expect("connect");
    let ch = channel(&connection).await;
    common::declare_queue_named(&ch, "jobs", Default::default(), FieldTable::default()).await;
    common::declare_exchange_named(
        &ch,
        "work",
        lapin::ExchangeKind::Topic,
        FieldTable::default(),
    )
    .await;
    common::bind_queue(&ch, "jobs", "work", "job.*").await;
    let options = BasicConsumeOptions::default();
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "jobs".into(),
            "worker-1".into(),
            options,
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume");

    let exchanges = ok(&url, &["list", "exchanges"]);
    let work = row(&exchanges, "name", "work");
    assert_eq!(
        (work["type"].as_str(), work["vhost"].as_str()),
        ("topic", "/"),
        "{exchanges}"
    );
    assert_eq!(row(&exchanges, "name", "amq.fanout")["type"], "fanout");
    let bindings = ok(&url, &["list", "bindings"]);
    let binding = row(&bindings, "routing_key", "job.*");
    assert_eq!(
        (binding["source"].as_str(), binding["destination"].as_str()),
        ("work", "jobs")
    );
    assert_eq!(binding["destination_type"], "queue");
    check_client_listings(&url);
    let consumers = ok(&url, &["list", "consumers"]);
    let worker = row(&consumers, "consumer_tag", "worker-1");
    assert_eq!(
        (worker["queue"].as_str(), worker["ack_required"].as_str()),
        ("jobs", "true")
    );
    assert_eq!(
        row(&ok(&url, &["list", "users"]), "name", "guest")["tags"],
        "administrator"
    );
    assert_eq!(
        row(&ok(&url, &["list", "vhosts"]), "name", "/")["messages"],
        "0"
    );
    let permissions = ok(&url, &["list", "permissions"]);
    let guest = row(&permissions, "user", "guest");
    assert_eq!(
        (guest["configure"].as_str(), guest["read"].as_str()),
        (".*", ".*")
    );

    let listed = json(&url, &["list", "consumers"]);
    assert_eq!(listed[0]["consumer_tag"], "worker-1", "{listed}");
    assert_eq!(
        json(&url, &["list", "channels", "--vhost", "other"]),
        Value::Array(vec![])
    );
}

/// `list connections` and `list channels` show the client of `every_listing_shows_what_amqp_made`.
fn check_client_listings(url: &str) {
    let connections = ok(url, &["list", "connections"]);
    let client = row(&connections, "client_name", "ctl-client");
    assert_eq!(
        (client["user"].as_str(), client["vhost"].as_str()),
        ("guest", "/"),
        "{connections}"
    );
    assert_eq!(client["channels"], "1");
    let channels = ok(url, &["list", "channels"]);
    let opened = row(&channels, "user", "guest");
    assert_eq!(opened["consumers"], "1", "{channels}");
    assert!(opened["name"].ends_with("(1)"), "{channels}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_node() {
    let (process, _data, url, _uri) = start("ctl-status");
    let status = ok(&url, &["status"]);
    let value = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(&format!("{key}:")));
        let line = line.unwrap_or_else(|| panic!("no {key} in\n{status}"));
        line[key.len() + 1..].trim().to_owned()
    };
    assert!(value("node").starts_with("warren@"), "{status}");
    assert!(value("product").starts_with("Warren "), "{status}");
    assert_eq!(value("rabbitmq_version"), "3.10.8");
    assert!(value("uptime").ends_with('s'), "{status}");
    let listeners = value("listeners");
    assert!(
        listeners.contains(&format!("amqp {}", process.addr)),
        "{status}"
    );
    assert!(
        listeners.contains(&format!("http {}", url.trim_start_matches("http://"))),
        "{status}"
    );
    assert_eq!(value("queues"), "0");
    assert_eq!(value("messages_ready"), "0");
    assert_eq!(value("publish_rate"), "0.0/s");
    // The values start in one column.
    let column = |line: &str| {
        line.find(':')
            .map(|c| c + 1 + line[c + 1..].len() - line[c + 1..].trim_start().len())
    };
    let starts: std::collections::HashSet<_> = status.lines().map(column).collect();
    assert_eq!(starts.len(), 1, "{status}");
    let parsed = json(&url, &["status"]);
    assert_eq!(parsed["overview"]["rabbitmq_version"], "3.10.8");
    assert!(parsed["node"]["uptime"].is_u64(), "{parsed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_purge_and_delete_round_trip() {
    let (_process, _data, url, uri) = start("ctl-topology");
    let connection = connect_uri(&uri).await;
    let ch = channel(&connection).await;
    ok(
        &url,
        &[
            "declare",
            "queue",
            "parcels",
            "--durable",
            "--arg",
            "x-max-length=10",
        ],
    );
    ok(
        &url,
        &[
            "declare",
            "exchange",
            "depot",
            "--type",
            "topic",
            "--durable",
        ],
    );
    let bound = ok(
        &url,
        &[
            "declare",
            "binding",
            "--source",
            "depot",
            "--destination",
            "parcels",
            "--routing-key",
            "parcel.*",
        ],
    );
    assert!(bound.contains("bound 'parcels' to 'depot'"), "{bound}");
    let queues = json(&url, &["list", "queues"]);
    assert_eq!(queues[0]["name"], "parcels", "{queues}");
    assert_eq!(queues[0]["durable"], true);
    assert_eq!(queues[0]["arguments"]["x-max-length"], 10);
    let exchanges = json(&url, &["list", "exchanges"]);
    let depot = exchanges
        .as_array()
        .and_then(|all| all.iter().find(|x| x["name"] == "depot"));
    assert_eq!(
        depot.map(|x| (x["type"].clone(), x["durable"].clone())),
        Some(("topic".into(), true.into()))
    );

    // Routed through the binding the ctl made; then purged.
    publish(&ch, "depot", "parcel.small", b"a").await;
    publish(&ch, "depot", "parcel.large", b"b").await;
    wait_for_ready(&ch, "parcels", 2).await;
    assert_eq!(
        ok(&url, &["purge", "parcels"]).trim(),
        "purged queue 'parcels' in vhost '/'"
    );
    assert_eq!(queue_counts(&ch, "parcels").await, (0, 0));

    // --if-empty refuses a queue with messages, with the API's reason.
    publish(&ch, "depot", "parcel.small", b"a").await;
    wait_for_ready(&ch, "parcels", 1).await;
    let refused = ctl(&url, &["delete", "queue", "parcels", "--if-empty"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    ok(&url, &["delete", "queue", "parcels"]);
    assert_eq!(json(&url, &["list", "queues"]), Value::Array(vec![]));
    ok(&url, &["delete", "exchange", "depot"]);
    let exchanges = ok(&url, &["list", "exchanges"]);
    assert!(!exchanges.contains("depot"), "{exchanges}");
    // Deleting what is not there: 404, exit 1.
    let missing = ctl(&url, &["delete", "exchange", "depot"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_and_vhosts_round_trip() {
    let (process, _data, url, _uri) = start("ctl-accounts");
    ok(&url, &["add-vhost", "shop"]);
    ok(
        &url,
        &[
            "add-user",
            "clerk",
            "s3cret",
            "--tags",
            "monitoring,management",
        ],
    );
    ok(
        &url,
        &[
            "set-permissions",
            "clerk",
            "--vhost",
            "shop",
            "--configure",
            "^clerk-",
            "--write",
            "^clerk-",
        ],
    );
    let users = ok(&url, &["list", "users"]);
    assert_eq!(
        row(&users, "name", "clerk")["tags"],
        "monitoring,management",
        "{users}"
    );
    let permissions = ok(&url, &["list", "permissions", "--vhost", "shop"]);
    let clerk = row(&permissions, "user", "clerk");
    assert_eq!(
        (
            clerk["configure"].as_str(),
            clerk["write"].as_str(),
            clerk["read"].as_str()
        ),
        ("^clerk-", "^clerk-", ".*"),
        "{permissions}"
    );
    assert!(ok(&url, &["list", "vhosts"]).contains("shop"));
    // The new user reaches its vhost over AMQP, and the API as itself.
    let clerk_uri = format!("amqp://clerk:s3cret@{}/shop", process.addr);
    let connection = connect_uri(&clerk_uri).await;
    let ch = channel(&connection).await;
    common::declare_queue_named(&ch, "clerk-q", Default::default(), FieldTable::default()).await;
    let own = ok(
        &url,
        &[
            "--user",
            "clerk",
            "--password",
            "s3cret",
            "list",
            "queues",
            "--vhost",
            "shop",
        ],
    );
    assert_eq!(row(&own, "name", "clerk-q")["vhost"], "shop", "{own}");
    let _ = connection.close(200, "bye".into()).await;

    ok(&url, &["clear-permissions", "clerk", "--vhost", "shop"]);
    let refused = Connection::connect(&clerk_uri, ConnectionProperties::default()).await;
    assert!(
        refused.is_err(),
        "clerk connected to shop without permissions"
    );
    assert_eq!(
        json(&url, &["list", "permissions", "--vhost", "shop"]),
        Value::Array(vec![])
    );
    ok(&url, &["delete-user", "clerk"]);
    assert!(!ok(&url, &["list", "users"]).contains("clerk"));
    ok(&url, &["delete-vhost", "shop"]);
    assert!(!ok(&url, &["list", "vhosts"]).contains("shop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_gives_the_client_the_reason() {
    let (_process, _data, url, uri) = start("ctl-close");
    let properties = ConnectionProperties::default().with_connection_name("doomed".into());
    let connection = within("connect", Connection::connect(&uri, properties))
        .await
        .expect("connect");
    let _channel = channel(&connection).await;
    let mut events = std::pin::pin!(connection.events_listener());
    let listed = json(&url, &["list", "connections"]);
    let name = listed[0]["name"]
        .as_str()
        .expect("a connection name")
        .to_owned();
    let closed = ok(
        &url,
        &["close-connection", &name, "--reason", "maintenance window"],
    );
    assert_eq!(closed.trim(), format!("closed connection '{name}'"));
    let error = within("the connection's error", async {
        loop {
            match std::future::poll_fn(|cx| events.as_mut().poll_next(cx)).await {
                Some(lapin::Event::Error(error)) => return error,
                Some(_) => continue,
                None => panic!("the connection's events ended without an error"),
            }
        }
    })
    .await;
    let amqp = common::amqp_error(&error).unwrap_or_else(|| panic!("not the broker's: {error:?}"));
    assert_eq!(amqp.get_id(), 320, "{amqp:?}");
    assert!(
        amqp.get_message().as_str().contains("maintenance window"),
        "{amqp:?}"
    );
    common::wait_until("the connection to go", || async {
        json(&url, &["list", "connections"]) == Value::Array(vec![])
    })
    .await;
}

#[test]
fn errors_exit_1_with_the_reason_and_usage_errors_2() {
    let data = TempDir::new("ctl-errors");
    let process = WarrenProcess::start_with_management(data.path());
    let url = format!(
        "http://{}",
        process.management.expect("a management address")
    );
    let denied = ctl(&url, &["--password", "wrong", "list", "queues"]);
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("401: Not_Authorized"), "{stderr}");
    assert!(denied.stdout.is_empty());

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let refused = ctl(&nowhere, &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&nowhere) && stderr.contains("--url"),
        "{stderr}"
    );

    let usage = ctl(&url, &["list", "widgets"]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = ctl(&url, &["declare", "queue", "q", "--arg", "no-equals"]);
    assert_eq!(usage.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
}

/// The RabbitMQ management API to check export and import against: `WARREN_TEST_RABBITMQ_MGMT`
/// (a URL, or empty for http://127.0.0.1:15673), or none: the check is skipped.
fn rabbitmq_url() -> Option<String> {
    let url = std::env::var("WARREN_TEST_RABBITMQ_MGMT").ok()?;
    Some(match url.trim() {
        "" => "http://127.0.0.1:15673".to_owned(),
        url => url.to_owned(),
    })
}

/// Export to a file, delete a queue, import the file: the queue is back, with its arguments.
/// Leaves the broker as it found it.
fn export_then_import(url: &str) {
    let queue = common::unique("ctl-definitions");
    let dir = TempDir::new("ctl-definitions");
    let file = dir.path().join("definitions.json");
    let file_arg = file.to_str().expect("a UTF-8 path");
    ok(
        url,
        &[
            "declare",
            "queue",
            &queue,
            "--durable",
            "--arg",
            "x-max-length=5",
        ],
    );
    let exported = ok(url, &["export", file_arg]);
    assert!(
        exported.contains("exported the definitions to"),
        "{exported}"
    );
    let text = std::fs::read_to_string(&file).expect("the exported file");
    let definitions: Value = serde_json::from_str(&text).expect("the export is JSON");
    for key in [
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
    ] {
        assert!(definitions[key].is_array(), "no {key} in {definitions}");
    }
    let mine = |definitions: &Value| {
        definitions["queues"]
            .as_array()
            .and_then(|all| all.iter().find(|q| q["name"] == queue.as_str()).cloned())
    };
    let exported = mine(&definitions).unwrap_or_else(|| panic!("{queue} not exported"));
    assert_eq!(exported["arguments"]["x-max-length"], 5, "{exported}");
    // To stdout, the same JSON.
    let stdout = ok(url, &["export"]);
    let printed: Value = serde_json::from_str(&stdout).expect("export prints JSON");
    assert!(
        mine(&printed).is_some(),
        "{queue} not in the printed export"
    );

    ok(url, &["delete", "queue", &queue]);
    let imported = ok(url, &["import", file_arg]);
    assert!(
        imported.contains("imported the definitions from"),
        "{imported}"
    );
    let queues = json(url, &["list", "queues", "--vhost", "/"]);
    let back = queues
        .as_array()
        .and_then(|all| all.iter().find(|q| q["name"] == queue.as_str()))
        .unwrap_or_else(|| panic!("{queue} not imported: {queues}"));
    assert_eq!(back["durable"], true);
    assert_eq!(back["arguments"]["x-max-length"], 5, "{back}");
    ok(url, &["delete", "queue", &queue]);

    // A file that is not JSON is refused before any request.
    std::fs::write(&file, "not json").expect("write");
    let refused = ctl(url, &["import", file_arg]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not JSON"), "{stderr}");
}

#[test]
fn export_and_import_against_rabbitmq() {
    let Some(url) = rabbitmq_url() else {
        eprintln!("skipped: set WARREN_TEST_RABBITMQ_MGMT to a RabbitMQ management API's URL");
        return;
    };
    export_then_import(&url);
}

#[test]
fn export_and_import_against_warren() {
    let data = TempDir::new("ctl-definitions-warren");
    let process = WarrenProcess::start_with_management(data.path());
    let url = format!(
        "http://{}",
        process.management.expect("a management address")
    );
    export_then_import(&url);
}

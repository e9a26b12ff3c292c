//! Definitions export and import (issue 18): Warren's export imported into a fresh Warren (and,
//! with `WARREN_TEST_RABBITMQCTL`, into RabbitMQ 3.10.8), RabbitMQ 3.10.8's own export imported
//! into Warren, and documents refused whole. Each test runs its own in-process Warren with a
//! handle on its broker and users (`definitions/node.rs`); AMQP checks use lapin.

mod common;
#[path = "definitions/node.rs"]
mod node;

use common::declare_queue_named;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::ExchangeKind;
use node::{data_dir, durable_part, exchange, populate, sorted, Node};
use warren::broker::vhost::VhostLimits;
use warren::definitions;
use warren_protocol::types::FieldTable;

#[tokio::test]
async fn warren_export_imports_into_a_fresh_warren_and_survives_restart() {
    let (dir_a, dir_b) = (data_dir("a"), data_dir("b"));
    let a = Node::start(&dir_a, &["/"]).await;
    populate(&a).await;
    let exported = a.export();
    let json = definitions::to_json(&exported);
    assert_left_out(&exported);

    let b = Node::start(&dir_b, &["/"]).await;
    let warnings = definitions::import(
        &b.broker,
        &b.users,
        &definitions::from_json(&json).expect("parse"),
    )
    .expect("import");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        b.export(),
        exported,
        "Warren's export of what it imported is the document"
    );

    check_over_amqp(&b).await;
    b.shutdown().await;

    let b = Node::start(&dir_b, &["/", "other"]).await;
    assert_eq!(
        durable_part(&b.export()),
        durable_part(&exported),
        "durable things survive a restart"
    );
    b.shutdown().await;
    a.shutdown().await;
    for dir in [dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What the export leaves out: exclusive and server-named queues (and their bindings), the
/// built-in exchanges.
fn assert_left_out(exported: &definitions::Definitions) {
    let names = |list: Option<&Vec<definitions::QueueDef>>| {
        list.into_iter()
            .flatten()
            .map(|q| q.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(exported.queues.as_ref()),
        ["q.durable", "q.transient"],
        "no exclusive or server-named queues"
    );
    assert!(exported
        .exchanges
        .iter()
        .flatten()
        .all(|x| !x.name.is_empty() && !x.name.starts_with("amq.")));
    assert_eq!(
        exported.bindings.as_ref().map(Vec::len),
        Some(5),
        "{:#?}",
        exported.bindings
    );
}

/// The imported objects as a client sees them: they exist, and the bindings route.
async fn check_over_amqp(b: &Node) {
    let (_conn, ch) = b.open("carol", "carol-pw", "/").await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for name in [
        "ex.topic",
        "ex.headers",
        "ex.internal",
        "ex.alt",
        "ex.transient",
    ] {
        exchange(
            &ch,
            name,
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
    }
    let passive_q = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare_queue_named(&ch, "q.transient", passive_q, FieldTable::default()).await;
    common::publish(&ch, "ex.alt", "a.b", b"via-e2e").await;
    common::publish(&ch, "amq.direct", "direct-key", b"via-amq-direct").await;
    common::wait_for_ready(&ch, "q.durable", 2).await;
    assert_eq!(
        common::get_all(&ch, "q.durable").await,
        ["via-e2e", "via-amq-direct"]
    );
    b.open("carol", "carol-pw", "other").await;
    assert_eq!(
        b.broker.vhost("other").expect("other").limits(),
        VhostLimits {
            max_connections: Some(7),
            max_queues: Some(20)
        }
    );
}

#[tokio::test]
async fn rabbitmq_3_10_8_export_imports_with_every_object_and_login() {
    let fixture = include_bytes!("fixtures/rabbitmq-3.10.8-definitions.json");
    let defs = definitions::from_json(fixture).expect("RabbitMQ's export parses");
    let dir = data_dir("fixture");
    let node = Node::start(&dir, &["/"]).await;
    let warnings = definitions::import(&node.broker, &node.users, &defs).expect("import");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].0.contains("policy 'ttl-policy' ignored"),
        "{warnings:?}"
    );

    let back = node.export();
    assert_eq!(
        sorted(back.exchanges.as_ref()),
        sorted(defs.exchanges.as_ref())
    );
    assert_eq!(sorted(back.queues.as_ref()), sorted(defs.queues.as_ref()));
    assert_eq!(
        sorted(back.bindings.as_ref()),
        sorted(defs.bindings.as_ref())
    );
    assert_eq!(
        sorted(back.permissions.as_ref()),
        sorted(defs.permissions.as_ref())
    );
    assert_eq!(
        sorted(back.topic_permissions.as_ref()),
        sorted(defs.topic_permissions.as_ref())
    );
    assert_eq!(
        sorted(back.users.as_ref()),
        sorted(defs.users.as_ref()),
        "hashes, tags and limits kept"
    );
    assert_eq!(
        sorted(back.parameters.as_ref()),
        sorted(defs.parameters.as_ref()),
        "vhost limits"
    );
    let staging = node.broker.vhost("staging").expect("vhost staging created");
    assert_eq!(
        staging.limits(),
        VhostLimits {
            max_connections: Some(50),
            max_queues: Some(100)
        }
    );
    assert_eq!(node.users.max_connections("bob"), Some(5));

    for (user, password, vhost) in [
        ("alice", "alice-secret", "/"),
        ("alice", "alice-secret", "staging"),
        ("bob", "bob-secret", "staging"),
        ("guest", "guest", "/"),
    ] {
        let (conn, ch) = node.open(user, password, vhost).await;
        ch.close(200, "ok".into()).await.expect("close");
        conn.close(200, "ok".into()).await.expect("close");
    }
    let (_conn, ch) = node.open("guest", "guest", "/").await;
    common::publish(&ch, "fanout.logs", "orders.eu.x", b"1").await;
    common::wait_for_ready(&ch, "orders.eu", 1).await;
    assert_eq!(
        common::queue_counts(&ch, "orders.all").await.0,
        1,
        "through the exchange-to-exchange binding"
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn invalid_documents_are_refused_whole_naming_the_problem() {
    let dir = data_dir("invalid");
    let node = Node::start(&dir, &["/"]).await;
    let (_conn, ch) = node.open("guest", "guest", "/").await;
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue_named(&ch, "taken", durable_q, FieldTable::default()).await;
    let before = node.export();
    let generation = node.users.generation();

    let malformed = definitions::from_json(b"{\"queues\": [").unwrap_err();
    assert!(
        matches!(malformed, definitions::DefinitionsError::Malformed(_)),
        "{malformed}"
    );
    let wrong_shape = definitions::from_json(br#"{"queues": [{"durable": true}]}"#).unwrap_err();
    assert!(
        wrong_shape.to_string().contains("missing field `name`"),
        "{wrong_shape}"
    );

    let document = serde_json::json!({
        "vhosts": [{"name": "new-vhost"}],
        "users": [{"name": "dave", "password_hash": "", "password": "pw", "tags": "administrator,monitoring"}],
        "exchanges": [
            {"name": "ok.ex", "vhost": "/", "type": "direct", "durable": true},
            {"name": "weird", "vhost": "/", "type": "x-weird", "durable": true}
        ],
        "queues": [
            {"name": "ok.q", "vhost": "new-vhost", "durable": true},
            {"name": "taken", "vhost": "/", "durable": false},
            {"name": "bad.ttl", "vhost": "/", "arguments": {"x-message-ttl": "soon"}}
        ],
        "bindings": [
            {"source": "ok.ex", "vhost": "/", "destination": "missing.q", "destination_type": "queue", "routing_key": "k"},
            {"source": "ok.ex", "vhost": "nowhere", "destination": "ok.q", "destination_type": "queue"}
        ]
    });
    let defs = definitions::from_json(document.to_string().as_bytes()).expect("well-formed");
    let error = definitions::import(&node.broker, &node.users, &defs)
        .unwrap_err()
        .to_string();
    for problem in [
        "exchange 'weird' in vhost '/': unknown exchange type 'x-weird'",
        "queue 'taken' in vhost '/' exists with durable 'true', the document has 'false'",
        "queue 'bad.ttl' in vhost '/': argument 'x-message-ttl'",
        "no queue 'missing.q'",
        "no vhost 'nowhere'",
    ] {
        assert!(error.contains(problem), "'{problem}' not in: {error}");
    }
    let without_users = |mut defs: definitions::Definitions| {
        defs.users = None; // a plain password's hash has a fresh salt each export
        defs
    };
    assert_eq!(
        without_users(node.export()),
        without_users(before),
        "nothing changed"
    );
    assert_eq!(node.users.generation(), generation, "users untouched");
    assert!(node.broker.vhost("new-vhost").is_none() && !node.users.exists("dave"));
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// With `WARREN_TEST_RABBITMQCTL="rabbitmqctl -n NODE"`: Warren's export is imported by a running
/// RabbitMQ 3.10.8 (`rabbitmqctl import_definitions`), and RabbitMQ then has its objects.
#[tokio::test]
async fn warren_export_imports_into_rabbitmq() {
    let Ok(command) = std::env::var("WARREN_TEST_RABBITMQCTL") else {
        eprintln!("skipped: set WARREN_TEST_RABBITMQCTL (e.g. \"rabbitmqctl -n defs@localhost\") to import into RabbitMQ");
        return;
    };
    let dir = data_dir("rabbitmq");
    let node = Node::start(&dir, &["/"]).await;
    populate(&node).await;
    let file = dir.join("warren-definitions.json");
    std::fs::write(&file, definitions::to_json(&node.export())).expect("write");
    let words: Vec<&str> = command.split_whitespace().collect();
    let ctl = |args: &[&str]| {
        let output = std::process::Command::new(words[0])
            .args(&words[1..])
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rabbitmqctl {args:?}: {text}");
        text
    };
    ctl(&["import_definitions", file.to_str().expect("path")]);
    let queues = ctl(&[
        "list_queues",
        "-q",
        "-p",
        "/",
        "name",
        "durable",
        "arguments",
    ]);
    assert!(
        queues.contains("q.durable") && queues.contains("q.transient"),
        "{queues}"
    );
    let exchanges = ctl(&[
        "list_exchanges",
        "-q",
        "-p",
        "/",
        "name",
        "type",
        "internal",
    ]);
    assert!(
        exchanges.contains("ex.headers\theaders")
            && exchanges.contains("ex.internal\tfanout\ttrue"),
        "{exchanges}"
    );
    let bindings = ctl(&[
        "list_bindings",
        "-q",
        "-p",
        "/",
        "source_name",
        "destination_name",
        "routing_key",
    ]);
    assert!(
        bindings.contains("ex.alt\tex.topic\tx")
            && bindings.contains("amq.direct\tq.durable\tdirect-key"),
        "{bindings}"
    );
    let users = ctl(&["list_users", "-q"]);
    assert!(users.contains("carol"), "{users}");
    ctl(&["authenticate_user", "carol", "carol-pw"]);
    ctl(&["list_vhost_limits", "-p", "other"]);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

//! The management HTTP API against a real broker: what RabbitMQ's management answers, in its
//! JSON shapes and status codes, driven over HTTP (ureq) while lapin clients publish and
//! consume over AMQP.

#[path = "management/api.rs"]
mod api;
mod common;

use std::time::Duration;

use api::{blocking, Api};
use common::{open, open_confirming, within, Broker};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};
use warren::ServerOptions;

async fn start() -> (Broker, Api) {
    let broker = Broker::start_with(ServerOptions {
        management_listeners: vec!["127.0.0.1:0".into()],
        ..ServerOptions::default()
    })
    .await;
    let api = Api::new(broker.management.expect("a management listener"));
    (broker, api)
}

async fn get(api: &Api, path: &str) -> api::Answer {
    let (api, path) = (api.as_user("guest", "guest"), path.to_owned());
    blocking(move || api.get(&path)).await
}

async fn publish(channel: &lapin::Channel, queue: &str, count: usize) {
    for i in 0..count {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_shows_ready_unacked_and_consumers_as_rabbitmq_does() {
    let (broker, api) = start().await;
    let (_conn, channel) = open_confirming(&broker).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare("orders".into(), durable, FieldTable::default())
        .await
        .expect("declare");
    publish(&channel, "orders", 5).await;
    channel
        .basic_qos(2, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = channel
        .basic_consume(
            "orders".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut unacked = 0;
    for _ in 0..100 {
        let queue = get(&api, "/api/queues/%2F/orders").await;
        assert_eq!(queue.status, 200, "{}", queue.text);
        unacked = queue.body["messages_unacknowledged"].as_u64().unwrap_or(0);
        if unacked == 2 {
            let q = &queue.body;
            assert_eq!(q["name"], "orders");
            assert_eq!(q["vhost"], "/");
            assert_eq!(q["durable"], true);
            assert_eq!(q["messages_ready"], 3);
            assert_eq!(q["messages"], 5);
            assert_eq!(q["consumers"], 1);
            assert_eq!(q["message_stats"]["publish"], 5);
            assert_eq!(q["consumer_details"][0]["consumer_tag"], "c1");
            assert_eq!(q["consumer_details"][0]["prefetch_count"], 2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        unacked, 2,
        "two deliveries held by the consumer (prefetch 2)"
    );
    let connections = get(&api, "/api/connections").await;
    let connection = &connections.body[0];
    assert_eq!(connection["user"], "guest");
    assert_eq!(connection["vhost"], "/");
    assert_eq!(connection["channels"], 1);
    assert_eq!(connection["protocol"], "AMQP 0-9-1");
    let channels = get(&api, "/api/channels").await;
    assert_eq!(channels.body[0]["confirm"], true);
    assert_eq!(channels.body[0]["consumer_count"], 1);
    assert_eq!(channels.body[0]["messages_unacknowledged"], 2);
    let consumers = get(&api, "/api/consumers").await;
    assert_eq!(consumers.body[0]["queue"]["name"], "orders");
    let overview = get(&api, "/api/overview").await;
    assert_eq!(overview.body["object_totals"]["queues"], 1);
    assert_eq!(overview.body["object_totals"]["connections"], 1);
    assert_eq!(overview.body["queue_totals"]["messages_ready"], 3);
    assert_eq!(overview.body["message_stats"]["publish"], 5);
    assert_eq!(overview.body["message_stats"]["confirm"], 5);
    assert_eq!(overview.body["message_stats"]["deliver_get"], 2);
    drop(consumer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_tags_decide_who_may_do_what() {
    let (_broker, api) = start().await;
    let answers = blocking(move || {
        let none = api.anonymous().get("/api/overview");
        let wrong = api.as_user("guest", "nope").get("/api/overview");
        api.put("/api/users/plain", json!({"password": "p", "tags": ""}));
        api.put(
            "/api/users/watcher",
            json!({"password": "w", "tags": "monitoring"}),
        );
        let plain = api.as_user("plain", "p").get("/api/overview");
        let watcher = api.as_user("watcher", "w");
        let seen = watcher.get("/api/queues");
        let refused = watcher.put("/api/queues/%2F/q", json!({}));
        let users = watcher.get("/api/users");
        let whoami = watcher.get("/api/whoami");
        (none, wrong, plain, seen, refused, users, whoami)
    })
    .await;
    let (none, wrong, plain, seen, refused, users, whoami) = answers;
    assert_eq!(none.status, 401);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "not_authorised");
    assert_eq!(
        plain.status, 401,
        "a user without a management tag: {}",
        plain.text
    );
    assert_eq!(plain.body["reason"], "Not management user");
    assert_eq!(seen.status, 200, "monitoring sees every vhost");
    assert_eq!(
        refused.status, 403,
        "monitoring may not declare: {}",
        refused.text
    );
    assert_eq!(users.status, 403, "only administrators list users");
    assert_eq!(
        whoami.body,
        json!({"name": "watcher", "tags": ["monitoring"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_exchanges_and_bindings_are_declared_and_deleted_through_the_api() {
    let (broker, api) = start().await;
    let first = api.clone();
    let answers = blocking(move || {
        let api = first;
        let created = api.put(
            "/api/queues/%2F/jobs",
            json!({"durable": true, "arguments": {"x-max-length": 10}}),
        );
        let again = api.put(
            "/api/queues/%2F/jobs",
            json!({"durable": true, "arguments": {"x-max-length": 10}}),
        );
        let differs = api.put("/api/queues/%2F/jobs", json!({"durable": false}));
        let exchange = api.put(
            "/api/exchanges/%2F/events",
            json!({"type": "topic", "durable": true}),
        );
        let bad_type = api.put("/api/exchanges/%2F/odd", json!({"type": "nonsense"}));
        let bound = api.post(
            "/api/bindings/%2F/e/events/q/jobs",
            json!({"routing_key": "job.*"}),
        );
        let listed = api.get("/api/bindings/%2F/e/events/q/jobs");
        (created, again, differs, exchange, bad_type, bound, listed)
    })
    .await;
    let (created, again, differs, exchange, bad_type, bound, listed) = answers;
    assert_eq!((created.status, again.status), (201, 204));
    assert_eq!(differs.status, 400, "{}", differs.text);
    assert!(differs.body["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("inequivalent arg 'durable'"));
    assert_eq!(exchange.status, 201);
    assert_eq!(bad_type.status, 400, "{}", bad_type.text);
    assert_eq!(bound.status, 201);
    // RabbitMQ's Location: the destination, then the properties key encoded once more.
    assert_eq!(bound.location.as_deref(), Some("jobs/job.%252A"));
    assert_eq!(listed.body[0]["properties_key"], "job.%2A");
    // The binding routes over AMQP.
    let (_conn, channel) = open_confirming(&broker).await;
    channel
        .basic_publish(
            "events".into(),
            "job.one".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let declared = channel
        .queue_declare(
            "jobs".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue exists");
    assert_eq!(declared.message_count(), 1);
    let answers = blocking(move || {
        let one = api.get("/api/bindings/%2F/e/events/q/jobs/job.%252A");
        let unbound = api.delete("/api/bindings/%2F/e/events/q/jobs/job.%252A");
        let after = api.get("/api/bindings/%2F/e/events/q/jobs");
        let busy = api.delete("/api/queues/%2F/jobs?if-empty=true");
        let deleted = api.delete("/api/queues/%2F/jobs");
        let gone = api.get("/api/queues/%2F/jobs");
        let x = api.delete("/api/exchanges/%2F/events");
        let system = api.delete("/api/exchanges/%2F/amq.direct");
        (one, unbound, after, busy, deleted, gone, x, system)
    })
    .await;
    let (one, unbound, after, busy, deleted, gone, x, system) = answers;
    assert_eq!(one.body["routing_key"], "job.*");
    assert_eq!(unbound.status, 204);
    assert_eq!(after.body, json!([]));
    assert_eq!(
        busy.status, 400,
        "if-empty on a queue holding a message: {}",
        busy.text
    );
    assert_eq!((deleted.status, gone.status, x.status), (204, 404, 204));
    assert_eq!(system.status, 403, "{}", system.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_published_got_and_purged_through_the_api() {
    let (_broker, api) = start().await;
    let answers = blocking(move || {
        api.put("/api/queues/%2F/inbox", json!({}));
        let routed = api.post(
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "inbox", "payload": "hello", "payload_encoding": "string",
                   "properties": {"delivery_mode": 2, "headers": {"k": "v"}, "message_id": "m-1"}}),
        );
        let unroutable = api.post(
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "nowhere", "payload": "x", "payload_encoding": "string", "properties": {}}),
        );
        let peek = api.post("/api/queues/%2F/inbox/get", json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}));
        let still = api.get("/api/queues/%2F/inbox");
        let purged = api.delete("/api/queues/%2F/inbox/contents");
        let after = api.get("/api/queues/%2F/inbox");
        (routed, unroutable, peek, still, purged, after)
    })
    .await;
    let (routed, unroutable, peek, still, purged, after) = answers;
    assert_eq!(routed.body, json!({"routed": true}));
    assert_eq!(unroutable.body, json!({"routed": false}));
    let message = &peek.body[0];
    assert_eq!(message["payload"], "hello");
    assert_eq!(message["payload_encoding"], "string");
    assert_eq!(message["routing_key"], "inbox");
    assert_eq!(message["properties"]["headers"], json!({"k": "v"}));
    assert_eq!(message["properties"]["message_id"], "m-1");
    assert_eq!(message["properties"]["delivery_mode"], 2);
    assert_eq!(
        still.body["messages_ready"], 1,
        "ack_requeue_true puts it back"
    );
    assert_eq!(purged.status, 204);
    assert_eq!(after.body["messages_ready"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_are_managed_through_the_api() {
    let (broker, api) = start().await;
    let api2 = api.as_user("guest", "guest");
    let answers = blocking(move || {
        let vhost = api2.put("/api/vhosts/shop", json!({}));
        let user = api2.put(
            "/api/users/alice",
            json!({"password": "s3cret", "tags": "management"}),
        );
        let perm = api2.put(
            "/api/permissions/shop/alice",
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        let listed = api2.get("/api/users/alice/permissions");
        (vhost, user, perm, listed)
    })
    .await;
    let (vhost, user, perm, listed) = answers;
    assert_eq!((vhost.status, user.status, perm.status), (201, 201, 201));
    assert_eq!(listed.body[0]["vhost"], "shop");
    let alice = common::connect_uri(&broker.uri_with("alice", "s3cret", "shop")).await;
    let channel = common::channel(&alice).await;
    channel
        .queue_declare(
            "cart".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("alice may declare in shop");
    let sees = blocking({
        let api = api.as_user("alice", "s3cret");
        move || (api.get("/api/queues"), api.get("/api/vhosts"))
    })
    .await;
    assert_eq!(
        sees.0.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        sees.0.text
    );
    assert_eq!(
        sees.1.body[0]["name"], "shop",
        "a management user sees its own vhosts"
    );
    let deleted = blocking(move || api.delete("/api/users/alice")).await;
    assert_eq!(deleted.status, 204);
    within("alice's connection closes", async {
        while alice.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_sort_and_filter_as_rabbitmq_does() {
    let (broker, api) = start().await;
    let (_conn, channel) = open_confirming(&broker).await;
    for i in 0..250 {
        let name = format!("q{i:03}");
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
    }
    publish(&channel, "q007", 3).await;
    let answers = blocking(move || {
        let page = api.get("/api/queues/%2F?page=2&page_size=100");
        let sorted = api.get("/api/queues?page=1&page_size=1&sort=messages&sort_reverse=true");
        let filtered = api.get("/api/queues?page=1&name=q24");
        let regex = api.get("/api/queues?page=1&name=%5Eq00%5B12%5D%24&use_regex=true");
        let columns = api.get("/api/queues?columns=name,message_stats.publish&name=q007");
        let too_big = api.get("/api/queues?page=1&page_size=501");
        (page, sorted, filtered, regex, columns, too_big)
    })
    .await;
    let (page, sorted, filtered, regex, columns, too_big) = answers;
    assert_eq!(page.body["total_count"], 250);
    assert_eq!(page.body["filtered_count"], 250);
    assert_eq!(page.body["page_count"], 3);
    assert_eq!(page.body["item_count"], 100);
    assert_eq!(page.body["items"][0]["name"], "q100");
    assert_eq!(sorted.body["items"][0]["name"], "q007");
    assert_eq!(filtered.body["filtered_count"], 10);
    let names: Vec<&str> = regex.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|q| q["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["q001", "q002"]);
    assert_eq!(
        columns.body,
        json!([{"name": "q007", "message_stats": {"publish": 3}}])
    );
    assert_eq!(too_big.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_from_the_api_with_its_reason() {
    let (broker, api) = start().await;
    let (conn, _channel) = open(&broker).await;
    let name = blocking({
        let api = api.as_user("guest", "guest");
        move || {
            api.get("/api/connections").body[0]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    })
    .await;
    assert!(
        name.contains(" -> "),
        "RabbitMQ's 'peer -> local' name: {name}"
    );
    let path = format!(
        "/api/connections/{}",
        name.replace(' ', "%20").replace('>', "%3E")
    );
    let closed = blocking(move || {
        let url_api = api.as_user("guest", "guest");
        let request = url_api.call("DELETE", &path, None);
        request.status
    })
    .await;
    assert_eq!(closed, 204);
    within("the connection closes", async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_metrics_answer_as_rabbitmq_and_its_exporter_expect() {
    let (broker, api) = start().await;
    let amqp_port = broker.addr.port();
    let (_conn, channel) = open_confirming(&broker).await;
    channel
        .queue_declare(
            "metered".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    publish(&channel, "metered", 4).await;
    // One message held by a delayed-message exchange, for a minute.
    let mut delayed = FieldTable::default();
    delayed.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("direct".into()),
    );
    channel
        .exchange_declare(
            "metered-delayed".into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            delayed,
        )
        .await
        .expect("declare the delayed exchange");
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongLongInt(60_000));
    channel
        .basic_publish(
            "metered-delayed".into(),
            "metered".into(),
            BasicPublishOptions::default(),
            b"later",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    let answers = blocking(move || {
        let alarms = api.get("/api/health/checks/alarms");
        let local = api.get("/api/health/checks/local-alarms");
        let port = api.get(&format!("/api/health/checks/port-listener/{amqp_port}"));
        let no_port = api.get("/api/health/checks/port-listener/1");
        let alive = api.get("/api/aliveness-test/%2F");
        let vhosts = api.get("/api/health/checks/virtual-hosts");
        let metrics = api.anonymous().get("/metrics");
        (alarms, local, port, no_port, alive, vhosts, metrics)
    })
    .await;
    let (alarms, local, port, no_port, alive, vhosts, metrics) = answers;
    assert_eq!(alarms.body, json!({"status": "ok"}));
    assert_eq!(local.status, 200);
    assert_eq!(port.status, 200);
    assert_eq!(no_port.status, 503);
    assert_eq!(no_port.body["status"], "failed");
    assert_eq!(alive.body, json!({"status": "ok"}));
    assert_eq!(vhosts.status, 200);
    let text = metrics.text;
    for line in [
        "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"metered\"} 4",
        "rabbitmq_queue_messages_unacked{vhost=\"/\",queue=\"metered\"} 0",
        "rabbitmq_queue_consumers{vhost=\"/\",queue=\"metered\"} 0",
        "rabbitmq_global_messages_received_total 5",
        "rabbitmq_global_messages_confirmed_total 5",
        "rabbitmq_connections 1",
        "rabbitmq_channels 1",
        "# TYPE warren_fsync_duration_seconds histogram",
        "warren_delayed_messages_held_total{vhost=\"/\"} 1",
        "warren_delayed_messages_fired_total{vhost=\"/\"} 0",
        "warren_delayed_buckets{vhost=\"/\"} 1",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
    }
    for name in [
        "rabbitmq_process_resident_memory_bytes ",
        "rabbitmq_disk_space_available_bytes ",
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(value.is_some_and(|v| v > 0), "{name} has a value");
    }
}

/// Celery Flower's and the Prometheus exporter's calls (kbudde/rabbitmq_exporter): the paths,
/// query parameters and fields they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_and_exporter_style_requests_get_what_they_read() {
    let (broker, api) = start().await;
    let (_conn, channel) = open_confirming(&broker).await;
    channel
        .queue_declare(
            "celery".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    publish(&channel, "celery", 2).await;
    let answers = blocking(move || {
        // Flower: broker.queues() reads name, messages, messages_ready, messages_unacknowledged, consumers.
        let flower = api.get("/api/queues/%2F?name=celery");
        // The exporter asks for JSON with these parameters, and for BERT first on some versions.
        let exporter = api.get_accepting(
            "/api/queues?disable_stats=false&enable_queue_totals=true&sort=name",
            "application/bert, application/json;q=0.5",
        );
        let overview = api.get("/api/overview");
        let nodes = api.get("/api/nodes");
        let exchanges = api.get("/api/exchanges");
        (flower, exporter, overview, nodes, exchanges)
    })
    .await;
    let (flower, exporter, overview, nodes, exchanges) = answers;
    let q = &flower.body[0];
    for field in [
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    ] {
        assert!(!q[field].is_null(), "Flower reads {field}: {q}");
    }
    assert_eq!(q["messages"], 2);
    assert_eq!(
        exporter.body[0]["name"], "celery",
        "JSON, whatever the Accept header asks"
    );
    for field in [
        "rabbitmq_version",
        "management_version",
        "cluster_name",
        "node",
        "message_stats",
        "object_totals",
        "queue_totals",
    ] {
        assert!(
            !overview.body[field].is_null(),
            "the exporter reads overview.{field}"
        );
    }
    for field in [
        "name",
        "mem_used",
        "mem_limit",
        "disk_free",
        "disk_free_limit",
        "running",
        "uptime",
    ] {
        assert!(
            !nodes.body[0][field].is_null(),
            "the exporter reads nodes[].{field}"
        );
    }
    let names: Vec<&str> = exchanges
        .body
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"amq.topic") && names.contains(&""),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_export_from_one_broker_import_into_another() {
    let (_first, api) = start().await;
    let (_second, other) = start().await;
    let answers = blocking(move || {
        api.put("/api/vhosts/billing", json!({}));
        api.put(
            "/api/users/bob",
            json!({"password": "b0b", "tags": "monitoring"}),
        );
        api.put(
            "/api/permissions/billing/bob",
            json!({"configure": "^bob-.*", "write": ".*", "read": ".*"}),
        );
        api.put(
            "/api/exchanges/billing/invoices",
            json!({"type": "fanout", "durable": true}),
        );
        api.put(
            "/api/queues/billing/due",
            json!({"durable": true, "arguments": {"x-message-ttl": 60000}}),
        );
        api.post(
            "/api/bindings/billing/e/invoices/q/due",
            json!({"routing_key": ""}),
        );
        let exported = api.get("/api/definitions");
        let imported = other.post("/api/definitions", exported.body.clone());
        let again = other.get("/api/definitions");
        let bob = other.as_user("bob", "b0b").get("/api/whoami");
        let bad = other.post(
            "/api/definitions",
            json!({"exchanges": [{"name": "x", "vhost": "/", "type": "nope"}]}),
        );
        (exported, imported, again, bob, bad)
    })
    .await;
    let (exported, imported, again, bob, bad) = answers;
    assert_eq!(imported.status, 204, "{}", imported.text);
    for key in ["queues", "exchanges", "bindings", "vhosts", "permissions"] {
        assert_eq!(exported.body[key], again.body[key], "{key} round-trips");
    }
    assert_eq!(
        bob.body["name"], "bob",
        "bob logs in with his password on the second broker"
    );
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("nope"), "{}", bad.text);
    let q: &Value = &again.body["queues"][0];
    assert_eq!(q["arguments"]["x-message-ttl"], 60000);
}

/// A handler that takes no body (`PUT /api/vhosts/v` with `{}`) still leaves the connection
/// usable: a client that sends the body after the headers and then reuses the connection gets
/// its next answer, not a reset (hyper closes a connection whose request body was left unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_survives_requests_whose_body_is_ignored() {
    use std::io::{Read, Write};
    let (broker, _api) = start().await;
    let addr = broker.management.expect("a management listener");
    let answers = blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answers = Vec::new();
        for vhost in ["a", "b"] {
            let head = format!(
                "PUT /api/vhosts/{vhost} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).expect("head");
            std::thread::sleep(Duration::from_millis(100));
            stream.write_all(b"{}").expect("body");
            let mut reply = [0u8; 4096];
            let n = stream.read(&mut reply).unwrap_or(0);
            answers.push(String::from_utf8_lossy(&reply[..n]).lines().next().unwrap_or("").to_owned());
            std::thread::sleep(Duration::from_millis(100));
        }
        answers
    })
    .await;
    assert_eq!(answers, ["HTTP/1.1 201 Created", "HTTP/1.1 201 Created"]);
}

//! Exchanges with a real client (lapin): declare and delete, the reply codes of their misuse,
//! routing by every exchange type (each proven by publishing and reading the queues), exchange-to-
//! exchange bindings, mandatory returns, and properties that must arrive byte-for-byte.
//!
//! Behaviour is RabbitMQ's (checked against RabbitMQ 3.10 with `WARREN_TEST_EXTERNAL_ADDR`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// An exclusive server-named queue bound to `exchange` with each of `binding_keys`.
async fn bound_queue(channel: &Channel, exchange: &str, binding_keys: &[&str]) -> String {
    let queue = within(
        "queue.declare",
        channel.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare")
    .name()
    .to_string();
    for key in binding_keys {
        bind_queue(channel, &queue, exchange, key).await;
    }
    queue
}

#[tokio::test]
async fn every_type_declares_and_redeclares_idempotently() {
    let broker = Broker::start().await;
    let (_connection, channel) = open(&broker).await;
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let name = declare_exchange(&channel, "every_type", kind.clone()).await;
        // The same declaration again, and a passive one (whose type is not checked).
        within(
            "redeclare",
            channel.exchange_declare(
                name.as_str().into(),
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("an identical redeclare is fine");
        within(
            "passive declare",
            channel.exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                passive(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("passive declare of an existing exchange");
        delete_exchange(&channel, &name).await;
    }
    // The predeclared exchanges exist.
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(
            name,
            channel.exchange_declare(name.into(), kind, passive(), FieldTable::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} is predeclared: {e}"));
    }
}

#[tokio::test]
async fn redeclare_with_another_type_or_durability_is_406() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let name = declare_exchange(&channel, "redeclare", ExchangeKind::Direct).await;

    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': \
             received 'fanout' but current is 'direct'"
        )
    );

    let channel = common::channel(&connection).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{name}' in vhost '/': \
             received 'true' but current is 'false'"
        )
    );

    let channel = common::channel(&connection).await;
    delete_exchange(&channel, &name).await;
}

#[tokio::test]
async fn declaring_an_amq_prefixed_name_is_403() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let name = unique("amq.foo");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
        403,
    )
    .await;
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
    );
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let name = unique("missing");
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            passive(),
            FieldTable::default(),
        ),
        404,
    )
    .await;
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{name}' in vhost '/'")
    );
}

/// RabbitMQ: `connection.close` 503 "COMMAND_INVALID - unknown exchange type 'no-such-type'".
#[tokio::test]
async fn an_unknown_exchange_type_closes_the_connection_with_503() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let text = expect_connection_closed(
        &connection,
        channel.exchange_declare(
            unique("unknown-type").into(),
            ExchangeKind::Custom("no-such-type".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
        503,
    )
    .await;
    assert_eq!(
        text,
        "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    );
}

#[tokio::test]
async fn delete_if_unused_refuses_a_bound_exchange_and_delete_of_a_missing_one_is_ok() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let exchange = declare_exchange(&channel, "if_unused", ExchangeKind::Fanout).await;
    let queue = bound_queue(&channel, &exchange, &[""]).await;

    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_delete(
            exchange.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..ExchangeDeleteOptions::default()
            },
        ),
        406,
    )
    .await;
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - exchange '{exchange}' in vhost '/' in use")
    );

    // Unbound, it goes; deleting it again (or anything missing) is not an error in RabbitMQ.
    let channel = common::channel(&connection).await;
    within(
        "queue.unbind",
        channel.queue_unbind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.unbind");
    within(
        "exchange.delete if-unused",
        channel.exchange_delete(
            exchange.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..ExchangeDeleteOptions::default()
            },
        ),
    )
    .await
    .expect("an unused exchange is deleted");
    delete_exchange(&channel, &exchange).await;
    expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            passive(),
            FieldTable::default(),
        ),
        404,
    )
    .await;
}

#[tokio::test]
async fn the_default_exchange_cannot_be_bound_to_or_deleted() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let queue = bound_queue(&channel, "amq.direct", &[]).await;

    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.queue_bind(
            queue.as_str().into(),
            "".into(),
            "key".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
        403,
    )
    .await;
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );

    let channel = common::channel(&connection).await;
    let text = expect_channel_closed(
        &connection,
        &channel,
        channel.exchange_delete("".into(), ExchangeDeleteOptions::default()),
        403,
    )
    .await;
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
}

#[tokio::test]
async fn direct_routes_by_exact_routing_key() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "direct", ExchangeKind::Direct).await;
    let orange = bound_queue(&channel, &exchange, &["orange"]).await;
    let colours = bound_queue(&channel, &exchange, &["black", "green"]).await;
    let also_orange = bound_queue(&channel, &exchange, &["orange"]).await;

    for key in ["orange", "black", "green", "Orange", "orange.x", ""] {
        publish_confirmed(&channel, &exchange, key, key.as_bytes(), Default::default()).await;
    }
    assert_eq!(get_all(&channel, &orange).await, ["orange"]);
    assert_eq!(get_all(&channel, &colours).await, ["black", "green"]);
    assert_eq!(get_all(&channel, &also_orange).await, ["orange"]);
    delete_exchange(&channel, &exchange).await;
}

#[tokio::test]
async fn the_default_exchange_routes_to_the_queue_named_by_the_key() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = bound_queue(&channel, "amq.direct", &[]).await;
    publish_confirmed(&channel, "", &queue, b"hello", Default::default()).await;
    publish_confirmed(&channel, "", "no-such-queue", b"lost", Default::default()).await;
    assert_eq!(get_all(&channel, &queue).await, ["hello"]);
}

#[tokio::test]
async fn fanout_routes_to_every_bound_queue_whatever_the_key() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "fanout", ExchangeKind::Fanout).await;
    let a = bound_queue(&channel, &exchange, &["ignored"]).await;
    let b = bound_queue(&channel, &exchange, &[""]).await;
    // Two bindings of one queue to a fanout still deliver one copy.
    let c = bound_queue(&channel, &exchange, &["x", "y"]).await;

    publish_confirmed(&channel, &exchange, "any.key", b"one", Default::default()).await;
    publish_confirmed(&channel, &exchange, "", b"two", Default::default()).await;
    for queue in [&a, &b, &c] {
        assert_eq!(get_all(&channel, queue).await, ["one", "two"], "{queue}");
    }
    delete_exchange(&channel, &exchange).await;
}

#[tokio::test]
async fn topic_routes_by_words_and_wildcards() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "topic", ExchangeKind::Topic).await;
    let star = bound_queue(&channel, &exchange, &["*.orange.*"]).await;
    let rabbit_or_lazy = bound_queue(&channel, &exchange, &["*.*.rabbit", "lazy.#"]).await;
    let everything = bound_queue(&channel, &exchange, &["#"]).await;
    let empty = bound_queue(&channel, &exchange, &[""]).await;
    let exact = bound_queue(&channel, &exchange, &["a.b"]).await;
    let hash_middle = bound_queue(&channel, &exchange, &["a.#.z"]).await;
    let single = bound_queue(&channel, &exchange, &["*"]).await;

    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy",
        "quick.brown.fox",
        "quick.orange.new.rabbit",
        "lazy.orange.new.rabbit",
        "orange",
        "",
        "a.b",
        "a.z",
        "a.b.c.z",
        "a..z",
        "word",
    ];
    for key in keys {
        publish_confirmed(&channel, &exchange, key, key.as_bytes(), Default::default()).await;
    }
    assert_eq!(
        get_all(&channel, &star).await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        get_all(&channel, &rabbit_or_lazy).await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy",
            "lazy.orange.new.rabbit"
        ]
    );
    assert_eq!(get_all(&channel, &everything).await, keys);
    assert_eq!(get_all(&channel, &empty).await, [""]);
    assert_eq!(get_all(&channel, &exact).await, ["a.b"]);
    assert_eq!(
        get_all(&channel, &hash_middle).await,
        ["a.z", "a.b.c.z", "a..z"]
    );
    assert_eq!(get_all(&channel, &single).await, ["lazy", "orange", "word"]);
    delete_exchange(&channel, &exchange).await;
}

/// Headers bindings: `x-match` all (the default) or any; binding arguments starting with `x-` are
/// not matched; a binding value of type void matches any value of that header.
#[tokio::test]
async fn headers_match_all_or_any() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "headers", ExchangeKind::Headers).await;
    let binding = |x_match: Option<&str>, pairs: &[(&str, AMQPValue)]| {
        let mut args = table(pairs);
        if let Some(x_match) = x_match {
            args.insert("x-match".into(), text(x_match));
        }
        args
    };
    let queue_with = |args: FieldTable| {
        let channel = channel.clone();
        let exchange = exchange.clone();
        async move {
            let queue = bound_queue(&channel, &exchange, &[]).await;
            bind_queue_with(&channel, &queue, &exchange, "", args).await;
            queue
        }
    };
    let all = queue_with(binding(
        Some("all"),
        &[("format", text("pdf")), ("type", text("report"))],
    ))
    .await;
    let default_all = queue_with(binding(
        None,
        &[("format", text("pdf")), ("type", text("report"))],
    ))
    .await;
    let any = queue_with(binding(
        Some("any"),
        &[("format", text("pdf")), ("type", text("log"))],
    ))
    .await;
    let typed = queue_with(binding(Some("all"), &[("n", AMQPValue::LongInt(5))])).await;

    let messages: [(&str, FieldTable); 5] = [
        (
            "pdf-report",
            table(&[("format", text("pdf")), ("type", text("report"))]),
        ),
        (
            "pdf-report-extra",
            table(&[
                ("format", text("pdf")),
                ("type", text("report")),
                ("x-other", text("y")),
            ]),
        ),
        ("pdf-only", table(&[("format", text("pdf"))])),
        (
            "zip-log",
            table(&[("format", text("zip")), ("type", text("log"))]),
        ),
        ("n-5", table(&[("n", AMQPValue::LongInt(5))])),
    ];
    for (name, headers) in messages {
        let properties = BasicProperties::default().with_headers(headers);
        publish_confirmed(&channel, &exchange, "", name.as_bytes(), properties).await;
    }
    // No headers at all routes nowhere.
    publish_confirmed(&channel, &exchange, "", b"none", Default::default()).await;

    assert_eq!(
        get_all(&channel, &all).await,
        ["pdf-report", "pdf-report-extra"]
    );
    assert_eq!(
        get_all(&channel, &default_all).await,
        ["pdf-report", "pdf-report-extra"]
    );
    assert_eq!(
        get_all(&channel, &any).await,
        ["pdf-report", "pdf-report-extra", "pdf-only", "zip-log"]
    );
    assert_eq!(get_all(&channel, &typed).await, ["n-5"]);
    delete_exchange(&channel, &exchange).await;
}

/// RabbitMQ 3.10 added `x-match` = `all-with-x` / `any-with-x`, which also match the message's
/// `x-` headers (plain all/any ignore them).
#[tokio::test]
async fn headers_match_with_x_headers() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = declare_exchange(&channel, "headers_x", ExchangeKind::Headers).await;
    let mut queues = Vec::new();
    for x_match in ["all", "all-with-x", "any", "any-with-x"] {
        let queue = bound_queue(&channel, &exchange, &[]).await;
        let args = table(&[
            ("x-match", text(x_match)),
            ("x-tenant", text("blue")),
            ("kind", text("audit")),
        ]);
        bind_queue_with(&channel, &queue, &exchange, "", args).await;
        queues.push(queue);
    }
    let messages = [
        (
            "both",
            table(&[("x-tenant", text("blue")), ("kind", text("audit"))]),
        ),
        ("kind-only", table(&[("kind", text("audit"))])),
        ("tenant-only", table(&[("x-tenant", text("blue"))])),
    ];
    for (name, headers) in messages {
        let properties = BasicProperties::default().with_headers(headers);
        publish_confirmed(&channel, &exchange, "", name.as_bytes(), properties).await;
    }
    // all: `x-tenant` in the binding is ignored, so `kind` alone decides.
    assert_eq!(get_all(&channel, &queues[0]).await, ["both", "kind-only"]);
    assert_eq!(get_all(&channel, &queues[1]).await, ["both"]);
    assert_eq!(get_all(&channel, &queues[2]).await, ["both", "kind-only"]);
    assert_eq!(
        get_all(&channel, &queues[3]).await,
        ["both", "kind-only", "tenant-only"]
    );
    delete_exchange(&channel, &exchange).await;
}

async fn bind_exchange(channel: &Channel, destination: &str, source: &str, key: &str) {
    within(
        "exchange.bind",
        channel.exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.bind {source} -> {destination}: {e}"));
}

#[tokio::test]
async fn exchange_to_exchange_bindings_route_through_and_a_loop_delivers_once() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;

    // A chain: topic -> (by key) -> fanout -> queue.
    let topic = declare_exchange(&channel, "e2e_topic", ExchangeKind::Topic).await;
    let fanout = declare_exchange(&channel, "e2e_fanout", ExchangeKind::Fanout).await;
    bind_exchange(&channel, &fanout, &topic, "logs.*").await;
    let chained = bound_queue(&channel, &fanout, &[""]).await;
    publish_confirmed(
        &channel,
        &topic,
        "logs.error",
        b"routed",
        Default::default(),
    )
    .await;
    publish_confirmed(
        &channel,
        &topic,
        "metrics.cpu",
        b"dropped",
        Default::default(),
    )
    .await;
    assert_eq!(get_all(&channel, &chained).await, ["routed"]);

    // A loop x1 -> x2 -> x1, both bound to each queue: one copy per queue.
    let x1 = declare_exchange(&channel, "loop_x1", ExchangeKind::Fanout).await;
    let x2 = declare_exchange(&channel, "loop_x2", ExchangeKind::Fanout).await;
    bind_exchange(&channel, &x2, &x1, "").await;
    bind_exchange(&channel, &x1, &x2, "").await;
    let q1 = bound_queue(&channel, &x1, &[""]).await;
    bind_queue(&channel, &q1, &x2, "").await;
    let q2 = bound_queue(&channel, &x2, &[""]).await;
    publish_confirmed(&channel, &x1, "", b"once", Default::default()).await;
    publish_confirmed(&channel, &x2, "", b"again once", Default::default()).await;
    assert_eq!(get_all(&channel, &q1).await, ["once", "again once"]);
    assert_eq!(get_all(&channel, &q2).await, ["once", "again once"]);

    for exchange in [&topic, &fanout, &x1, &x2] {
        delete_exchange(&channel, exchange).await;
    }
}

#[tokio::test]
async fn unbinding_stops_routing() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let source = declare_exchange(&channel, "unbind_src", ExchangeKind::Direct).await;
    let destination = declare_exchange(&channel, "unbind_dst", ExchangeKind::Fanout).await;
    let direct = bound_queue(&channel, &source, &["k"]).await;
    bind_exchange(&channel, &destination, &source, "k").await;
    let via_exchange = bound_queue(&channel, &destination, &[""]).await;

    publish_confirmed(&channel, &source, "k", b"before", Default::default()).await;
    within(
        "queue.unbind",
        channel.queue_unbind(
            direct.as_str().into(),
            source.as_str().into(),
            "k".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.unbind");
    within(
        "exchange.unbind",
        channel.exchange_unbind(
            destination.as_str().into(),
            source.as_str().into(),
            "k".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    publish_confirmed(&channel, &source, "k", b"after", Default::default()).await;

    assert_eq!(get_all(&channel, &direct).await, ["before"]);
    assert_eq!(get_all(&channel, &via_exchange).await, ["before"]);
    delete_exchange(&channel, &source).await;
    delete_exchange(&channel, &destination).await;
}

/// The publish's confirm carries the channel error when the channel is in confirm mode.
async fn confirmed_publish_error(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let confirm = publish_with(channel, exchange, "", b"refused", Default::default()).await;
    within("the publish's fate", confirm).await.map(|c| {
        panic!("the publish to {exchange} was confirmed ({c:?}), not refused");
    })
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_403() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let internal = unique("internal");
    within(
        "exchange.declare internal",
        channel.exchange_declare(
            internal.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare an internal exchange");
    if let Some(text) =
        expect_publish_closes_channel(&connection, &channel, &internal, "", 403).await
    {
        assert_eq!(
            text,
            format!(
                "ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"
            )
        );
    }

    let channel = confirm_channel(&connection).await;
    let text = assert_reply(confirmed_publish_error(&channel, &internal).await, 403);
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'")
    );

    let channel = common::channel(&connection).await;
    delete_exchange(&channel, &internal).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let missing = unique("missing");
    if let Some(text) =
        expect_publish_closes_channel(&connection, &channel, &missing, "", 404).await
    {
        assert_eq!(
            text,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        );
    }

    let channel = confirm_channel(&connection).await;
    let text = assert_reply(confirmed_publish_error(&channel, &missing).await, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
}

/// Every basic property set, with a headers table holding every field type, nested.
fn all_properties() -> BasicProperties {
    let nested = table(&[
        ("inner", text("value")),
        (
            "deeper",
            AMQPValue::FieldTable(table(&[("leaf", AMQPValue::LongLongInt(-1))])),
        ),
    ]);
    let headers = table(&[
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-(1 << 40))),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("string", text("h\u{e9}llo \u{1F407}")),
        (
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                text("two"),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
            ])),
        ),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(nested)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])),
        ),
        ("void", AMQPValue::Void),
    ]);
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("correlation-1".into())
        .with_reply_to("reply.queue".into())
        .with_expiration("600000".into())
        .with_message_id("message-1".into())
        .with_timestamp(1_600_000_000)
        .with_type("order.created".into())
        // RabbitMQ refuses (406) a user-id other than the connection's user.
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into())
        .with_cluster_id("cluster-1".into())
}

#[tokio::test]
async fn all_fourteen_properties_and_nested_headers_round_trip() {
    let broker = Broker::start().await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = bound_queue(&channel, "amq.direct", &[]).await;
    let sent = all_properties();
    let body = b"\x00binary\xffbody\x00";
    publish_confirmed(&channel, "", &queue, body, sent.clone()).await;
    // Only the headers: everything else absent must stay absent.
    let headers_only = BasicProperties::default().with_headers(table(&[("k", text("v"))]));
    publish_confirmed(&channel, "", &queue, b"", headers_only.clone()).await;

    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let first = deliveries.next().await;
    assert_eq!(first.data, body);
    assert_eq!(first.properties, sent);
    let second = deliveries.next().await;
    assert_eq!(second.data, b"");
    assert_eq!(second.properties, headers_only);
}

async fn wait_for_return(channel: &Channel) -> lapin::message::BasicReturnMessage {
    within("basic.return", async {
        loop {
            let mut returned = channel.wait_for_confirms().await.expect("returns");
            if let Some(message) = returned.pop() {
                return message;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_with_312_and_its_content() {
    let broker = Broker::start().await;
    let connection: Connection = connect(&broker).await;
    let channel = common::channel(&connection).await;
    let exchange = declare_exchange(&channel, "mandatory", ExchangeKind::Direct).await;
    let sent = all_properties();
    within(
        "basic.publish mandatory",
        channel.basic_publish(
            exchange.as_str().into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"come back",
            sent.clone(),
        ),
    )
    .await
    .expect("basic.publish");
    let returned = wait_for_return(&channel).await;
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.exchange.as_str(), exchange);
    assert_eq!(returned.routing_key.as_str(), "nowhere");
    assert_eq!(returned.data, b"come back");
    assert_eq!(returned.properties, sent);

    // Not mandatory: dropped silently, and the channel stays open.
    publish(&channel, &exchange, "nowhere", b"dropped").await;
    assert_channel_open(&channel).await;
    assert!(channel
        .wait_for_confirms()
        .await
        .expect("returns")
        .is_empty());
    delete_exchange(&channel, &exchange).await;
}

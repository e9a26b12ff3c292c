"""Exchanges with pika: declaration rules and their error codes, routing by every exchange type,
exchange-to-exchange bindings, basic.return of unroutable messages, and that every basic property
and every field-table type crosses the broker unchanged. Expected codes and texts are RabbitMQ
3.10's."""

import datetime
import decimal
import struct

import pika
import pika.data
import pika.exceptions
import pytest

pytestmark = pytest.mark.deadline(20)

ChannelClosed = pika.exceptions.ChannelClosedByBroker


def closed_with(info, code: int, name: str, *fragments: str) -> None:
    """Asserts a ChannelClosedByBroker carried `code` and a reply text starting with `name`."""
    exc = info.value
    assert exc.reply_code == code, repr(exc)
    assert exc.reply_text.startswith(f"{name} - "), repr(exc)
    for fragment in fragments:
        assert fragment in exc.reply_text, repr(exc)


def bound_queue(ch, names, exchange: str, *keys: str, arguments=None) -> str:
    queue = names.queue()
    ch.queue_declare(queue)
    for key in keys:
        ch.queue_bind(queue, exchange, routing_key=key, arguments=arguments)
    return queue


# --- declaration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_declare_each_type_and_redeclare_and_passive(channel, names, kind):
    x = names.exchange(kind)
    assert isinstance(channel.exchange_declare(x, kind).method, pika.spec.Exchange.DeclareOk)
    # The same declaration again is fine, and passive finds it whatever type it names.
    channel.exchange_declare(x, kind)
    channel.exchange_declare(x, "fanout" if kind != "fanout" else "direct", passive=True)
    assert channel.is_open


def test_redeclare_with_another_type_is_406(connect, names, drain):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_declare(x, "fanout")
    closed_with(
        info, 406, "PRECONDITION_FAILED",
        f"inequivalent arg 'type' for exchange '{x}' in vhost '/'",
        "received 'fanout' but current is 'direct'",
    )
    assert conn.is_open
    # The exchange keeps its type.
    ch = conn.channel()
    q = bound_queue(ch, names, x, "k")
    ch.basic_publish(x, "other", b"no")
    ch.basic_publish(x, "k", b"yes")
    assert [d.body for d in drain(ch, q)] == [b"yes"]


@pytest.mark.parametrize("flag", ["durable", "auto_delete", "internal"])
def test_redeclare_with_other_flags_is_406(channel, names, flag):
    x = names.exchange()
    channel.exchange_declare(x, "direct")
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_declare(x, "direct", **{flag: True})
    closed_with(info, 406, "PRECONDITION_FAILED", f"inequivalent arg '{flag}' for exchange '{x}'")


def test_unknown_type_is_503_command_invalid(connect, names):
    conn = connect()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.channel().exchange_declare(names.exchange(), "no-such-type")
    assert info.value.reply_code == 503, repr(info.value)
    assert info.value.reply_text == "COMMAND_INVALID - unknown exchange type 'no-such-type'", repr(info.value)
    assert info.value.reply_text, repr(info.value)


def test_declaring_an_amq_prefixed_exchange_is_403(channel):
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_declare("amq.foo", "direct")
    closed_with(
        info, 403, "ACCESS_REFUSED", "exchange name 'amq.foo' contains reserved prefix 'amq.*'"
    )


def test_predeclared_exchanges_exist(channel):
    for x, kind in [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ]:
        channel.exchange_declare(x, passive=True)
        # Redeclaring one with its own type and flags is allowed (the reserved prefix only stops
        # creation).
        channel.exchange_declare(x, kind, durable=True)


def test_passive_declare_of_a_missing_exchange_is_404(channel, names):
    x = names.exchange("missing")
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_declare(x, passive=True)
    closed_with(info, 404, "NOT_FOUND", f"no exchange '{x}' in vhost '/'")


def test_delete_missing_exchange_is_ok(channel, names):
    # RabbitMQ 3.10: exchange.delete of a missing exchange answers delete-ok.
    channel.exchange_delete(names.exchange("missing"))
    assert channel.is_open


def test_delete_if_unused_while_bound_is_406_and_keeps_the_exchange(connect, names, drain):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "fanout")
    q = bound_queue(ch, names, x, "")
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_delete(x, if_unused=True)
    closed_with(info, 406, "PRECONDITION_FAILED", f"exchange '{x}' in vhost '/' in use")
    ch = conn.channel()
    ch.basic_publish(x, "", b"still routed")
    assert [d.body for d in drain(ch, q)] == [b"still routed"]
    # Unbound, it is unused and goes.
    ch.queue_unbind(q, x, "")
    ch.exchange_delete(x, if_unused=True)
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_declare(x, passive=True)
    assert info.value.reply_code == 404


def test_delete_removes_bindings(connect, names, drain):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "fanout")
    q = bound_queue(ch, names, x, "")
    ch.exchange_delete(x)
    ch.exchange_declare(x, "fanout")
    ch.basic_publish(x, "", b"nobody is bound")
    ch.basic_publish("", q, b"by name")
    assert [d.body for d in drain(ch, q)] == [b"by name"]


@pytest.mark.parametrize(
    "operation",
    [
        "declare",
        "declare_passive",
        "queue_bind",
        "queue_unbind",
        "exchange_bind_source",
        "exchange_bind_destination",
        "delete",
    ],
)
def test_default_exchange_cannot_be_bound_or_deleted(channel, names, operation):
    q = names.queue()
    channel.queue_declare(q)
    with pytest.raises(ChannelClosed) as info:
        if operation == "declare":
            channel.exchange_declare("", "direct")
        elif operation == "declare_passive":
            channel.exchange_declare("", passive=True)
        elif operation == "queue_bind":
            channel.queue_bind(q, "", routing_key="k")
        elif operation == "queue_unbind":
            channel.queue_unbind(q, "", routing_key=q)
        elif operation == "exchange_bind_source":
            x = names.exchange()
            channel.exchange_declare(x, "fanout")
            channel.exchange_bind(destination=x, source="", routing_key="k")
        elif operation == "exchange_bind_destination":
            x = names.exchange()
            channel.exchange_declare(x, "fanout")
            channel.exchange_bind(destination="", source=x, routing_key="k")
        else:
            channel.exchange_delete("")
    closed_with(info, 403, "ACCESS_REFUSED", "operation not permitted on the default exchange")


def test_redeclaring_an_amq_exchange_with_another_type_is_406(channel):
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_declare("amq.direct", "fanout")
    closed_with(
        info, 406, "PRECONDITION_FAILED",
        "inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
        "received 'fanout' but current is 'direct'",
    )


def test_amq_exchanges_cannot_be_deleted(channel):
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_delete("amq.direct")
    closed_with(info, 403, "ACCESS_REFUSED", "deletion of system exchange 'amq.direct' in vhost '/' not allowed")


def test_bind_to_missing_exchange_or_queue_is_404(connect, names):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    missing_x = names.exchange("missing")
    with pytest.raises(ChannelClosed) as info:
        ch.queue_bind(q, missing_x, "k")
    closed_with(info, 404, "NOT_FOUND", f"no exchange '{missing_x}' in vhost '/'")
    ch = conn.channel()
    missing_q = names.queue("missing")
    with pytest.raises(ChannelClosed) as info:
        ch.queue_bind(missing_q, "amq.direct", "k")
    closed_with(info, 404, "NOT_FOUND", f"no queue '{missing_q}' in vhost '/'")


@pytest.mark.parametrize("missing", ["source", "destination"])
def test_exchange_bind_with_a_missing_exchange_is_404(channel, names, missing):
    present = names.exchange()
    channel.exchange_declare(present, "direct")
    absent = names.exchange("missing")
    source, destination = (absent, present) if missing == "source" else (present, absent)
    with pytest.raises(ChannelClosed) as info:
        channel.exchange_bind(destination=destination, source=source, routing_key="k")
    closed_with(info, 404, "NOT_FOUND", f"no exchange '{absent}' in vhost '/'")


def test_unbinding_what_does_not_exist_is_ok(channel, names):
    # RabbitMQ 3.10 answers unbind-ok even when the queue or an exchange is missing.
    q = names.queue()
    channel.queue_declare(q)
    x = names.exchange()
    channel.exchange_declare(x, "direct")
    missing_q = names.queue("missing")
    missing_x = names.exchange("missing")
    assert isinstance(channel.queue_unbind(missing_q, x, "k").method, pika.spec.Queue.UnbindOk)
    assert isinstance(channel.queue_unbind(q, missing_x, "k").method, pika.spec.Queue.UnbindOk)
    assert isinstance(
        channel.exchange_unbind(destination=missing_x, source=x, routing_key="k").method,
        pika.spec.Exchange.UnbindOk,
    )
    assert channel.is_open


# --- routing -------------------------------------------------------------------------------------


def test_default_exchange_routes_by_queue_name(channel, names, drain):
    q = names.queue()
    channel.queue_declare(q)
    channel.basic_publish("", q, b"direct to the queue")
    channel.basic_publish("", names.queue("nobody"), b"dropped")
    got = drain(channel, q)
    assert [d.body for d in got] == [b"direct to the queue"]
    assert got[0].method.exchange == "" and got[0].method.routing_key == q


def test_direct_routing(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "direct")
    qa = bound_queue(channel, names, x, "a", "both")
    qb = bound_queue(channel, names, x, "b", "both")
    for key in ["a", "b", "both", "c", "A", ""]:
        channel.basic_publish(x, key, key.encode())
    assert [d.body for d in drain(channel, qa)] == [b"a", b"both"]
    got_b = drain(channel, qb)
    assert [d.body for d in got_b] == [b"b", b"both"]
    assert got_b[0].method.exchange == x and got_b[0].method.routing_key == "b"


def test_same_binding_twice_delivers_once(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "direct")
    q = bound_queue(channel, names, x, "k", "k")
    channel.basic_publish(x, "k", b"once")
    assert [d.body for d in drain(channel, q)] == [b"once"]


def test_fanout_routing_ignores_the_key(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "fanout")
    qa = bound_queue(channel, names, x, "")
    qb = bound_queue(channel, names, x, "whatever")
    channel.basic_publish(x, "any.key", b"1")
    channel.basic_publish(x, "", b"2")
    assert [d.body for d in drain(channel, qa)] == [b"1", b"2"]
    assert [d.body for d in drain(channel, qb)] == [b"1", b"2"]


TOPIC_CASES = [
    # (binding key, routing keys that match, routing keys that do not)
    ("a.b.c", ["a.b.c"], ["a.b", "a.b.c.d", "a.B.c", ""]),
    ("a.*.c", ["a.b.c", "a..c"], ["a.c", "a.b.b.c", "a.b.c.d"]),
    ("*", ["a"], ["a.b", ""]),
    ("*.*", ["a.b", ".", "a."], ["a", "a.b.c"]),
    ("#", ["", "a", "a.b.c", "."], []),
    ("a.#", ["a", "a.b", "a.b.c"], ["b.a", "ab"]),
    ("#.c", ["c", "a.c", "a.b.c"], ["c.a", "ac"]),
    ("a.#.c", ["a.c", "a.b.c", "a.b.b.c"], ["a.b", "ab.c"]),
    ("#.#", ["", "a", "a.b"], []),
    ("*.#", ["a", "a.b"], [""]),
    ("#.*", ["a", "a.b"], [""]),
]


@pytest.mark.parametrize("binding,matching,other", TOPIC_CASES, ids=[c[0] for c in TOPIC_CASES])
def test_topic_routing(channel, names, drain, binding, matching, other):
    x = names.exchange()
    channel.exchange_declare(x, "topic")
    q = bound_queue(channel, names, x, binding)
    for key in matching + other:
        channel.basic_publish(x, key, key.encode())
    got = [d.method.routing_key for d in drain(channel, q)]
    assert got == matching, f"binding {binding!r}"


def test_topic_star_does_not_match_the_empty_key_but_hash_does(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "topic")
    star = bound_queue(channel, names, x, "*")
    hash_ = bound_queue(channel, names, x, "#")
    channel.basic_publish(x, "", b"empty key")
    channel.basic_publish(x, ".", b"two empty words")
    # RabbitMQ splits "" into no words at all: "#" (zero or more words) matches it, "*" (exactly
    # one word) does not. An empty word between dots is a word: "*.*" matches "." (above).
    assert [d.body for d in drain(channel, hash_)] == [b"empty key", b"two empty words"]
    assert [d.body for d in drain(channel, star)] == []


def test_topic_message_matching_several_bindings_of_one_queue_arrives_once(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "topic")
    q = bound_queue(channel, names, x, "a.*", "#", "a.b")
    channel.basic_publish(x, "a.b", b"once")
    assert [d.body for d in drain(channel, q)] == [b"once"]


def headers_exchange(channel, names, match: str, binding_headers: dict) -> tuple[str, str]:
    x = names.exchange()
    channel.exchange_declare(x, "headers")
    q = bound_queue(channel, names, x, "", arguments={"x-match": match, **binding_headers})
    return x, q


def publish_headers(channel, x: str, cases: list[dict]) -> None:
    for i, headers in enumerate(cases):
        channel.basic_publish(
            x, "ignored", str(i).encode(), pika.BasicProperties(headers=headers)
        )


HEADER_MESSAGES = [
    {"a": 1, "b": "two"},  # 0: both
    {"a": 1},  # 1: only a
    {"b": "two", "c": True},  # 2: only b, plus another
    {"a": 2, "b": "two"},  # 3: a with another value
    {},  # 4: none
    None,  # 5: no headers table at all
    {"a": 1, "b": "two", "x-extra": "y"},  # 6: both, and an x- header
    {"a": "1", "b": "two"},  # 7: a as a string, not an int
]


@pytest.mark.parametrize(
    "match,expected",
    [("all", [b"0", b"6"]), ("any", [b"0", b"1", b"2", b"3", b"6", b"7"])],
)
def test_headers_routing(channel, names, drain, match, expected):
    x, q = headers_exchange(channel, names, match, {"a": 1, "b": "two"})
    publish_headers(channel, x, HEADER_MESSAGES)
    assert [d.body for d in drain(channel, q)] == expected


def test_headers_default_match_is_all(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "headers")
    q = bound_queue(channel, names, x, "", arguments={"a": 1, "b": "two"})
    publish_headers(channel, x, HEADER_MESSAGES)
    assert [d.body for d in drain(channel, q)] == [b"0", b"6"]


def test_headers_binding_with_only_x_match_all_matches_everything(channel, names, drain):
    x, q = headers_exchange(channel, names, "all", {})
    publish_headers(channel, x, [{"a": 1}, {}, None])
    assert [d.body for d in drain(channel, q)] == [b"0", b"1", b"2"]


def test_headers_binding_with_only_x_match_any_matches_nothing(channel, names, drain):
    x, q = headers_exchange(channel, names, "any", {})
    publish_headers(channel, x, [{"a": 1}, {}, None])
    assert drain(channel, q) == []


def test_headers_void_binding_value_matches_presence(channel, names, drain):
    # A binding argument of type void matches a header of that name with any value.
    x, q = headers_exchange(channel, names, "all", {"a": None})
    publish_headers(channel, x, [{"a": 1}, {"a": "s"}, {"b": 1}, {"a": None}])
    assert [d.body for d in drain(channel, q)] == [b"0", b"1", b"3"]


def test_headers_x_arguments_of_the_binding_are_not_matched(channel, names, drain):
    # all/any ignore binding arguments starting with "x-": only "a" has to match here.
    x, q = headers_exchange(channel, names, "all", {"a": 1, "x-ignored": "z"})
    publish_headers(channel, x, [{"a": 1}, {"a": 1, "x-ignored": "z"}])
    assert [d.body for d in drain(channel, q)] == [b"0", b"1"]


@pytest.mark.parametrize(
    "match,expected",
    [
        # all-with-x / any-with-x (RabbitMQ 3.10+) also match the x- headers of the binding.
        ("all-with-x", [b"1"]),
        ("any-with-x", [b"0", b"1", b"2"]),
    ],
)
def test_headers_with_x_match_modes(channel, names, drain, match, expected):
    x, q = headers_exchange(channel, names, match, {"a": 1, "x-tag": "t"})
    publish_headers(channel, x, [{"a": 1}, {"a": 1, "x-tag": "t"}, {"x-tag": "t"}, {"b": 1}])
    assert [d.body for d in drain(channel, q)] == expected


@pytest.mark.parametrize(
    "x_match,text",
    [
        ("some", 'Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x'),
        (1, "Invalid x-match field type signedint (value 1); expected longstr"),
    ],
    ids=["unknown-value", "not-a-string"],
)
def test_headers_invalid_x_match_is_406(channel, names, x_match, text):
    x = names.exchange()
    channel.exchange_declare(x, "headers")
    q = names.queue()
    channel.queue_declare(q)
    with pytest.raises(ChannelClosed) as info:
        channel.queue_bind(q, x, "", arguments={"x-match": x_match})
    assert (info.value.reply_code, info.value.reply_text) == (
        406, "PRECONDITION_FAILED - " + text
    ), repr(info.value)


def test_exchange_to_exchange_binding_and_loop_deliver_once(channel, names, drain):
    a = names.exchange("a")
    b = names.exchange("b")
    c = names.exchange("c")
    channel.exchange_declare(a, "topic")
    channel.exchange_declare(b, "fanout")
    channel.exchange_declare(c, "direct")
    channel.exchange_bind(destination=b, source=a, routing_key="k.#")
    channel.exchange_bind(destination=c, source=b, routing_key="")
    channel.exchange_bind(destination=a, source=c, routing_key="k.x")  # a -> b -> c -> a
    qb = bound_queue(channel, names, b, "")
    qc = bound_queue(channel, names, c, "k.x")
    qa = bound_queue(channel, names, a, "#")
    channel.basic_publish(a, "k.x", b"loop")
    channel.basic_publish(a, "k.y", b"not for c")
    channel.basic_publish(a, "other", b"only a")
    assert [d.body for d in drain(channel, qa)] == [b"loop", b"not for c", b"only a"]
    assert [d.body for d in drain(channel, qb)] == [b"loop", b"not for c"]
    got_c = drain(channel, qc)
    assert [d.body for d in got_c] == [b"loop"]
    # The delivery names the exchange the message was published to.
    assert got_c[0].method.exchange == a and got_c[0].method.routing_key == "k.x"
    # Publishing into the middle of the loop reaches each queue once as well.
    channel.basic_publish(c, "k.x", b"from c")
    for q in (qa, qb, qc):
        assert [d.body for d in drain(channel, q)] == [b"from c"], q


def test_exchange_unbind_stops_routing(channel, names, drain):
    src = names.exchange("src")
    dst = names.exchange("dst")
    channel.exchange_declare(src, "direct")
    channel.exchange_declare(dst, "fanout")
    channel.exchange_bind(destination=dst, source=src, routing_key="k")
    q = bound_queue(channel, names, dst, "")
    channel.basic_publish(src, "k", b"1")
    channel.exchange_unbind(destination=dst, source=src, routing_key="k")
    channel.basic_publish(src, "k", b"2")
    assert [d.body for d in drain(channel, q)] == [b"1"]


def test_queue_unbind_stops_routing(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "direct")
    q = bound_queue(channel, names, x, "k", "j")
    channel.basic_publish(x, "k", b"1")
    channel.queue_unbind(q, x, "k")
    channel.basic_publish(x, "k", b"2")
    channel.basic_publish(x, "j", b"3")
    # Unbinding what is not bound is fine.
    channel.queue_unbind(q, x, "never-bound")
    assert [d.body for d in drain(channel, q)] == [b"1", b"3"]


def test_headers_unbind_matches_the_arguments(channel, names, drain):
    x = names.exchange()
    channel.exchange_declare(x, "headers")
    q = bound_queue(channel, names, x, "", arguments={"a": 1})
    channel.queue_bind(q, x, "", arguments={"b": 1})
    channel.queue_unbind(q, x, "", arguments={"a": 1})
    publish_headers(channel, x, [{"a": 1}, {"b": 1}])
    assert [d.body for d in drain(channel, q)] == [b"1"]


def test_auto_delete_exchange_goes_when_its_last_binding_goes(connect, names):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "fanout", auto_delete=True)
    q = bound_queue(ch, names, x, "")
    # An auto-delete exchange that never had a binding stays; once bound, it goes with the last
    # binding.
    ch.queue_unbind(q, x, "")
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_declare(x, passive=True)
    assert info.value.reply_code == 404, repr(info.value)


def test_auto_delete_exchange_goes_when_its_last_bound_queue_is_deleted(connect, names):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "fanout", auto_delete=True)
    q1 = bound_queue(ch, names, x, "")
    q2 = bound_queue(ch, names, x, "")
    ch.queue_delete(q1)
    ch.exchange_declare(x, passive=True)  # one binding left
    ch.queue_delete(q2)
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_declare(x, passive=True)
    assert info.value.reply_code == 404, repr(info.value)


# --- publishing errors ---------------------------------------------------------------------------


def test_publish_to_internal_exchange_is_403_but_it_routes_from_other_exchanges(
    connect, names, drain
):
    conn = connect()
    ch = conn.channel()
    internal = names.exchange("internal")
    front = names.exchange("front")
    ch.exchange_declare(internal, "fanout", internal=True)
    ch.exchange_declare(front, "fanout")
    ch.exchange_bind(destination=internal, source=front)
    q = bound_queue(ch, names, internal, "")
    ch.basic_publish(front, "", b"via front")
    assert [d.body for d in drain(ch, q)] == [b"via front"]
    ch.basic_publish(internal, "", b"direct")
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(q, passive=True)  # the close arrives before this declare's answer
    closed_with(
        info, 403, "ACCESS_REFUSED", f"cannot publish to internal exchange '{internal}' in vhost '/'"
    )
    assert conn.is_open
    ch = conn.channel()
    assert drain(ch, q) == []


def test_publish_to_missing_exchange_is_404(connect, names):
    conn = connect()
    ch = conn.channel()
    missing = names.exchange("missing")
    ch.basic_publish(missing, "k", b"lost")
    with pytest.raises(ChannelClosed) as info:
        ch.basic_qos(prefetch_count=1)  # any synchronous method shows the channel is closed
    closed_with(info, 404, "NOT_FOUND", f"no exchange '{missing}' in vhost '/'")
    assert conn.is_open and conn.channel().is_open


ALL_PROPERTIES = dict(
    content_type="application/x-warren",
    content_encoding="gzip",
    headers={"h": "v"},
    delivery_mode=2,
    priority=7,
    correlation_id="corr-1",
    reply_to="reply.queue",
    expiration="60000",
    message_id="msg-1",
    timestamp=1_700_000_000,
    type="kind.of.message",
    user_id="guest",  # must be the connection's user, or the publish is refused (406)
    app_id="warren-interop",
    cluster_id="cluster-1",
)


def assert_properties(props, expected: dict) -> None:
    for name, value in expected.items():
        assert getattr(props, name) == value, name


def test_mandatory_unroutable_is_returned_with_312_and_intact_message(connect, names, pump, drain):
    conn = connect()
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    q = bound_queue(ch, names, x, "routed")
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, props, body)))
    body = bytes(range(256)) * 4
    ch.basic_publish(x, "nowhere", body, pika.BasicProperties(**ALL_PROPERTIES), mandatory=True)
    ch.basic_publish(x, "nowhere", b"not mandatory")  # dropped silently
    ch.basic_publish(x, "routed", b"routed", mandatory=True)  # not returned
    assert pump(conn, until=lambda: returned, timeout=5), "no basic.return"
    pump(conn, timeout=0.2)  # nothing else comes back
    assert len(returned) == 1, returned
    method, props, got_body = returned[0]
    assert isinstance(method, pika.spec.Basic.Return)
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == (x, "nowhere")
    assert got_body == body
    assert_properties(props, ALL_PROPERTIES)
    assert [d.body for d in drain(ch, q)] == [b"routed"]


def test_mandatory_to_default_exchange_missing_queue_is_returned(connect, names, pump):
    conn = connect()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    missing = names.queue("missing")
    ch.basic_publish("", missing, b"back", mandatory=True)
    assert pump(conn, until=lambda: returned, timeout=5)
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, method.exchange, method.routing_key, body) == (
        312, "NO_ROUTE", "", missing, b"back"
    )


def test_immediate_flag_is_540_not_implemented(connect, names):
    # RabbitMQ dropped `immediate` in 3.0: publishing with it closes the connection with 540.
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    # pika's basic_publish has no `immediate`: send the method and its content directly.
    ch._impl._send_method(
        pika.spec.Basic.Publish(exchange="", routing_key=q, immediate=True),
        (pika.BasicProperties(), b"now"),
    )
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.process_data_events(time_limit=5)
        conn.channel()
    assert (info.value.reply_code, info.value.reply_text) == (
        540, "NOT_IMPLEMENTED - immediate=true"
    ), repr(info.value)


@pytest.mark.parametrize(
    "properties,text",
    [
        (dict(expiration="abc"), "invalid expiration 'abc': no_integer"),
        (dict(expiration="-1"), "invalid expiration '-1': {value_negative,-1}"),
        (dict(delivery_mode=3), "invalid message: {delivery_mode_unknown,3}"),
    ],
    ids=["expiration-not-a-number", "expiration-negative", "delivery-mode-3"],
)
def test_invalid_properties_are_406(connect, names, properties, text):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"bad", pika.BasicProperties(**properties))
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(q, passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (
        406, "PRECONDITION_FAILED - " + text
    ), repr(info.value)
    assert conn.channel().basic_get(q) == (None, None, None)


def test_user_id_other_than_the_connection_user_is_406(connect, names):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"spoofed", pika.BasicProperties(user_id="admin"))
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(q, passive=True)
    closed_with(
        info, 406, "PRECONDITION_FAILED",
        "user_id property set to 'admin' but authenticated user was 'guest'",
    )


# --- properties and field tables -----------------------------------------------------------------


class Typed:
    """A field value with its type tag, for the types pika cannot send (floats, short and unsigned
    integers) or does not keep apart on receipt; see the `typed_fields` fixture."""

    FORMATS = {
        "b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
        "f": ">f", "d": ">d",
    }

    def __init__(self, kind: str, value):
        self.kind = kind
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Typed) and (self.kind, self.value) == (other.kind, other.value)

    def __hash__(self):
        return hash((self.kind, self.value))

    def __repr__(self):
        return f"Typed({self.kind!r}, {self.value!r})"


@pytest.fixture
def typed_fields(monkeypatch):
    """Makes pika encode Typed values with their own tag, and decode every number and byte array
    into a Typed (pika would turn doubles into truncated ints and drop the integer widths)."""
    encode, decode = pika.data.encode_value, pika.data.decode_value

    def encode_value(pieces, value):
        if isinstance(value, Typed):
            if value.kind == "x":
                piece = struct.pack(">cI", b"x", len(value.value)) + value.value
            else:
                piece = value.kind.encode() + struct.pack(Typed.FORMATS[value.kind], value.value)
            pieces.append(piece)
            return len(piece)
        return encode(pieces, value)

    def decode_value(encoded, offset):
        kind = encoded[offset:offset + 1].decode("latin-1")
        if kind in Typed.FORMATS:
            fmt = Typed.FORMATS[kind]
            value = struct.unpack_from(fmt, encoded, offset + 1)[0]
            return Typed(kind, value), offset + 1 + struct.calcsize(fmt)
        if kind == "x":
            (length,) = struct.unpack_from(">I", encoded, offset + 1)
            start = offset + 5
            return Typed("x", bytes(encoded[start:start + length])), start + length
        return decode(encoded, offset)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)
    monkeypatch.setattr(pika.data, "decode_value", decode_value)


NESTED_HEADERS = {
    "str": "text é",
    "bytes": Typed("x", b"\x00\xffraw"),
    "int8": Typed("b", -5),
    "uint8": Typed("B", 200),
    "int16": Typed("s", -300),
    "uint16": Typed("u", 60000),
    "int32": Typed("I", -70000),
    "uint32": Typed("i", 4_000_000_000),
    "int64": Typed("l", -(2**40)),
    "bool_true": True,
    "bool_false": False,
    "float": Typed("f", 1.5),
    "double": Typed("d", 2.25),
    "decimal": decimal.Decimal("3.14"),
    "timestamp": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    "void": None,
    "array": [Typed("I", 1), "two", [Typed("I", 3), {"four": Typed("d", 4.5)}], None, False],
    "table": {"inner": {"deeper": [decimal.Decimal("-0.5"), "x"]}, "n": Typed("I", 0)},
    "empty_table": {},
    "empty_array": [],
    "": "empty key",
}


def test_all_properties_and_nested_headers_round_trip(
    connect, names, drain, pump, inbox, typed_fields
):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    sent = dict(ALL_PROPERTIES, headers=NESTED_HEADERS)
    ch.basic_publish("", q, b"props", pika.BasicProperties(**sent))
    ch.basic_publish("", q, b"none", pika.BasicProperties())
    got = drain(ch, q)
    assert [d.body for d in got] == [b"props", b"none"]
    assert_properties(got[0].properties, sent)
    assert got[0].properties.headers == NESTED_HEADERS
    # A message without properties gets none added.
    empty = got[1].properties
    for name in ALL_PROPERTIES:
        assert getattr(empty, name) is None, name

    # The same through a consumer.
    ch.basic_publish("", q, b"props", pika.BasicProperties(**sent))
    seen = inbox()
    ch.basic_consume(q, seen, auto_ack=True)
    assert pump(conn, until=lambda: seen, timeout=5), "no delivery"
    assert_properties(seen[0].properties, sent)
    assert seen[0].properties.headers == NESTED_HEADERS


def test_headers_values_compare_by_value_across_types(channel, names, drain, typed_fields):
    # RabbitMQ compares header values with Erlang's ==: numbers of any width (and floats) that
    # are equal match, a byte array matches a string with the same bytes; a string never equals a
    # number and true is not 1.
    x, q = headers_exchange(channel, names, "any", {"a": 1, "s": "abc"})
    cases = [
        ("long", {"a": Typed("l", 1)}),
        ("int8", {"a": Typed("b", 1)}),
        ("uint16", {"a": Typed("u", 1)}),
        ("uint32", {"a": Typed("i", 1)}),
        ("double", {"a": Typed("d", 1.0)}),
        ("float", {"a": Typed("f", 1.0)}),
        ("bytes", {"s": Typed("x", b"abc")}),
        ("no: string 1", {"a": "1"}),
        ("no: true", {"a": True}),
        ("no: 1.5", {"a": Typed("d", 1.5)}),
        ("no: bytes abd", {"s": Typed("x", b"abd")}),
    ]
    for label, headers in cases:
        channel.basic_publish(x, "", label.encode(), pika.BasicProperties(headers=headers))
    expected = [label.encode() for label, _ in cases if not label.startswith("no:")]
    assert [d.body for d in drain(channel, q)] == expected

"""Stream queues (`x-queue-type: stream`) over AMQP 0-9-1 with pika, as RabbitMQ has them: an
append-only log that consumers read without removing anything. A stream must be durable, not
exclusive, not auto-delete, and takes only its own arguments (`x-max-length-bytes`, `x-max-age`,
`x-stream-max-segment-size-bytes`); basic.get, queue.purge and auto-ack consumers are refused.
A consumer needs a prefetch, says where to start with `x-stream-offset` (first, last, next, an
offset, a timestamp or an interval) and gets each message with its exchange, routing key and
properties plus header `x-stream-offset`; acks only give credit back. Retention deletes whole old
segments; confirmed messages survive a restart and kill -9 at the same offsets.

Warren-only: filtering exact per message (`x-stream-filter-value`, `x-stream-filter`,
`x-stream-match-unfiltered`, RabbitMQ 3.13's names), basic.nack/basic.reject of a stream delivery
(RabbitMQ 3.10 closes the connection with 540, later versions accept them), a 406 for an invalid
`x-stream-offset` (RabbitMQ 3.10 fails with 541) and an exact message_count in declare-ok (RabbitMQ's
lags)."""

import datetime
import signal
import time

import pika
import pika.exceptions
import pytest

from conftest import EXTERNAL_PORT, _spawn

pytestmark = pytest.mark.deadline(40)

ChannelClosed = pika.exceptions.ChannelClosedByBroker
ConnectionClosed = pika.exceptions.ConnectionClosedByBroker

STREAM = {"x-queue-type": "stream"}


def declare_stream(ch, names, label: str = "s", **arguments) -> str:
    q = names.queue(label)
    ch.queue_declare(q, durable=True, arguments={**STREAM, **arguments})
    return q


def consume(ch, queue: str, got, offset=None, prefetch: int = 100, **arguments):
    """Sets a per-consumer prefetch and consumes `queue` from `offset` (None: no x-stream-offset,
    i.e. "next") into the Inbox `got`; returns the consumer tag."""
    ch.basic_qos(prefetch_count=prefetch)
    if offset is not None:
        arguments["x-stream-offset"] = offset
    return ch.basic_consume(queue, got, arguments=arguments)


def offsets(got) -> list:
    return [d.properties.headers["x-stream-offset"] for d in got]


def publish_confirmed(conn, queue: str, bodies, properties=None) -> None:
    """Publishes each body on a confirm channel of its own, one at a time (pika waits for each
    confirm), so each message is stored (and, on RabbitMQ, written as a chunk of its own)."""
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, properties, mandatory=True)
    ch.close()


# --- declaring a stream ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, prop",
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
)
def test_a_stream_must_be_durable_not_exclusive_not_auto_delete(connect, names, flags, prop):
    conn = connect()
    q = names.queue()
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, arguments=STREAM, **flags)
    assert info.value.reply_code == 406
    assert f"invalid property '{prop}' for queue '{q}'" in info.value.reply_text
    assert conn.is_open


@pytest.mark.parametrize(
    "arg, value",
    [
        ("x-message-ttl", 1000),
        ("x-max-length", 10),
        ("x-dead-letter-exchange", "dlx"),
        ("x-max-priority", 5),
        ("x-expires", 10000),
        ("x-overflow", "reject-publish"),
        ("x-single-active-consumer", True),
    ],
)
def test_classic_queue_arguments_are_refused(connect, names, arg, value):
    conn = connect()
    q = names.queue()
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, durable=True, arguments={**STREAM, arg: value})
    assert info.value.reply_code == 406
    assert (
        f"invalid arg '{arg}' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"
        in info.value.reply_text
    )
    assert conn.is_open


@pytest.mark.parametrize("value, reason", [("10X", "invalid_max_age"), (10, "unacceptable_type")])
def test_an_invalid_max_age_is_refused(connect, names, value, reason):
    conn = connect()
    q = names.queue()
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, durable=True, arguments={**STREAM, "x-max-age": value})
    assert info.value.reply_code == 406
    assert f"invalid arg 'x-max-age' for queue '{q}'" in info.value.reply_text
    assert reason in info.value.reply_text


def test_stream_arguments_are_accepted_and_redeclare_must_be_equivalent(connect, names):
    conn = connect()
    ch = conn.channel()
    for age in ("7D", "1Y", "1M", "1h", "30m", "10s"):
        declare_stream(ch, names, "age", **{"x-max-age": age})
    arguments = {
        "x-max-age": "7D",
        "x-max-length-bytes": 10_000_000,
        "x-stream-max-segment-size-bytes": 1_000_000,
    }
    q = declare_stream(ch, names, **arguments)
    ok = ch.queue_declare(q, durable=True, arguments={**STREAM, **arguments}).method
    assert (ok.queue, ok.consumer_count) == (q, 0)
    assert ch.queue_declare(q, passive=True).method.queue == q

    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, durable=True, arguments={**STREAM, **arguments, "x-max-age": "1D"})
    assert info.value.reply_code == 406
    assert "inequivalent arg 'x-max-age'" in info.value.reply_text

    plain = declare_stream(ch, names, "plain")
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(plain, durable=True)
    assert info.value.reply_code == 406
    assert "inequivalent arg 'x-queue-type'" in info.value.reply_text
    assert conn.is_open


# --- what a stream refuses ------------------------------------------------------------------------


def test_basic_get_and_purge_close_the_connection_with_540(connect, names):
    q = declare_stream(connect().channel(), names)
    conn = connect()
    with pytest.raises(ConnectionClosed) as info:
        conn.channel().basic_get(q)
    assert info.value.reply_code == 540
    assert "basic.get not supported by stream queues" in info.value.reply_text

    conn = connect()
    with pytest.raises(ConnectionClosed) as info:
        conn.channel().queue_purge(q)
    assert info.value.reply_code == 540
    assert "queue.purge not supported by stream queues" in info.value.reply_text


@pytest.mark.parametrize("qos", [None, "global", "zero"])
def test_consume_without_a_consumer_prefetch_is_406(connect, names, qos):
    conn = connect()
    q = declare_stream(conn.channel(), names)
    ch = conn.channel()
    if qos == "global":
        ch.basic_qos(prefetch_count=10, global_qos=True)
    elif qos == "zero":
        ch.basic_qos(prefetch_count=0)
    with pytest.raises(ChannelClosed) as info:
        ch.basic_consume(q, lambda *_: None)
    assert info.value.reply_code == 406
    assert "consumer prefetch count is not set for" in info.value.reply_text
    assert conn.is_open


def test_auto_ack_consume_closes_the_connection_with_540(connect, names):
    q = declare_stream(connect().channel(), names)
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    with pytest.raises(ConnectionClosed) as info:
        ch.basic_consume(q, lambda *_: None, auto_ack=True)
    assert info.value.reply_code == 540
    assert "automatic acknowledgement not supported by stream queues" in info.value.reply_text


# --- deliveries -----------------------------------------------------------------------------------


def test_deliveries_keep_exchange_routing_key_and_properties_and_carry_their_offset(
    connect, names, inbox, pump
):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    x = names.exchange()
    ch.exchange_declare(x, "topic")
    ch.queue_bind(q, x, "orders.#")
    ch.confirm_delivery()
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"s": "v", "n": 7, "big": 2**40},
        delivery_mode=2,
        priority=3,
        correlation_id="c1",
        reply_to="r1",
        expiration="60000",
        message_id="m1",
        timestamp=1_700_000_000,
        type="t1",
        user_id="guest",
        app_id="app",
    )
    ch.basic_publish(x, "orders.eu.new", b"payload", properties, mandatory=True)
    ch.basic_publish(x, "orders.us", b"bare", mandatory=True)
    ch.basic_publish("", q, b"direct", pika.BasicProperties(message_id="m3"), mandatory=True)

    got = inbox()
    consume(conn.channel(), q, got, "first")
    assert pump(conn, until=lambda: len(got) == 3), got
    assert got.bodies() == [b"payload", b"bare", b"direct"]
    assert [(d.method.exchange, d.method.routing_key) for d in got] == [
        (x, "orders.eu.new"),
        (x, "orders.us"),
        ("", q),
    ]
    assert [d.redelivered for d in got] == [False] * 3
    assert offsets(got) == [0, 1, 2]
    assert all(isinstance(n, int) for n in offsets(got))

    p = got[0].properties
    assert p.headers == {"s": "v", "n": 7, "big": 2**40, "x-stream-offset": 0}
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                 "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(p, name) == getattr(properties, name), name
    assert got[1].properties.headers == {"x-stream-offset": 1}
    assert got[1].properties.message_id is None
    assert got[2].properties.message_id == "m3"


# --- where a consumer starts ----------------------------------------------------------------------


def test_first_last_and_next(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [b"0", b"1", b"2"])

    first, last, next_, default = inbox(), inbox(), inbox(), inbox()
    consume(conn.channel(), q, first, "first")
    consume(conn.channel(), q, last, "last")
    consume(conn.channel(), q, next_, "next")
    consume(conn.channel(), q, default)
    assert pump(conn, until=lambda: len(first) == 3 and len(last) == 1)
    pump(conn, timeout=0.3)
    assert first.bodies() == [b"0", b"1", b"2"] and offsets(first) == [0, 1, 2]
    assert last.bodies() == [b"2"] and offsets(last) == [2]
    assert next_ == [] and default == []

    publish_confirmed(conn, q, [b"3"])
    assert pump(conn, until=lambda: all(len(got) == n for got, n in
                                        ((first, 4), (last, 2), (next_, 1), (default, 1))))
    assert [offsets(got)[-1] for got in (first, last, next_, default)] == [3] * 4
    assert next_.bodies() == default.bodies() == [b"3"]


def test_numeric_offsets(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [b"0", b"1", b"2", b"3", b"4"])

    from_2, minus_1, at_end, beyond = inbox(), inbox(), inbox(), inbox()
    consume(conn.channel(), q, from_2, 2)
    consume(conn.channel(), q, minus_1, -1)
    consume(conn.channel(), q, at_end, 5)
    consume(conn.channel(), q, beyond, 6)
    assert pump(conn, until=lambda: len(from_2) == 3 and len(minus_1) == 5)
    pump(conn, timeout=0.3)
    assert from_2.bodies() == [b"2", b"3", b"4"] and offsets(from_2) == [2, 3, 4]
    assert minus_1.bodies() == [b"0", b"1", b"2", b"3", b"4"] and offsets(minus_1) == [0, 1, 2, 3, 4]
    assert at_end == [] and beyond == [], "an offset not written yet waits for it"

    publish_confirmed(conn, q, [b"5"])
    assert pump(conn, until=lambda: len(at_end) == 1 and len(from_2) == 4)
    pump(conn, timeout=0.3)
    assert at_end.bodies() == [b"5"] and offsets(at_end) == [5]
    assert beyond == [], "offset 6 starts at 6"
    publish_confirmed(conn, q, [b"6"])
    assert pump(conn, until=lambda: len(beyond) == 1 and len(at_end) == 2)
    assert beyond.bodies() == [b"6"] and offsets(beyond) == [6]


def test_timestamp_and_interval_offsets(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [b"old-0", b"old-1"])
    stored = time.time()  # both old messages are stored (confirmed) by now
    boundary = int(stored) + 1  # a whole second after them and before the new ones
    time.sleep(1.3)
    publish_confirmed(conn, q, [b"new-0", b"new-1"])

    at, since_1s, since_1h, since_2000 = inbox(), inbox(), inbox(), inbox()
    # An interval counts back from the consume: 1 s ago is after the old messages (>= 1.3 s ago).
    consume(conn.channel(), q, since_1s, "1s")
    consume(conn.channel(), q, at, datetime.datetime.fromtimestamp(boundary, datetime.timezone.utc))
    consume(conn.channel(), q, since_1h, "1h")
    consume(conn.channel(), q, since_2000, datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
    assert pump(conn, until=lambda: (len(at), len(since_1s), len(since_1h), len(since_2000)) == (2, 2, 4, 4))
    pump(conn, timeout=0.3)
    assert at.bodies() == since_1s.bodies() == [b"new-0", b"new-1"]
    assert offsets(at) == offsets(since_1s) == [2, 3]
    assert since_1h.bodies() == since_2000.bodies() == [b"old-0", b"old-1", b"new-0", b"new-1"]


@pytest.mark.warren_only  # RabbitMQ 3.10 fails the consume with 541 INTERNAL_ERROR (connection)
def test_an_invalid_offset_closes_the_channel_with_406(connect, names):
    conn = connect()
    q = declare_stream(conn.channel(), names)
    for offset in ("bogus", "10X"):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        with pytest.raises(ChannelClosed) as info:
            ch.basic_consume(q, lambda *_: None, arguments={"x-stream-offset": offset})
        assert info.value.reply_code == 406, offset
        assert "x-stream-offset" in info.value.reply_text, offset
        assert conn.is_open


# --- reading does not consume ---------------------------------------------------------------------


def test_consumers_read_independently_and_reading_removes_nothing(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    bodies = [b"a", b"b", b"c", b"d"]
    publish_confirmed(conn, q, bodies)

    one, two, other = inbox(), inbox(), inbox()
    shared = conn.channel()
    consume(shared, q, one, "first")
    tag_two = consume(shared, q, two, "first")
    other_conn = connect()
    consume(other_conn.channel(), q, other, "first")
    assert pump([conn, other_conn], until=lambda: len(one) == len(two) == len(other) == 4)
    for got in (one, two, other):
        assert got.bodies() == bodies and offsets(got) == [0, 1, 2, 3]
    assert sorted(d.tag for d in one + two) == list(range(1, 9)), "one channel, one tag sequence"

    shared.basic_ack(max(d.tag for d in one + two), multiple=True)  # all of them: the log stays
    shared.basic_cancel(tag_two)
    again = inbox()
    consume(conn.channel(), q, again, "first")
    assert pump(conn, until=lambda: len(again) == 4)
    assert again.bodies() == bodies and offsets(again) == [0, 1, 2, 3]


def test_prefetch_bounds_unacked_deliveries_and_acks_give_credit_back(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [str(i).encode() for i in range(6)])

    got = inbox()
    reader = conn.channel()
    consume(reader, q, got, "first", prefetch=2)
    assert pump(conn, until=lambda: len(got) == 2)
    pump(conn, timeout=0.4)
    assert offsets(got) == [0, 1], "no more than the prefetch while nothing is acked"

    reader.basic_ack(got[0].tag)
    assert pump(conn, until=lambda: len(got) == 3)
    pump(conn, timeout=0.3)
    assert offsets(got) == [0, 1, 2]

    reader.basic_ack(got[2].tag, multiple=True)
    assert pump(conn, until=lambda: len(got) == 5)
    pump(conn, timeout=0.3)
    assert offsets(got) == [0, 1, 2, 3, 4]
    assert [d.redelivered for d in got] == [False] * 5

    later = inbox()
    consume(conn.channel(), q, later, "first")
    assert pump(conn, until=lambda: len(later) == 6), "acks do not remove anything from the log"


def test_a_consumer_at_the_tail_gets_new_messages_as_they_come(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [b"before-0", b"before-1"])
    got = inbox()
    reader = conn.channel()
    consume(reader, q, got, "next", prefetch=10)
    pump(conn, timeout=0.3)
    assert got == []

    publisher = connect()
    for i in range(5):
        publish_confirmed(publisher, q, [f"live-{i}".encode()])
        assert pump(conn, until=lambda: len(got) == i + 1), i
        reader.basic_ack(got[-1].tag)
    assert got.bodies() == [f"live-{i}".encode() for i in range(5)]
    assert offsets(got) == [2, 3, 4, 5, 6]


# --- retention ------------------------------------------------------------------------------------


def test_max_length_bytes_deletes_whole_old_segments(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names, **{"x-max-length-bytes": 3000, "x-stream-max-segment-size-bytes": 1000})
    bodies = [f"{i:03d}".encode().ljust(100, b".") for i in range(100)]
    publish_confirmed(conn, q, bodies)

    # Retention runs as segments roll; read again until the oldest messages are gone.
    deadline = time.monotonic() + 10
    while True:
        got = inbox()
        reader = conn.channel()
        consume(reader, q, got, "first", prefetch=1000)
        assert pump(conn, until=lambda: got and got[-1].body == bodies[-1]), got
        if got[0].body != bodies[0] or time.monotonic() > deadline:
            break
        reader.close()
        pump(conn, timeout=0.2)
    kept = got.bodies()
    assert kept[0] != bodies[0], "the oldest segments were deleted"
    assert offsets(got)[0] > 0
    assert kept == bodies[-len(kept):], "what is kept is the newest messages, in order"
    assert len(kept) < 50, f"{len(kept)} messages kept under a 3000-byte bound"
    # RabbitMQ starts each segment with a tracking chunk that takes an offset, so the offsets of the
    # kept messages are increasing but not consecutive across segments.
    assert offsets(got) == sorted(set(offsets(got)))


# --- Warren only ----------------------------------------------------------------------------------


def with_filter(value=None, **kwargs) -> pika.BasicProperties:
    return pika.BasicProperties(headers=None if value is None else {"x-stream-filter-value": value}, **kwargs)


@pytest.mark.warren_only  # RabbitMQ 3.13's names; 3.10 does not filter, 3.13 filters per chunk
def test_a_filtered_consumer_gets_exactly_its_values(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    ch.confirm_delivery()
    colours = ["red", "blue", None, "green", "red", None, "blue"]
    for i, colour in enumerate(colours):
        ch.basic_publish("", q, f"{i}-{colour}".encode(), with_filter(colour), mandatory=True)

    def wanted(accept):
        return [i for i, colour in enumerate(colours) if accept(colour)]

    red, red_blue, red_unfiltered, everything = inbox(), inbox(), inbox(), inbox()
    consume(conn.channel(), q, red, "first", **{"x-stream-filter": "red"})
    consume(conn.channel(), q, red_blue, "first", **{"x-stream-filter": ["red", "blue"]})
    consume(conn.channel(), q, red_unfiltered, "first",
            **{"x-stream-filter": "red", "x-stream-match-unfiltered": True})
    consume(conn.channel(), q, everything, "first")
    expected = {
        "red": (red, wanted(lambda c: c == "red")),
        "red+blue": (red_blue, wanted(lambda c: c in ("red", "blue"))),
        "red+unfiltered": (red_unfiltered, wanted(lambda c: c in ("red", None))),
        "all": (everything, wanted(lambda c: True)),
    }
    assert pump(conn, until=lambda: all(len(got) == len(want) for got, want in expected.values()))
    pump(conn, timeout=0.3)
    for label, (got, want) in expected.items():
        assert offsets(got) == want, label  # the log's offsets: filtering does not renumber
        assert got.bodies() == [f"{i}-{colours[i]}".encode() for i in want], label

    # At the tail too, and filtered-out messages take no credit.
    tail = inbox()
    consume(conn.channel(), q, tail, "next", prefetch=1, **{"x-stream-filter": ["green"]})
    for colour in ("red", None, "blue", "green"):
        ch.basic_publish("", q, colour.encode() if colour else b"none", with_filter(colour))
    assert pump(conn, until=lambda: len(tail) == 1)
    pump(conn, timeout=0.3)
    assert tail.bodies() == [b"green"] and offsets(tail) == [len(colours) + 3]


@pytest.mark.warren_only  # RabbitMQ 3.10 closes the connection with 540; later versions accept them
def test_nack_and_reject_give_credit_back_without_redelivery(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    publish_confirmed(conn, q, [b"0", b"1", b"2", b"3"])
    got = inbox()
    reader = conn.channel()
    consume(reader, q, got, "first", prefetch=1)
    assert pump(conn, until=lambda: len(got) == 1)
    reader.basic_nack(got[0].tag, requeue=True)
    assert pump(conn, until=lambda: len(got) == 2)
    reader.basic_reject(got[1].tag, requeue=True)
    assert pump(conn, until=lambda: len(got) == 3)
    reader.basic_nack(got[2].tag, requeue=False)
    assert pump(conn, until=lambda: len(got) == 4)
    reader.basic_reject(got[3].tag, requeue=False)
    pump(conn, timeout=0.4)
    assert offsets(got) == [0, 1, 2, 3], "nothing is redelivered"
    assert [d.redelivered for d in got] == [False] * 4
    assert conn.is_open and reader.is_open

    publish_confirmed(conn, q, [b"4"])
    assert pump(conn, until=lambda: len(got) == 5), "the credit came back"
    assert offsets(got)[-1] == 4


@pytest.mark.warren_only  # RabbitMQ reports the stream's message count, but it lags
def test_declare_ok_counts_the_messages_of_a_stream(connect, names, pump):
    conn = connect()
    ch = conn.channel()
    q = declare_stream(ch, names)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    publish_confirmed(conn, q, [b"x"] * 7)
    ok = ch.queue_declare(q, durable=True, arguments=STREAM).method
    assert (ok.message_count, ok.consumer_count) == (7, 0)
    reader = conn.channel()
    reader.basic_qos(prefetch_count=10)
    reader.basic_consume(q, lambda c, m, _p, _b: c.basic_ack(m.delivery_tag), arguments={"x-stream-offset": "first"})
    pump(conn, timeout=0.3)
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (7, 1), "reading removes nothing"


# --- restart --------------------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path):
    """`restartable(n)` starts the n-th broker process on one data directory (like the restart
    tests of test_dedup.py); any still running at teardown are killed. Skipped externally."""
    if EXTERNAL_PORT:
        pytest.skip("needs a broker process of its own (WARREN_TEST_EXTERNAL_PORT is set)")
    started = []

    def start(n: int):
        broker = _spawn(tmp_path / "data", tmp_path / f"warren-{n}.log")
        started.append(broker)
        assert broker.process.poll() is None, broker.log()
        return broker

    yield start
    for broker in started:
        if broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait()


def read_from_first(broker, queue: str, count: int, pump) -> list:
    conn = broker.connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    got = []
    ch.basic_consume(queue, lambda _c, m, p, b: got.append((p.headers["x-stream-offset"], b)),
                     arguments={"x-stream-offset": "first"})
    assert pump(conn, until=lambda: len(got) >= count), broker.log()
    pump(conn, timeout=0.3)
    conn.close()
    return got


@pytest.mark.parametrize("stop", ["sigterm", "kill_9"])
def test_confirmed_messages_survive_a_restart_at_their_offsets(restartable, pump, stop):
    q = "events"
    broker = restartable(0)
    conn = broker.connect()
    conn.channel().queue_declare(q, durable=True, arguments={**STREAM, "x-max-age": "7D"})
    first = [f"first-{i}".encode() for i in range(20)]
    publish_confirmed(conn, q, first[:10])
    publish_confirmed(conn, q, first[10:], pika.BasicProperties(delivery_mode=2))
    if stop == "sigterm":
        conn.close()
        broker.assert_graceful_exit()
    else:
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait()

    broker = restartable(1)
    conn = broker.connect()
    ch = conn.channel()
    ok = ch.queue_declare(q, durable=True, arguments={**STREAM, "x-max-age": "7D"}).method
    assert ok.queue == q
    assert read_from_first(broker, q, 20, pump) == list(enumerate(first))

    second = [f"second-{i}".encode() for i in range(3)]
    publish_confirmed(conn, q, second)
    assert read_from_first(broker, q, 23, pump) == list(enumerate(first + second)), "new ones continue"
    conn.close()
    broker.assert_graceful_exit()

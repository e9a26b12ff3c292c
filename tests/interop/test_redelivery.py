"""Redelivery with pika: what a consumer held unacked comes back (redelivered=true, in its original
order, exactly once) when its channel or connection closes or its socket dies, and Warren's
unacked timeout takes a delivery back from a consumer that sits on it. Expected behaviour is
RabbitMQ 3.10's except where marked `warren_only`."""

import socket
import struct
import time

import pytest

pytestmark = pytest.mark.deadline(20)

QUIET = 0.3


def numbered(n: int) -> list[bytes]:
    return [b"m%03d" % i for i in range(n)]


def seen(inbox) -> list[tuple[bytes, bool]]:
    return [(d.body, d.redelivered) for d in inbox]


@pytest.fixture
def queue(names, connect):
    q = names.queue()
    connect().channel().queue_declare(q)
    return q


def kill_socket(conn) -> None:
    """Resets the connection's TCP socket under pika (SO_LINGER 0, then close): to the broker
    the client vanished without channel.close or connection.close."""
    sock = conn._impl._transport._sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    conn._warren_test_broken = True  # the `connect` fixture leaves it alone


@pytest.mark.parametrize("close", ["channel", "connection"])
def test_closing_with_unacked_requeues_them_in_order_for_another_consumer(
    connect, queue, fill, inbox, pump, close
):
    conn_a = connect()
    ch_a = conn_a.channel()
    a = inbox()
    ch_a.basic_consume(queue, a)
    fill(conn_a, queue, numbered(4))
    assert pump(conn_a, until=lambda: len(a) == 4, timeout=5)
    conn_b = connect()
    b = inbox()
    conn_b.channel().basic_consume(queue, b)
    pump(conn_b, timeout=QUIET)
    assert b == []  # A holds everything
    ch_a.basic_ack(a[1].tag)
    if close == "channel":
        ch_a.close()
    else:
        conn_a.close()
    assert pump(conn_b, until=lambda: len(b) == 3, timeout=5)
    assert seen(b) == [(b"m000", True), (b"m002", True), (b"m003", True)]
    fill(conn_b, queue, [b"fresh"])
    assert pump(conn_b, until=lambda: len(b) == 4, timeout=5)
    pump(conn_b, timeout=QUIET)
    assert seen(b)[3:] == [(b"fresh", False)]


def test_closing_a_channel_requeues_basic_get_deliveries(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(3))
    ch.basic_get(queue)
    ch.basic_get(queue, auto_ack=True)  # taken for good
    ch.close()
    got = drain(conn.channel(), queue)
    assert [(d.body, d.redelivered) for d in got] == [(b"m000", True), (b"m002", False)]


def test_requeued_messages_go_back_to_the_head_of_the_queue(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(5))
    for _ in range(3):
        ch.basic_get(queue)
    ch.close()
    got = drain(conn.channel(), queue)
    assert [(d.body, d.redelivered) for d in got] == [
        (b"m000", True),
        (b"m001", True),
        (b"m002", True),
        (b"m003", False),
        (b"m004", False),
    ]


def test_killed_consumer_gets_each_unacked_message_redelivered_exactly_once(
    connect, queue, fill, inbox, pump
):
    count = 20
    conn_a = connect()
    ch_a = conn_a.channel()
    ch_a.basic_qos(prefetch_count=5)
    a = inbox()
    ch_a.basic_consume(queue, a)
    fill(conn_a, queue, numbered(count))
    assert pump(conn_a, until=lambda: len(a) == 5, timeout=5)
    assert [d.body for d in a] == numbered(5)
    ch_a.basic_ack(a[0].tag)
    ch_a.basic_ack(a[1].tag)
    # A synchronous round trip on the same channel: the broker has taken the acks when it
    # answers.
    ch_a.queue_declare(queue, passive=True)
    acked = {a[0].body, a[1].body}
    seen_by_a = {d.body for d in a}
    kill_socket(conn_a)

    conn_b = connect()
    ch_b = conn_b.channel()
    b = inbox()
    ch_b.basic_consume(queue, b, auto_ack=True)
    expected = [m for m in numbered(count) if m not in acked]
    assert pump(conn_b, until=lambda: len(b) >= len(expected), timeout=5), seen(b)
    pump(conn_b, timeout=QUIET)
    assert sorted(b.bodies()) == expected, "each message not acked by A exactly once"
    redelivered = [d.body for d in b if d.redelivered]
    # Everything A saw and did not ack comes back marked; what A was sent but pika had not read
    # yet may be marked too (the broker counts it as delivered); nothing A can never have been
    # sent (beyond its prefetch window of 5 after 2 acks) is marked.
    assert seen_by_a - acked <= set(redelivered), seen(b)
    assert set(redelivered) <= set(numbered(7)) - acked, seen(b)
    assert redelivered == sorted(redelivered), "requeued out of order"
    assert ch_b.queue_declare(queue, passive=True).method.message_count == 0


@pytest.mark.warren_only
def test_unacked_timeout_takes_the_delivery_back_and_ignores_the_late_ack(
    connect, names, fill, inbox, pump
):
    # Warren's default reaction to a delivery left unacked past `x-consumer-timeout` (ms):
    # redeliver it elsewhere and forget the old delivery tag. RabbitMQ 3.10 has no such queue
    # argument (only the broker-wide consumer_timeout) and closes the channel with 406 instead.
    conn_a = connect()
    ch_a = conn_a.channel()
    ch_a.basic_qos(prefetch_count=1)
    q = names.queue()
    ch_a.queue_declare(q, arguments={"x-consumer-timeout": 500})
    a = inbox()
    ch_a.basic_consume(q, a)
    fill(conn_a, q, [b"slow"])
    assert pump(conn_a, until=lambda: a, timeout=5)
    delivered_at = time.monotonic()

    conn_b = connect()
    ch_b = conn_b.channel()
    ch_b.basic_qos(prefetch_count=1)
    b = inbox()
    ch_b.basic_consume(q, b)
    assert pump([conn_a, conn_b], until=lambda: b, timeout=3), "not redelivered after 0.5 s"
    waited = time.monotonic() - delivered_at
    assert 0.3 <= waited < 2.0, f"redelivered after {waited:.2f} s with a 0.5 s timeout"
    assert seen(b) == [(b"slow", True)]
    assert seen(a) == [(b"slow", False)], "A got it again"
    ch_b.basic_ack(b[0].tag)

    # A's late ack of the delivery taken back is ignored: no 406, the channel stays open.
    ch_a.basic_ack(a[0].tag)
    ok = ch_a.queue_declare(q, passive=True).method
    assert ch_a.is_open
    assert (ok.message_count, ok.consumer_count) == (0, 2)

    # And A's prefetch credit came back with it: with B gone, the next message goes to A.
    conn_b.close()
    fill(conn_a, q, [b"next"])
    assert pump(conn_a, until=lambda: len(a) == 2, timeout=5)
    assert (a[1].body, a[1].redelivered, a[1].tag) == (b"next", False, 2)
    ch_a.basic_ack(a[1].tag)
    ok = ch_a.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 1)

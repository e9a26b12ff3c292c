"""Retry with backoff with pika (issue 20): a queue declared with `x-retry-delays` (ms) holds a
message rejected or nacked with requeue=False for the next delay, then puts it back at the end of
the same queue with header `x-retry-count`; after the last delay the next reject dead-letters it
(reason `rejected`). Warren's own argument: RabbitMQ ignores it (and dead-letters at once)."""

import time

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.warren_only


def test_rejected_message_is_retried_after_each_delay_then_dead_lettered(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    dlx = names.exchange("retry-dlx")
    ch.exchange_declare(dlx, "fanout")
    dead = names.queue()
    ch.queue_declare(dead)
    ch.queue_bind(dead, dlx)
    q = names.queue()
    ch.queue_declare(q, arguments={"x-retry-delays": [300, 600], "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"task", properties=pika.BasicProperties(message_id="m1"))
    got = inbox()
    ch.basic_consume(q, got)
    stamps = []
    for attempt in range(3):
        assert pump(conn, until=lambda: len(got) > attempt, timeout=5), f"attempt {attempt}"
        stamps.append(time.monotonic())
        ch.basic_reject(got[attempt].tag, requeue=False)
    assert [d.body for d in got] == [b"task"] * 3
    assert [(d.properties.headers or {}).get("x-retry-count") for d in got] == [None, 1, 2]
    assert got[1].properties.message_id == "m1", "properties are kept"
    assert stamps[1] - stamps[0] >= 0.3 and stamps[2] - stamps[1] >= 0.6, stamps
    pump(conn, timeout=0.3)
    method, properties, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"task"
    assert properties.headers["x-retry-count"] == 2
    assert properties.headers["x-death"][0]["reason"] == "rejected"
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_invalid_retry_delays_close_the_channel_with_406(connect, names):
    conn = connect()
    for value in (1000, [], [100, -1], ["1s"]):
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            ch.queue_declare(names.queue(), arguments={"x-retry-delays": value})
        assert closed.value.reply_code == 406
        assert "x-retry-delays" in closed.value.reply_text


def test_a_delivery_left_unacked_past_its_timeout_is_retried(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-retry-delays": [300], "x-consumer-timeout": 200})
    ch.basic_publish("", q, b"slow")
    got = inbox()
    ch.basic_consume(q, got)
    started = time.monotonic()
    # Never acked: it times out (200 ms), is held (300 ms) and comes back counted.
    assert pump(conn, until=lambda: len(got) == 2, timeout=5)
    assert time.monotonic() - started >= 0.5
    assert [d.body for d in got] == [b"slow", b"slow"]
    assert [(d.properties.headers or {}).get("x-retry-count") for d in got] == [None, 1]
    # The late ack of the timed-out delivery is harmless; the retry is acked normally.
    ch.basic_ack(got[0].tag)
    ch.basic_ack(got[1].tag)
    pump(conn, timeout=0.4)
    assert ch.is_open
    assert ch.queue_declare(q, passive=True).method.message_count == 0

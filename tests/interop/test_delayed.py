"""Delayed messages with pika, written as for RabbitMQ's delayed-message plugin: an exchange of
type `x-delayed-message` with `x-delayed-type`, messages with an `x-delay` header (ms). A held
message is routed by the delayed type when its delay has passed, in due order; `mandatory` is
honoured when it fires; persistent messages to a durable exchange survive a restart."""

import pathlib
import time

import pika
import pika.exceptions
import pytest

from conftest import _spawn


def delayed_exchange(ch, names, kind: str = "direct", durable: bool = False) -> str:
    x = names.exchange("delayed")
    ch.exchange_declare(x, "x-delayed-message", durable=durable, arguments={"x-delayed-type": kind})
    return x


def bound_queue(ch, names, exchange: str, key: str = "k") -> str:
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, exchange, routing_key=key)
    return q


def delay(ms, **kwargs) -> pika.BasicProperties:
    return pika.BasicProperties(headers={"x-delay": ms}, **kwargs)


def test_a_message_is_held_for_its_delay_then_routed(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    x = delayed_exchange(ch, names)
    q = bound_queue(ch, names, x)
    got = inbox()
    ch.basic_consume(q, got, auto_ack=True)
    sent = time.monotonic()
    ch.basic_publish(x, "k", b"in half a second", properties=delay(500))
    assert not pump(conn, until=lambda: got, timeout=0.3), "delivered before its delay"
    assert pump(conn, until=lambda: got, timeout=5)
    waited = time.monotonic() - sent
    assert 0.5 <= waited < 2.0, waited
    assert got.bodies() == [b"in half a second"]
    assert got[0].method.exchange == x
    assert got[0].properties.headers["x-delay"] == -500


def test_due_order_and_no_delay_means_now(connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    x = delayed_exchange(ch, names, "fanout")
    q = bound_queue(ch, names, x, "")
    for ms in (700, 100, 400, 250):
        ch.basic_publish(x, "any", f"d{ms}".encode(), properties=delay(ms))
    ch.basic_publish(x, "any", b"plain")
    ch.basic_publish(x, "any", b"zero", properties=delay(0))
    ch.basic_publish(x, "any", b"negative", properties=delay(-10))
    got = inbox()
    ch.basic_consume(q, got, auto_ack=True)
    assert pump(conn, until=lambda: len(got) == 7, timeout=5)
    assert got.bodies() == [b"plain", b"zero", b"negative", b"d100", b"d250", b"d400", b"d700"]


def test_topic_routing_after_the_delay(connect, names, drain, pump):
    conn = connect()
    ch = conn.channel()
    x = delayed_exchange(ch, names, "topic")
    q = bound_queue(ch, names, x, "orders.*")
    ch.basic_publish(x, "orders.eu", b"routed", properties=delay(100))
    ch.basic_publish(x, "payments.eu", b"not routed", properties=delay(100))
    pump(conn, timeout=0.5)
    assert [d.body for d in drain(ch, q)] == [b"routed"]


def test_a_missing_delayed_type_is_406_and_an_unknown_one_503(connect, names):
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.exchange_declare(names.exchange("untyped"), "x-delayed-message")
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
    )
    ch = conn.channel()
    x = delayed_exchange(ch, names, "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "topic"})
    assert info.value.reply_code == 406
    assert "inequivalent arg 'x-delayed-type'" in info.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        ch.exchange_declare(names.exchange("bad"), "x-delayed-message",
                            arguments={"x-delayed-type": "nonsense"})
    assert info.value.reply_code == 503
    assert info.value.reply_text == "COMMAND_INVALID - unknown exchange type 'nonsense'"


def test_mandatory_is_returned_when_the_delay_fires(connect, names, pump):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    x = delayed_exchange(ch, names)
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    # Held and confirmed at once: no UnroutableError, though nothing is bound to "nowhere".
    ch.basic_publish(x, "nowhere", b"comes back", properties=delay(300), mandatory=True)
    assert returned == []
    assert pump(conn, until=lambda: returned, timeout=5)
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, method.routing_key) == (312, "NO_ROUTE", "nowhere")
    assert body == b"comes back"


@pytest.mark.warren_only
def test_mandatory_of_a_closed_channel_is_dropped_and_logged(warren, connect, names, pump):
    conn = connect()
    ch = conn.channel()
    x = delayed_exchange(ch, names)
    ch.basic_publish(x, "nowhere", b"gone", properties=delay(200), mandatory=True)
    ch.close()
    pump(conn, timeout=0.6)
    assert "a mandatory delayed message is unroutable and its channel is closed; dropped" in warren.log()
    assert conn.is_open


@pytest.mark.warren_only
def test_held_persistent_messages_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    broker = _spawn(data, tmp_path / "first.log")
    try:
        conn = broker.connect()
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare("later", "x-delayed-message", durable=True,
                            arguments={"x-delayed-type": "direct"})
        ch.queue_declare("later-q", durable=True)
        ch.queue_bind("later-q", "later", routing_key="k")
        for i in range(100):
            ch.basic_publish("later", "k", str(i).encode(),
                             properties=delay(3000 + i, delivery_mode=2))
        conn.close()
    finally:
        broker.assert_graceful_exit()
    broker = _spawn(data, tmp_path / "second.log")
    try:
        conn = broker.connect()
        ch = conn.channel()
        assert ch.queue_declare("later-q", passive=True).method.message_count == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ch.queue_declare("later-q", passive=True).method.message_count == 100:
                break
            time.sleep(0.1)
        bodies = []
        while True:
            method, _props, body = ch.basic_get("later-q", auto_ack=True)
            if method is None:
                break
            bodies.append(int(body))
        assert bodies == list(range(100))
        conn.close()
    finally:
        broker.assert_graceful_exit()

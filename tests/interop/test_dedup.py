"""De-duplication (issue 20) with pika: a queue or exchange declared with
`x-message-deduplication` = true and `x-cache-size` (optionally `x-cache-ttl`, ms) drops a message
whose `x-deduplication-header` header (else `message_id`) is in its window, and still confirms it
(basic.ack, never basic.return, even if mandatory), so a publisher's resend is safe. A durable
window survives a restart and kill -9 after the confirm. Invalid arguments are a 406.

These are the RabbitMQ plugin's (noxdafox/rabbitmq-message-deduplication) and LavinMQ's names;
RabbitMQ 3.10.8 without the plugin does not de-duplicate, so the module is `warren_only`."""

import signal
import time

import pika
import pika.exceptions
import pytest

from conftest import _spawn

pytestmark = [pytest.mark.warren_only, pytest.mark.deadline(40)]

ChannelClosed = pika.exceptions.ChannelClosedByBroker


def dedup(size=100, ttl=None, **extra):
    arguments = {"x-message-deduplication": True, "x-cache-size": size, **extra}
    if ttl is not None:
        arguments["x-cache-ttl"] = ttl
    return arguments


def keyed(key, ttl=None):
    headers = {"x-deduplication-header": key}
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    return pika.BasicProperties(headers=headers, delivery_mode=2)


def with_id(message_id):
    return pika.BasicProperties(message_id=message_id, delivery_mode=2)


def confirm_channel(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def publish_confirmed(ch, exchange, routing_key, messages):
    """Publishes (mandatory) with confirms; pika raises on a nack or a return."""
    for body, properties in messages:
        ch.basic_publish(exchange, routing_key, body, properties, mandatory=True)


MIXED = [
    (b"0", keyed("a")),
    (b"1", keyed("a")),  # duplicate
    (b"2", with_id("m")),
    (b"3", with_id("m")),  # duplicate
    (b"4", keyed("b")),
    (b"5", pika.BasicProperties()),  # no key: never a duplicate
    (b"6", pika.BasicProperties()),
    (b"7", keyed("c")),
]
PASSED = [b"0", b"2", b"4", b"5", b"6", b"7"]


def test_exchange_drops_duplicates_and_confirms_them(connect, names, drain):
    conn = connect()
    ch = confirm_channel(conn)
    x = names.exchange()
    q = names.queue()
    ch.exchange_declare(x, "direct", arguments=dedup())
    ch.queue_declare(q)
    ch.queue_bind(q, x, "rk")
    publish_confirmed(ch, x, "rk", MIXED)
    assert [d.body for d in drain(ch, q)] == PASSED
    # A duplicate is confirmed, not returned, even mandatory and unroutable.
    publish_confirmed(ch, x, "nowhere", [(b"again", keyed("a"))])


def test_queue_drops_duplicates_at_enqueue(connect, names, drain):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q, arguments=dedup())
    publish_confirmed(ch, "", q, MIXED)
    assert [d.body for d in drain(ch, q)] == PASSED


def test_cache_size_evicts_the_oldest_and_ttl_expires(connect, names, drain):
    conn = connect()
    ch = confirm_channel(conn)
    small = names.queue("small")
    ch.queue_declare(small, arguments=dedup(size=2))
    keys = ["a", "b", "c", "a"]
    publish_confirmed(ch, "", small, [(k.encode(), keyed(k)) for k in keys])
    assert [d.body for d in drain(ch, small)] == [b"a", b"b", b"c", b"a"]

    timed = names.queue("timed")
    ch.queue_declare(timed, arguments=dedup(ttl=200))
    publish_confirmed(ch, "", timed, [(b"1", keyed("k")), (b"2", keyed("k")), (b"3", keyed("long", ttl=60000))])
    time.sleep(0.4)
    publish_confirmed(ch, "", timed, [(b"4", keyed("k")), (b"5", keyed("long"))])
    assert [d.body for d in drain(ch, timed)] == [b"1", b"3", b"4"]


@pytest.mark.parametrize(
    "arguments, arg",
    [
        ({"x-message-deduplication": True}, "x-cache-size"),
        (dedup(size=0), "x-cache-size"),
        (dedup(size="ten"), "x-cache-size"),
        (dedup(ttl=-1), "x-cache-ttl"),
    ],
)
def test_invalid_arguments_are_406(connect, names, arguments, arg):
    conn = connect()
    q = names.queue()
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, arguments=arguments)
    assert info.value.reply_code == 406
    assert f"invalid arg '{arg}' for queue '{q}'" in info.value.reply_text
    x = names.exchange()
    with pytest.raises(ChannelClosed) as info:
        conn.channel().exchange_declare(x, "fanout", arguments=arguments)
    assert info.value.reply_code == 406
    assert f"invalid arg '{arg}' for exchange '{x}'" in info.value.reply_text


def test_inequivalent_redeclare_is_406(connect, names):
    conn = connect()
    q = names.queue()
    conn.channel().queue_declare(q, arguments=dedup(size=10))
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_declare(q, arguments=dedup(size=20))
    assert info.value.reply_code == 406
    assert "inequivalent arg 'x-cache-size'" in info.value.reply_text


def test_durable_window_survives_restart_and_kill_9(tmp_path):
    data_dir = tmp_path / "data"

    def start(n):
        broker = _spawn(data_dir, tmp_path / f"warren-{n}.log")
        assert broker.process.poll() is None, broker.log()
        return broker

    def setup(broker):
        conn = broker.connect()
        ch = confirm_channel(conn)
        ch.exchange_declare("dx", "fanout", durable=True, arguments=dedup())
        ch.queue_declare("plain", durable=True)
        ch.queue_bind("plain", "dx")
        ch.queue_declare("dq", durable=True, arguments=dedup())
        return conn, ch

    def publish(ch, keys):
        publish_confirmed(ch, "dx", "", [(k.encode(), keyed(k)) for k in keys])
        publish_confirmed(ch, "", "dq", [(k.encode(), with_id(k)) for k in keys])

    def counts(ch):
        return (
            ch.queue_declare("plain", passive=True).method.message_count,
            ch.queue_declare("dq", passive=True).method.message_count,
        )

    broker = start(0)
    conn, ch = setup(broker)
    publish(ch, ["a", "b", "a"])
    assert counts(ch) == (2, 2)
    conn.close()
    broker.assert_graceful_exit()

    broker = start(1)
    conn, ch = setup(broker)
    publish(ch, ["a", "b", "c"])
    assert counts(ch) == (3, 3)
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait()

    broker = start(2)
    conn, ch = setup(broker)
    publish(ch, ["a", "c", "d"])
    assert counts(ch) == (4, 4)
    conn.close()
    broker.assert_graceful_exit()

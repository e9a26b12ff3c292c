"""Consuming and acknowledging with pika: FIFO order, round-robin, prefetch (per consumer and
global), ack / nack / reject with and without requeue, delivery-tag errors, basic.get, auto-ack and
exclusive consumers, basic.cancel, basic.recover, and bodies larger than a frame. Expected codes
and texts are RabbitMQ 3.10's."""

import hashlib
import os

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.deadline(20)

ChannelClosed = pika.exceptions.ChannelClosedByBroker

# How long to wait to show that nothing more arrives.
QUIET = 0.3


def closed_with(info, code: int, text: str) -> None:
    exc = info.value
    assert (exc.reply_code, exc.reply_text) == (code, text), repr(exc)


def numbered(n: int, start: int = 0) -> list[bytes]:
    return [b"m%03d" % i for i in range(start, start + n)]


@pytest.fixture
def queue(names, connect):
    """A declared queue's name."""
    q = names.queue()
    connect().channel().queue_declare(q)
    return q


def test_fifo_order_for_consumers_and_get(connect, queue, fill, inbox, pump):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(100))
    first = [ch.basic_get(queue, auto_ack=True)[2] for _ in range(10)]
    assert first == numbered(10)
    got = inbox()
    ch.basic_consume(queue, got, auto_ack=True)
    assert pump(conn, until=lambda: len(got) == 90, timeout=5), len(got)
    assert got.bodies() == numbered(90, start=10)
    assert [d.tag for d in got] == list(range(11, 101))  # delivery tags count on per channel
    assert not any(d.redelivered for d in got)


def test_round_robin_over_two_consumers(connect, queue, fill, inbox, pump):
    conn = connect()
    a, b = inbox(), inbox()
    conn.channel().basic_consume(queue, a, auto_ack=True)
    conn.channel().basic_consume(queue, b, auto_ack=True)
    fill(connect(), queue, numbered(10))
    assert pump(conn, until=lambda: len(a) + len(b) == 10, timeout=5)
    assert len(a) == len(b) == 5, (a.bodies(), b.bodies())
    indexes = {tuple(int(body[1:]) for body in inbox_.bodies()) for inbox_ in (a, b)}
    assert indexes == {(0, 2, 4, 6, 8), (1, 3, 5, 7, 9)}


def test_prefetch_count_limits_unacked_deliveries(connect, queue, fill, inbox, pump, queue_state):
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3)
    fill(conn, queue, numbered(10))
    got = inbox()
    ch.basic_consume(queue, got)
    assert pump(conn, until=lambda: len(got) == 3, timeout=5)
    pump(conn, timeout=QUIET)
    assert got.bodies() == numbered(3)
    ch.basic_ack(got[0].tag)
    assert pump(conn, until=lambda: len(got) == 4, timeout=5)
    pump(conn, timeout=QUIET)
    assert len(got) == 4
    ch.basic_ack(got[3].tag, multiple=True)  # frees the other three
    assert pump(conn, until=lambda: len(got) == 7, timeout=5)
    pump(conn, timeout=QUIET)
    assert got.bodies() == numbered(7)
    assert queue_state(conn, queue) == (3, 1)


def test_prefetch_is_per_consumer_unless_global(connect, queue, fill, inbox, pump):
    # RabbitMQ's reading of basic.qos: global=false limits each consumer started afterwards on the
    # channel, global=true limits the channel as a whole.
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    a, b = inbox(), inbox()
    ch.basic_consume(queue, a)
    ch.basic_consume(queue, b)
    fill(conn, queue, numbered(10))
    assert pump(conn, until=lambda: len(a) + len(b) == 4, timeout=5)
    pump(conn, timeout=QUIET)
    assert (len(a), len(b)) == (2, 2)


def test_global_prefetch_limits_the_channel_across_consumers(connect, queue, fill, inbox, pump):
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)
    a, b = inbox(), inbox()
    ch.basic_consume(queue, a)
    ch.basic_consume(queue, b)
    fill(conn, queue, numbered(10))
    assert pump(conn, until=lambda: len(a) + len(b) == 3, timeout=5)
    pump(conn, timeout=QUIET)
    assert len(a) + len(b) == 3, (a, b)
    delivered = sorted(a.bodies() + b.bodies())
    assert delivered == numbered(3)
    one = (a or b)[0]
    ch.basic_ack(one.tag)
    assert pump(conn, until=lambda: len(a) + len(b) == 4, timeout=5)
    pump(conn, timeout=QUIET)
    assert len(a) + len(b) == 4


@pytest.mark.warren_only  # RabbitMQ keeps a running consumer's prefetch (new consumers only)
def test_basic_qos_per_consumer_applies_to_running_and_later_consumers(
    connect, queue, fill, inbox, pump
):
    # Warren's reading of a later basic.qos(global=false): the spec's "per channel", so it also
    # reaches the consumers already running on the channel. kombu/Celery rely on it against
    # any broker but RabbitMQ (a worker raises the prefetch this way for each ETA task it holds);
    # RabbitMQ applies it to consumers started afterwards only.
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    first = inbox()
    ch.basic_consume(queue, first)
    fill(conn, queue, numbered(10))
    assert pump(conn, until=lambda: first, timeout=5)
    pump(conn, timeout=QUIET)
    assert len(first) == 1
    ch.basic_qos(prefetch_count=3)
    assert pump(conn, until=lambda: len(first) == 3, timeout=5)
    second = inbox()
    ch.basic_consume(queue, second)
    assert pump(conn, until=lambda: len(second) == 3, timeout=5)
    pump(conn, timeout=QUIET)
    assert (len(first), len(second)) == (3, 3)
    ch.basic_ack(first[0].tag)
    assert pump(conn, until=lambda: len(first) == 4, timeout=5)
    pump(conn, timeout=QUIET)
    assert (len(first), len(second)) == (4, 3)


def test_ack_multiple_acks_up_to_the_tag(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(5))
    tags = [ch.basic_get(queue)[0].delivery_tag for _ in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    ch.basic_ack(3, multiple=True)
    ch.close()  # the unacked rest goes back
    back = drain(conn.channel(), queue)
    assert [(d.body, d.redelivered) for d in back] == [(b"m003", True), (b"m004", True)]


def test_ack_multiple_with_tag_zero_acks_everything(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(4))
    for _ in range(4):
        ch.basic_get(queue)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert drain(conn.channel(), queue) == []


def test_nack_and_reject_with_requeue_keep_the_original_order(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(6))
    got = [ch.basic_get(queue)[0] for _ in range(4)]  # m000..m003, unacked
    ch.basic_reject(got[2].delivery_tag, requeue=True)  # m002
    ch.basic_nack(got[1].delivery_tag, multiple=True, requeue=True)  # m000, m001
    ch.basic_ack(got[3].delivery_tag)
    again = drain(ch, queue)
    assert [(d.body, d.redelivered) for d in again] == [
        (b"m000", True),
        (b"m001", True),
        (b"m002", True),
        (b"m004", False),
        (b"m005", False),
    ]
    assert [d.tag for d in again] == [5, 6, 7, 8, 9]


def test_nack_and_reject_without_requeue_drop_the_message(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(4))
    got = [ch.basic_get(queue)[0] for _ in range(4)]
    ch.basic_reject(got[0].delivery_tag, requeue=False)
    ch.basic_nack(got[2].delivery_tag, multiple=True, requeue=False)  # m001, m002
    ch.basic_nack(got[3].delivery_tag, requeue=True)
    assert [(d.body, d.redelivered) for d in drain(ch, queue)] == [(b"m003", True)]
    ch.close()
    assert drain(conn.channel(), queue) == []


@pytest.mark.parametrize(
    "settle",
    [
        lambda ch: ch.basic_ack(99),
        lambda ch: ch.basic_ack(99, multiple=True),
        lambda ch: ch.basic_nack(99),
        lambda ch: ch.basic_reject(99),
    ],
    ids=["ack", "ack-multiple", "nack", "reject"],
)
def test_unknown_delivery_tag_closes_the_channel_with_406(connect, queue, fill, settle):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, [b"x"])
    ch.basic_get(queue)  # tag 1 exists; 99 does not
    settle(ch)
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(queue, passive=True)
    closed_with(info, 406, "PRECONDITION_FAILED - unknown delivery tag 99")
    assert conn.is_open


def test_acking_twice_is_406(connect, queue, fill):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, [b"x"])
    tag = ch.basic_get(queue)[0].delivery_tag
    ch.basic_ack(tag)
    ch.basic_ack(tag)
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(queue, passive=True)
    closed_with(info, 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")


def test_acking_an_auto_acked_delivery_is_406(connect, queue, fill):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, [b"x"])
    tag = ch.basic_get(queue, auto_ack=True)[0].delivery_tag
    assert tag == 1
    ch.basic_ack(tag)
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(queue, passive=True)
    closed_with(info, 406, "PRECONDITION_FAILED - unknown delivery tag 1")


def test_delivery_tags_start_again_on_a_reopened_channel(connect, queue, fill):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(3))
    assert [ch.basic_get(queue, auto_ack=True)[0].delivery_tag for _ in range(2)] == [1, 2]
    number = ch.channel_number
    ch.close()
    again = conn.channel(channel_number=number)
    assert again.basic_get(queue, auto_ack=True)[0].delivery_tag == 1


def test_delivery_tags_belong_to_their_channel(connect, queue, fill):
    conn = connect()
    ch1 = conn.channel()
    ch2 = conn.channel()
    fill(conn, queue, [b"x"])
    tag = ch1.basic_get(queue)[0].delivery_tag
    ch2.basic_ack(tag)
    with pytest.raises(ChannelClosed) as info:
        ch2.queue_declare(queue, passive=True)
    closed_with(info, 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
    ch1.basic_ack(tag)
    assert ch1.queue_declare(queue, passive=True).method.message_count == 0


def test_basic_get_counts_and_get_empty(connect, queue, fill):
    conn = connect()
    ch = conn.channel()
    assert ch.basic_get(queue) == (None, None, None)  # get-empty
    fill(conn, queue, numbered(3))
    counts = []
    for expected in numbered(3):
        method, props, body = ch.basic_get(queue, auto_ack=True)
        assert isinstance(method, pika.spec.Basic.GetOk)
        assert body == expected
        assert (method.exchange, method.routing_key, method.redelivered) == ("", queue, False)
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert ch.basic_get(queue) == (None, None, None)


def test_get_from_missing_queue_is_404(channel, names):
    q = names.queue("missing")
    with pytest.raises(ChannelClosed) as info:
        channel.basic_get(q)
    closed_with(info, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_consume_from_missing_queue_is_404(channel, names):
    q = names.queue("missing")
    with pytest.raises(ChannelClosed) as info:
        channel.basic_consume(q, lambda *a: None)
    closed_with(info, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_auto_ack_consumer_needs_no_acks_and_ignores_prefetch(connect, queue, fill, inbox, pump, drain):
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    got = inbox()
    ch.basic_consume(queue, got, auto_ack=True)
    fill(conn, queue, numbered(5))
    assert pump(conn, until=lambda: len(got) == 5, timeout=5)
    ch.close()  # nothing to requeue
    assert drain(conn.channel(), queue) == []


def test_exclusive_consumer_locks_out_others(connect, queue, inbox, pump, fill):
    conn = connect()
    ch = conn.channel()
    got = inbox()
    tag = ch.basic_consume(queue, got, exclusive=True, auto_ack=True)
    other = connect()
    with pytest.raises(ChannelClosed) as info:
        other.channel().basic_consume(queue, lambda *a: None)
    closed_with(info, 403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use")
    # basic.get is not a consumer and is not locked out.
    fill(conn, queue, [b"x"])
    assert pump(conn, until=lambda: got, timeout=5)
    # Once it is cancelled, others may consume.
    ch.basic_cancel(tag)
    other.channel().basic_consume(queue, lambda *a: None)


def test_exclusive_consume_is_refused_while_others_consume(connect, queue):
    conn = connect()
    conn.channel().basic_consume(queue, lambda *a: None)
    with pytest.raises(ChannelClosed) as info:
        connect().channel().basic_consume(queue, lambda *a: None, exclusive=True)
    closed_with(info, 403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use")


def test_reused_consumer_tag_is_530(connect, queue):
    conn = connect()
    ch = conn.channel()
    ch.basic_consume(queue, lambda *a: None, consumer_tag="dup")
    # pika refuses a duplicate tag itself; send the consume directly.
    ch._impl._send_method(pika.spec.Basic.Consume(queue=queue, consumer_tag="dup"))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.process_data_events(time_limit=5)
        conn.channel()
    assert (info.value.reply_code, info.value.reply_text) == (
        530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    ), repr(info.value)


def test_server_generated_consumer_tag(connect, queue, pump):
    conn = connect()
    ch = conn.channel()
    received = []
    # pika always makes up a tag itself; send a consume with an empty one directly.
    ch._impl.add_callback(lambda frame: received.append(frame.method), [pika.spec.Basic.ConsumeOk])
    ch._impl._send_method(pika.spec.Basic.Consume(queue=queue, consumer_tag=""))
    assert pump(conn, until=lambda: received, timeout=5)
    assert received[0].consumer_tag.startswith("amq.ctag-"), received


def test_basic_cancel_stops_deliveries(connect, queue, fill, inbox, pump, queue_state):
    conn = connect()
    ch = conn.channel()
    got = inbox()
    tag = ch.basic_consume(queue, got, auto_ack=True)
    fill(conn, queue, [b"1"])
    assert pump(conn, until=lambda: got, timeout=5)
    ch.basic_cancel(tag)
    assert ch.consumer_tags == []
    fill(conn, queue, [b"2", b"3"])
    pump(conn, timeout=QUIET)
    assert got.bodies() == [b"1"]
    assert queue_state(conn, queue) == (2, 0)
    # Cancelling an unknown tag is not an error: cancel-ok.
    ch._impl._send_method(pika.spec.Basic.Cancel(consumer_tag="no-such-consumer"))
    assert ch.queue_declare(queue, passive=True).method.message_count == 2
    assert ch.is_open


def test_cancel_keeps_unacked_deliveries_on_the_channel(connect, queue, fill, inbox, pump, drain):
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    got = inbox()
    tag = ch.basic_consume(queue, got)
    fill(conn, queue, numbered(3))
    assert pump(conn, until=lambda: len(got) == 2, timeout=5)
    ch.basic_cancel(tag)
    # They can still be acked after the cancel.
    ch.basic_ack(got[0].tag)
    ch.basic_reject(got[1].tag, requeue=True)
    assert [(d.body, d.redelivered) for d in drain(ch, queue)] == [
        (b"m001", True),
        (b"m002", False),
    ]


def test_basic_recover_requeue_redelivers_unacked(connect, queue, fill, drain):
    conn = connect()
    ch = conn.channel()
    fill(conn, queue, numbered(4))
    tags = [ch.basic_get(queue)[0].delivery_tag for _ in range(3)]
    ch.basic_ack(tags[1])
    ch.basic_recover(requeue=True)
    again = drain(ch, queue)
    assert [(d.body, d.redelivered) for d in again] == [
        (b"m000", True),
        (b"m002", True),
        (b"m003", False),
    ]
    # The old tags are gone.
    ch.basic_ack(tags[0])
    with pytest.raises(ChannelClosed) as info:
        ch.basic_qos(prefetch_count=0)
    closed_with(info, 406, f"PRECONDITION_FAILED - unknown delivery tag {tags[0]}")


def test_basic_recover_to_a_consumer(connect, queue, fill, inbox, pump):
    conn = connect()
    ch = conn.channel()
    got = inbox()
    ch.basic_consume(queue, got)
    fill(conn, queue, numbered(2))
    assert pump(conn, until=lambda: len(got) == 2, timeout=5)
    ch.basic_recover(requeue=True)
    assert pump(conn, until=lambda: len(got) == 4, timeout=5)
    assert [(d.body, d.redelivered) for d in got] == [
        (b"m000", False),
        (b"m001", False),
        (b"m000", True),
        (b"m001", True),
    ]
    assert [d.tag for d in got] == [1, 2, 3, 4]


def test_basic_recover_without_requeue_is_not_implemented(connect):
    conn = connect()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.channel().basic_recover(requeue=False)
    assert (info.value.reply_code, info.value.reply_text) == (
        540, "NOT_IMPLEMENTED - requeue=false"
    ), repr(info.value)


def test_prefetch_size_is_not_implemented(connect):
    conn = connect()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.channel().basic_qos(prefetch_size=1000)
    assert (info.value.reply_code, info.value.reply_text) == (
        540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)"
    ), repr(info.value)


@pytest.mark.parametrize("size", [131_072 - 8, 1 << 20, 3 << 20])
def test_large_bodies_arrive_intact(connect, queue, inbox, pump, size):
    conn = connect()
    assert conn._impl.params.frame_max <= 131_072  # so these bodies span many frames
    ch = conn.channel()
    ch.confirm_delivery()
    body = os.urandom(size)
    ch.basic_publish("", queue, body, pika.BasicProperties(message_id="big"))
    ch.basic_publish("", queue, b"after")
    method, props, got = ch.basic_get(queue, auto_ack=True)
    assert len(got) == size and hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert props.message_id == "big" and method.message_count == 1
    ch.basic_publish("", queue, body)
    received = inbox()
    ch.basic_consume(queue, received, auto_ack=True)
    assert pump(conn, until=lambda: len(received) == 2, timeout=5)
    assert received.bodies()[0] == b"after"
    assert received.bodies()[1] == body


def test_empty_body(connect, queue, drain):
    ch = connect().channel()
    ch.basic_publish("", queue, b"", pika.BasicProperties(content_type="text/plain"))
    got = drain(ch, queue)
    assert [(d.body, d.properties.content_type) for d in got] == [(b"", "text/plain")]

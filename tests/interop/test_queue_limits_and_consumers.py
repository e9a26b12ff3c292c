"""Queue length limits, consumer priorities and single active consumer with pika, as RabbitMQ
behaves: `x-max-length` (and `x-max-length-bytes`, counting body bytes of ready messages) with
`drop-head` keeps the newest messages, also trimming the queue when requeued messages push it past
its limit, with `reject-publish` nacks a confirm-mode publisher while the queue is full and acks
again once it drains; `x-priority` consumers get messages first while they have credit; an
`x-single-active-consumer` queue feeds one consumer until it goes."""

import pika
import pika.exceptions
import pytest


def test_drop_head_keeps_the_newest(connect, names, fill, drain):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-length": 2})
    fill(conn, q, [b"1", b"2", b"3", b"4"])
    assert [d.body for d in drain(ch, q)] == [b"3", b"4"]


def test_reject_publish_nacks_while_full_then_acks_again(connect, names, drain):
    ch = connect().channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    for body in (b"3", b"4"):
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", q, body)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"1"
    ch.basic_publish("", q, b"5")  # room again: acked
    assert [d.body for d in drain(ch, q)] == [b"2", b"5"]


def test_higher_priority_consumer_first_while_it_has_credit(connect, names, inbox, pump, fill):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    high_ch = conn.channel()
    high_ch.basic_qos(prefetch_count=2)
    low, high = inbox(), inbox()
    ch.basic_consume(q, low, auto_ack=True)
    high_ch.basic_consume(q, high, arguments={"x-priority": 10})
    fill(conn, q, [str(i).encode() for i in range(6)])
    assert pump(conn, until=lambda: len(low) + len(high) == 6)
    assert high.bodies() == [b"0", b"1"]
    assert low.bodies() == [b"2", b"3", b"4", b"5"]


def test_single_active_consumer_takes_over_on_cancel(connect, names, inbox, pump, fill):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    first, second = inbox(), inbox()
    first_tag = ch.basic_consume(q, first, auto_ack=True)
    ch.basic_consume(q, second, auto_ack=True)
    fill(conn, q, [b"a", b"b", b"c"])
    assert pump(conn, until=lambda: len(first) == 3)
    ch.basic_cancel(first_tag)
    fill(conn, q, [b"d", b"e"])
    assert pump(conn, until=lambda: len(second) == 2)
    assert first.bodies() == [b"a", b"b", b"c"]
    assert second.bodies() == [b"d", b"e"]


def test_unused_queue_expires(connect, names):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-expires": 300})
    ch.basic_publish("", q, b"gone with the queue")  # publishing does not count as use
    conn.sleep(1.2)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 404


def test_drop_head_by_bytes_counts_body_bytes_and_keeps_the_newest(connect, names, fill, drain, queue_state):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    fill(conn, q, [b"aaaa", b"bbbb", b"cccc"])
    assert queue_state(conn, q)[0] == 2  # 12 bytes: the head went
    fill(conn, q, [b"dd"])  # exactly 10 bytes fit
    assert queue_state(conn, q)[0] == 3
    fill(conn, q, [b"e"])
    assert [d.body for d in drain(ch, q)] == [b"cccc", b"dd", b"e"]
    # A message larger than the limit pushes everything out, itself included.
    fill(conn, q, [b"kk", b"0123456789X"])
    assert queue_state(conn, q)[0] == 0


def test_reject_publish_by_bytes_nacks_while_full_then_acks_again(connect, names, drain):
    ch = connect().channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"aaaa")
    ch.basic_publish("", q, b"bbbb")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"ccc")  # would make 11 bytes
    ch.basic_publish("", q, b"cc")  # exactly 10
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"d")
    # An unacked message does not count: 4 bytes drained.
    method, _, body = ch.basic_get(q, auto_ack=False)
    assert body == b"aaaa"
    ch.basic_publish("", q, b"eeee")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"f")
    ch.basic_ack(method.delivery_tag)
    assert [d.body for d in drain(ch, q)] == [b"bbbb", b"cc", b"eeee"]


def test_a_requeue_past_max_length_trims_the_queue_from_the_head(connect, names, fill, drain, queue_state):
    conn = connect()
    ch = conn.channel()
    dlq, q = names.queue("dlq"), names.queue("bounded")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    fill(conn, q, [b"1", b"2"])
    first, _, _ = ch.basic_get(q, auto_ack=False)
    second, _, _ = ch.basic_get(q, auto_ack=False)
    # Only ready messages count: two more fit beside the two unacked ones.
    fill(conn, q, [b"3", b"4"])
    assert queue_state(conn, q)[0] == 2
    assert queue_state(conn, dlq)[0] == 0
    # Requeued one at a time: each goes back in front of 3 and 4 and is pushed out at once.
    ch.basic_nack(second.delivery_tag, requeue=True)
    ch.basic_nack(first.delivery_tag, requeue=True)
    dead = []
    for _ in range(100):
        dead += drain(ch, dlq)
        if len(dead) == 2:
            break
        conn.sleep(0.02)
    assert [d.body for d in dead] == [b"2", b"1"]
    assert [(x["queue"], x["reason"]) for x in dead[0].properties.headers["x-death"]] == [(q, "maxlen")]
    assert [d.body for d in drain(ch, q)] == [b"3", b"4"]

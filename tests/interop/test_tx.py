"""Transactions (tx.select / commit / rollback) with pika: publishes and acks take effect only at
commit, a rollback discards them, and tx methods on a non-transactional channel are 406.
Expected codes and texts are RabbitMQ 3.10's."""

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.deadline(20)

ChannelClosed = pika.exceptions.ChannelClosedByBroker


def closed_with(info, code: int, text: str) -> None:
    exc = info.value
    assert (exc.reply_code, exc.reply_text) == (code, text), repr(exc)


def numbered(n: int) -> list[bytes]:
    return [b"m%03d" % i for i in range(n)]


@pytest.fixture
def queue(names, connect):
    q = names.queue()
    connect().channel().queue_declare(q)
    return q


def test_publishes_are_invisible_until_commit(connect, queue, queue_state, drain):
    conn = connect()
    tx = conn.channel()
    assert isinstance(tx.tx_select().method, pika.spec.Tx.SelectOk)
    for body in numbered(3):
        tx.basic_publish("", queue, body)
    tx.queue_declare(queue, passive=True)  # a round trip: the broker has the publishes
    watcher = connect()
    assert queue_state(watcher, queue) == (0, 0)
    assert drain(watcher.channel(), queue) == []
    assert isinstance(tx.tx_commit().method, pika.spec.Tx.CommitOk)
    assert queue_state(watcher, queue) == (3, 0)
    # The channel stays transactional: the next publish waits for the next commit.
    tx.basic_publish("", queue, b"second transaction")
    tx.queue_declare(queue, passive=True)
    assert queue_state(watcher, queue) == (3, 0)
    tx.tx_commit()
    got = drain(watcher.channel(), queue)
    assert [d.body for d in got] == numbered(3) + [b"second transaction"]


def test_rollback_discards_publishes(connect, queue, queue_state, drain):
    conn = connect()
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", queue, b"rolled back")
    assert isinstance(tx.tx_rollback().method, pika.spec.Tx.RollbackOk)
    tx.basic_publish("", queue, b"kept")
    tx.tx_commit()
    assert [d.body for d in drain(connect().channel(), queue)] == [b"kept"]


def test_uncommitted_publishes_are_dropped_with_the_channel(connect, queue, drain):
    conn = connect()
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", queue, b"never committed")
    tx.close()
    assert drain(conn.channel(), queue) == []


def test_acks_take_effect_at_commit(connect, queue, fill, drain):
    conn = connect()
    fill(conn, queue, numbered(2))
    tx = conn.channel()
    tx.tx_select()
    first = tx.basic_get(queue)[0].delivery_tag
    second = tx.basic_get(queue)[0].delivery_tag
    tx.basic_ack(first)
    tx.tx_commit()
    tx.basic_ack(second)  # not committed
    tx.close()  # the uncommitted ack is dropped: m001 goes back, m000 is gone
    got = drain(conn.channel(), queue)
    assert [(d.body, d.redelivered) for d in got] == [(b"m001", True)]


def test_rollback_discards_acks_but_the_delivery_stays_unacked(connect, queue, fill, drain):
    conn = connect()
    fill(conn, queue, numbered(2))
    tx = conn.channel()
    tx.tx_select()
    tags = [tx.basic_get(queue)[0].delivery_tag for _ in range(2)]
    tx.basic_ack(tags[0])
    tx.basic_ack(tags[1])
    tx.tx_rollback()
    # Not requeued by the rollback: still held by this channel, so not in the queue.
    assert drain(connect().channel(), queue) == []
    # The tags are still valid: ack one again, for real this time.
    tx.basic_ack(tags[0])
    tx.tx_commit()
    tx.close()
    got = drain(conn.channel(), queue)
    assert [(d.body, d.redelivered) for d in got] == [(b"m001", True)]


def test_reject_with_requeue_takes_effect_at_commit(connect, queue, fill, drain):
    conn = connect()
    fill(conn, queue, [b"x"])
    tx = conn.channel()
    tx.tx_select()
    tag = tx.basic_get(queue)[0].delivery_tag
    tx.basic_reject(tag, requeue=True)
    tx.queue_declare(queue, passive=True)
    other = connect().channel()
    assert drain(other, queue) == []
    tx.tx_commit()
    got = drain(other, queue)
    assert [(d.body, d.redelivered) for d in got] == [(b"x", True)]


def test_tx_select_twice_is_fine(channel):
    channel.tx_select()
    channel.tx_select()
    channel.tx_commit()
    assert channel.is_open


@pytest.mark.parametrize("method", ["tx_commit", "tx_rollback"])
def test_commit_or_rollback_without_select_is_406(connect, method):
    conn = connect()
    ch = conn.channel()
    with pytest.raises(ChannelClosed) as info:
        getattr(ch, method)()
    closed_with(info, 406, "PRECONDITION_FAILED - channel is not transactional")
    assert conn.is_open


def test_mandatory_unroutable_in_a_transaction_is_returned(connect, queue, pump):
    conn = connect()
    tx = conn.channel()
    returned = []
    tx.add_on_return_callback(lambda _ch, method, _props, body: returned.append((method, body)))
    tx.tx_select()
    tx.basic_publish("amq.direct", "nobody-binds-this", b"back", mandatory=True)
    tx.tx_commit()
    assert pump(conn, until=lambda: returned, timeout=5)
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"back")

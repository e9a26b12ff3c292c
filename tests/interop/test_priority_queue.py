"""Priority queues (`x-max-priority`) with pika, as RabbitMQ behaves: highest priority first, FIFO
within a priority, a priority above the maximum counts as the maximum and no priority as 0; a
requeued message goes back to the front of its priority; high-priority messages overtake a
backlog that a slow consumer works through; 255 is the largest maximum."""


import pika
import pika.exceptions
import pytest

# Priorities in a mixed order, with repeats, some above the maximum of 5 and some unset.
MIXED = [3, None, 9, 0, 5, 1, 7, 2, 5, 4]


def mixed_backlog(count):
    """`count` (body, priority) pairs with the priorities of MIXED in turn, and the bodies in the
    order a queue of maximum priority 5 delivers them."""
    messages = [(f"{i}:{MIXED[i % len(MIXED)]}".encode(), MIXED[i % len(MIXED)])
                for i in range(count)]
    order = sorted(range(count), key=lambda i: (-min(messages[i][1] or 0, 5), i))
    return messages, [messages[i][0] for i in order]


def publish_all(ch, queue, messages):
    for body, priority in messages:
        ch.basic_publish("", queue, body, pika.BasicProperties(priority=priority))


def test_a_backlog_is_delivered_highest_priority_first_and_fifo_within_a_priority(
        connect, names, drain, inbox, pump, queue_state):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    messages, expected = mixed_backlog(30)
    fetched, consumed = names.queue("get"), names.queue("consume")
    for q in (fetched, consumed):
        ch.queue_declare(q, arguments={"x-max-priority": 5})
        publish_all(ch, q, messages)
    assert queue_state(conn, fetched)[0] == 30
    assert [d.body for d in drain(ch, fetched)] == expected
    # Pushed to a consumer that starts after the backlog built up.
    got = inbox()
    conn.channel().basic_consume(consumed, got, auto_ack=True)
    assert pump(conn, until=lambda: len(got) == 30)
    assert got.bodies() == expected
    # The priority is delivered as published, not capped.
    assert [d.properties.priority for d in got[:2]] == [9, 5]


def test_high_priority_messages_overtake_a_backlog_a_slow_consumer_works_through(
        connect, names, inbox, pump):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    publish_all(ch, q, [(f"low-{i}".encode(), 1) for i in range(10)])
    consumer_ch = conn.channel()
    consumer_ch.basic_qos(prefetch_count=1)
    got = inbox()
    consumer_ch.basic_consume(q, got)
    # One message at a time; while each is being worked on the producer sends more: a
    # high-priority one in each of the first five rounds, and low-priority ones throughout.
    for round_ in range(25):
        assert pump(conn, until=lambda: len(got) == round_ + 1)
        if round_ < 5:
            ch.basic_publish("", q, f"high-{round_}".encode(), pika.BasicProperties(priority=8))
        if round_ % 2 == 0 and round_ < 20:
            ch.basic_publish("", q, f"low-{10 + round_ // 2}".encode())
        consumer_ch.basic_ack(got[-1].tag)
    expected = ["low-0"] + [f"high-{i}" for i in range(5)]
    # Priority 1 (the backlog) before the unset ones (0) published while it was worked on.
    expected += [f"low-{i}" for i in range(1, 20)]
    assert [b.decode() for b in got.bodies()] == expected
    assert not pump(conn, until=lambda: len(got) > 25, timeout=0.3)


def test_a_requeued_message_goes_back_to_the_front_of_its_priority(connect, names, drain):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    publish_all(ch, q, [(b"a", 1), (b"b", 1)])
    method, _, body = ch.basic_get(q, auto_ack=False)
    assert body == b"a"
    publish_all(ch, q, [(b"urgent", 5), (b"c", 1)])
    ch.basic_nack(method.delivery_tag, requeue=True)
    got = drain(ch, q)
    assert [d.body for d in got] == [b"urgent", b"a", b"b", b"c"]
    assert [d.redelivered for d in got] == [False, True, False, False]


def test_a_queue_without_max_priority_ignores_priorities(connect, names, drain):
    ch = connect().channel()
    ch.confirm_delivery()
    q = names.queue()
    ch.queue_declare(q)
    publish_all(ch, q, [(b"0", 0), (b"1", 9), (b"2", None), (b"3", 5)])
    assert [d.body for d in drain(ch, q)] == [b"0", b"1", b"2", b"3"]


def test_255_is_the_largest_max_priority(connect, names, drain):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-priority": 255})
    publish_all(ch, q, [(b"low", 254), (b"top", 255)])
    assert [d.body for d in drain(ch, q)] == [b"top", b"low"]
    refused = names.queue()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(refused, arguments={"x-max-priority": 256})
    assert (info.value.reply_code, info.value.reply_text) == (
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{refused}' in vhost '/': "
        "{max_value_exceeded,256}",
    )


def test_an_expired_lower_priority_message_waits_behind_an_unexpired_higher_priority_one(
        connect, names, queue_state, drain):
    # RabbitMQ's documentation of priority queues: messages "will still only expire from the head
    # of the queue ... expired lower-priority messages getting stuck behind non-expired higher
    # priority ones ... will never be delivered, but they will appear in queue statistics".
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    dlq, q = names.queue("dlq"), names.queue("stuck")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-max-priority": 5, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"high", pika.BasicProperties(priority=5, expiration="10000"))
    ch.basic_publish("", q, b"low", pika.BasicProperties(priority=1, expiration="100"))
    conn.sleep(0.4)
    assert queue_state(conn, q)[0] == 2, "low is still counted"
    assert queue_state(conn, dlq)[0] == 0, "and not dead-lettered yet"
    method, _, body = ch.basic_get(q, auto_ack=True)
    # Now at the head, low goes: never delivered.
    assert (body, method.message_count) == (b"high", 0)
    for _ in range(100):
        if queue_state(conn, dlq)[0] == 1:
            break
        conn.sleep(0.02)
    assert [d.body for d in drain(ch, dlq)] == [b"low"]

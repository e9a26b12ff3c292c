"""Queues with pika: server-named queues, declare-ok counts, redeclaration rules, exclusive and
auto-delete lifetimes, purge and delete (with their if-unused / if-empty guards), consumers
cancelled by a deletion, and the channel's "last declared queue". Expected codes and texts are
RabbitMQ 3.10's."""

import time
import uuid

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.deadline(20)

ChannelClosed = pika.exceptions.ChannelClosedByBroker


def closed_with(info, code: int, text: str) -> None:
    exc = info.value
    assert (exc.reply_code, exc.reply_text) == (code, text), repr(exc)


def wait_for_state(queue_state, conn, queue, expected, timeout=3.0):
    """Polls queue_state until it equals `expected`: queue deletion that follows a cancel or a
    close is asynchronous in RabbitMQ."""
    deadline = time.monotonic() + timeout
    state = queue_state(conn, queue)
    while state != expected and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
        state = queue_state(conn, queue)
    return state


def test_server_named_queue(connect, names):
    conn = connect()
    ch = conn.channel()
    first = names.track_queue(ch.queue_declare("").method.queue)
    second = names.track_queue(ch.queue_declare("", exclusive=True).method.queue)
    for name in (first, second):
        assert name.startswith("amq.gen-"), name
        assert 8 < len(name) <= 255
    assert first != second
    # The name is usable like any other.
    ch.basic_publish("", first, b"to a generated name")
    method, _props, body = ch.basic_get(first, auto_ack=True)
    assert body == b"to a generated name"
    assert method.routing_key == first


def test_declare_ok_counts_ready_messages_and_consumers(connect, names, fill, inbox, pump):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ok = ch.queue_declare(q).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    fill(conn, q, [b"1", b"2", b"3"])
    ok = ch.queue_declare(q).method  # an active redeclare answers with counts too
    assert (ok.message_count, ok.consumer_count) == (3, 0)
    # A consumer holding one unacked message: it is no longer ready.
    consumer_conn = connect()
    consumers = []
    for _ in range(2):
        cch = consumer_conn.channel()
        cch.basic_qos(prefetch_count=1)
        got = inbox()
        cch.basic_consume(q, got)
        consumers.append(got)
        assert pump(consumer_conn, until=lambda: len(got) == 1, timeout=5)
        ok = ch.queue_declare(q, passive=True).method
        assert (ok.message_count, ok.consumer_count) == (3 - len(consumers), len(consumers))
    assert [c.bodies() for c in consumers] == [[b"1"], [b"2"]]


def test_passive_declare_of_missing_queue_is_404(channel, names):
    q = names.queue("missing")
    with pytest.raises(ChannelClosed) as info:
        channel.queue_declare(q, passive=True)
    closed_with(info, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_passive_declare_ignores_flags(channel, names):
    q = names.queue()
    channel.queue_declare(q)
    ok = channel.queue_declare(q, passive=True, durable=True, auto_delete=True,
                               arguments={"x-max-length": 1}).method
    assert ok.queue == q


@pytest.mark.parametrize(
    "first,second,text",
    [
        ({}, {"durable": True},
         "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
        ({"durable": True}, {},
         "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'"),
        ({}, {"auto_delete": True},
         "inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
        ({}, {"arguments": {"x-max-length": 10}},
         "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type 'signedint' but current is none"),
        ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 11}},
         "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received '11' but current is '10'"),
    ],
    ids=["durable", "not-durable", "auto-delete", "new-arg", "other-arg-value"],
)
def test_redeclare_with_other_properties_is_406(connect, names, first, second, text):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, **first)
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(q, **second)
    closed_with(info, 406, "PRECONDITION_FAILED - " + text.format(q=q))
    # The queue is unchanged and the connection fine.
    ch = conn.channel()
    ch.queue_declare(q, **first)


def test_redeclare_with_same_arguments_is_fine_and_unknown_x_arguments_are_ignored(channel, names):
    q = names.queue()
    channel.queue_declare(q, arguments={"x-max-length": 10, "x-custom": "a"})
    # Arguments RabbitMQ does not know are not compared.
    channel.queue_declare(q, arguments={"x-max-length": 10, "x-custom": "b"})
    channel.queue_declare(q, arguments={"x-max-length": 10})


INVALID_ARGUMENTS = [
    # (arguments, RabbitMQ 3.10's reason after "invalid arg '<name>' for queue '<q>' in vhost '/': ")
    ({"x-max-length": "ten"}, '"expected integer, got longstr"'),
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-max-length-bytes": "x"}, '"expected integer, got longstr"'),
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-expires": -5}, "{value_negative,-5}"),
    ({"x-message-ttl": -1}, "{value_negative,-1}"),
    ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
    ({"x-max-priority": -1}, "{value_negative,-1}"),
    ({"x-overflow": "bogus"}, "invalid_overflow"),
    ({"x-overflow": 1}, "{unacceptable_type,signedint}"),
    ({"x-queue-mode": "bogus"}, "\"unsupported queue mode 'bogus'\""),
    ({"x-queue-type": "bogus"}, "\"unsupported queue type 'bogus'\""),
    ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
    ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
]


@pytest.mark.parametrize(
    "arguments,reason",
    INVALID_ARGUMENTS,
    ids=[",".join(f"{k}={v}" for k, v in arguments.items()) for arguments, _ in INVALID_ARGUMENTS],
)
def test_invalid_queue_argument_is_406(channel, names, arguments, reason):
    q = names.queue()
    (name,) = arguments
    with pytest.raises(ChannelClosed) as info:
        channel.queue_declare(q, arguments=arguments)
    closed_with(
        info, 406,
        f"PRECONDITION_FAILED - invalid arg '{name}' for queue '{q}' in vhost '/': {reason}",
    )


def test_dead_letter_exchange_of_the_wrong_type_is_406(channel, names):
    q = names.queue()
    with pytest.raises(ChannelClosed) as info:
        channel.queue_declare(q, arguments={"x-dead-letter-exchange": 1})
    # Worded differently from the other argument checks.
    closed_with(
        info, 406,
        f"PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in "
        f"queue '{q}' in vhost '/'",
    )


def test_amq_prefixed_queue_name_is_403(channel):
    with pytest.raises(ChannelClosed) as info:
        channel.queue_declare("amq.warren-test")
    closed_with(
        info, 403,
        "ACCESS_REFUSED - queue name 'amq.warren-test' contains reserved prefix 'amq.*'",
    )


def test_exclusive_queue_is_locked_to_its_connection_and_goes_with_it(connect, names, queue_state):
    owner = connect()
    # A short name, so that the whole reply text fits in a short string.
    q = names.track_queue(f"wit-excl-{uuid.uuid4().hex[:8]}")
    owner.channel().queue_declare(q, exclusive=True)
    other = connect()
    locked = (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
        "It could be originally declared on another connection or the exclusive property value "
        "does not match that of the original declaration."
    )
    attempts = {
        "declare": lambda ch: ch.queue_declare(q, exclusive=True),
        "declare-not-exclusive": lambda ch: ch.queue_declare(q),
        "passive": lambda ch: ch.queue_declare(q, passive=True),
        "consume": lambda ch: ch.basic_consume(q, lambda *a: None),
        "get": lambda ch: ch.basic_get(q),
        "purge": lambda ch: ch.queue_purge(q),
        "delete": lambda ch: ch.queue_delete(q),
        "bind": lambda ch: ch.queue_bind(q, "amq.fanout"),
    }
    for label, attempt in attempts.items():
        with pytest.raises(ChannelClosed) as info:
            attempt(other.channel())
        closed_with(info, 405, locked)
    # The owner uses it from any of its channels.
    ch = owner.channel()
    ch.basic_publish("", q, b"mine")
    assert ch.basic_get(q, auto_ack=True)[2] == b"mine"
    owner.close()
    # Exclusive queues go when their connection closes.
    assert wait_for_state(queue_state, other, q, None) is None


def test_anyone_may_publish_to_an_exclusive_queue(connect, names, drain):
    owner = connect()
    ch = owner.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    names.track_queue(q)
    other = connect().channel()
    other.confirm_delivery()
    other.basic_publish("", q, b"from elsewhere", mandatory=True)  # no UnroutableError
    assert [d.body for d in drain(ch, q)] == [b"from elsewhere"]


def test_exclusive_queue_survives_its_declaring_channel(connect, names, queue_state):
    owner = connect()
    q = names.queue()
    ch = owner.channel()
    ch.queue_declare(q, exclusive=True)
    ch.close()
    assert queue_state(owner, q) == (0, 0)


def test_auto_delete_queue_goes_when_its_last_consumer_cancels(connect, names, queue_state):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, auto_delete=True)
    # Never consumed from: it stays.
    assert queue_state(conn, q) == (0, 0)
    first = ch.basic_consume(q, lambda *a: None)
    second = conn.channel().basic_consume(q, lambda *a: None)
    assert queue_state(conn, q) == (0, 2)
    ch.basic_cancel(first)
    assert queue_state(conn, q) == (0, 1)
    # The consumer on the second channel goes with its channel.
    conn.close()
    other = connect()
    assert wait_for_state(queue_state, other, q, None) is None


def test_auto_delete_queue_goes_on_basic_cancel(connect, names, queue_state):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    assert wait_for_state(queue_state, conn, q, None) is None


def test_purge_returns_the_count_of_ready_messages(connect, names, fill, drain):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    fill(conn, q, [b"%d" % i for i in range(5)])
    held = ch.basic_get(q, auto_ack=False)[0]  # unacked messages are not purged
    assert ch.queue_purge(q).method.message_count == 4
    assert ch.queue_purge(q).method.message_count == 0
    ch.basic_reject(held.delivery_tag, requeue=True)
    got = drain(ch, q)
    assert [(d.body, d.redelivered) for d in got] == [(b"0", True)]


def test_delete_returns_the_message_count(connect, names, fill, queue_state):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    fill(conn, q, [b"a", b"b", b"c"])
    assert ch.queue_delete(q).method.message_count == 3
    assert queue_state(conn, q) is None
    # Deleting a missing queue is fine (delete-ok with 0).
    assert ch.queue_delete(q).method.message_count == 0


def test_delete_if_empty_and_if_unused(connect, names, fill, queue_state):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    fill(conn, q, [b"x"])
    with pytest.raises(ChannelClosed) as info:
        ch.queue_delete(q, if_empty=True)
    closed_with(info, 406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")

    ch = conn.channel()
    ch.basic_consume(q, lambda *a: None, auto_ack=True)  # takes the message
    with pytest.raises(ChannelClosed) as info:
        conn.channel().queue_delete(q, if_unused=True)
    closed_with(info, 406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    # Both guards pass now that the consumer is gone and the queue is empty.
    ch.close()
    assert queue_state(conn, q) == (0, 0)
    ok = conn.channel().queue_delete(q, if_unused=True, if_empty=True).method
    assert ok.message_count == 0
    assert queue_state(conn, q) is None


def test_deleting_a_queue_cancels_its_consumers(connect, names, pump):
    consumer_conn = connect()
    ch = consumer_conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = ch.basic_consume(q, lambda *a: None)
    connect().channel().queue_delete(q)
    assert pump(consumer_conn, until=lambda: cancels, timeout=5), "no basic.cancel from the broker"
    assert isinstance(cancels[0], pika.spec.Basic.Cancel)
    assert cancels[0].consumer_tag == tag
    assert ch.is_open
    assert ch.consumer_tags == []
    # The channel is still usable.
    ch.queue_declare(q)
    ch.queue_delete(q)


def test_acking_a_delivery_of_a_deleted_queue_is_harmless(connect, names, fill):
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    fill(conn, q, [b"a", b"b"])
    held = ch.basic_get(q)[0].delivery_tag
    connect().channel().queue_delete(q)
    ch.basic_ack(held)
    ch.basic_qos(prefetch_count=0)  # a round trip: the channel is still open
    assert ch.is_open


def test_consume_and_get_with_empty_queue_name_use_the_last_declared_queue(
    connect, names, fill, inbox, pump
):
    conn = connect()
    ch = conn.channel()
    q1 = names.queue("first")
    q2 = names.queue("second")
    ch.queue_declare(q1)
    ch.queue_declare(q2)
    fill(conn, q1, [b"in q1"])
    fill(conn, q2, [b"in q2", b"also q2"])
    method, _props, body = ch.basic_get("", auto_ack=True)
    assert (body, method.routing_key) == (b"in q2", q2)
    got = inbox()
    ch.basic_consume("", got, auto_ack=True)
    assert pump(conn, until=lambda: got, timeout=5)
    pump(conn, timeout=0.2)
    assert got.bodies() == [b"also q2"]
    # Binding and purging with an empty name work on it as well.
    ch.queue_declare(q1, passive=True)  # a passive declare counts as declaring
    ch.queue_bind("", "amq.direct", routing_key="warren-last-queue")
    assert ch.queue_purge("").method.message_count == 1
    ch.queue_unbind("", "amq.direct", routing_key="warren-last-queue")


def test_empty_queue_name_without_a_declared_queue_is_404(channel):
    with pytest.raises(ChannelClosed) as info:
        channel.basic_get("")
    closed_with(info, 404, "NOT_FOUND - no previously declared queue")


def test_queue_bound_by_name_on_default_exchange_only(channel, names, drain):
    # Every queue is reachable by its name through the default exchange, not through others.
    q = names.queue()
    channel.queue_declare(q)
    channel.basic_publish("amq.direct", q, b"not bound")
    channel.basic_publish("", q, b"default")
    assert [d.body for d in drain(channel, q)] == [b"default"]


def test_long_reply_text_is_cut_to_255_bytes_ending_in_an_ellipsis(channel):
    q = "warren-it-" + "n" * 230
    with pytest.raises(ChannelClosed) as info:
        channel.queue_declare(q, passive=True)
    full = f"NOT_FOUND - no queue '{q}' in vhost '/'"
    assert len(full) > 255
    # RabbitMQ keeps the first 252 bytes and appends "...".
    closed_with(info, 404, full[:252] + "...")

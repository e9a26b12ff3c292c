"""Message TTL with pika, as RabbitMQ behaves: `x-message-ttl` on the queue and the per-message
`expiration` property (the lower applies). Expired messages are never delivered; they are dropped,
or dead-lettered with reason `expired`, when they reach the head of the queue, and a queue of
expired messages empties without a consumer. A TTL of 0 means "to a waiting consumer, or never".
A dead-lettered copy loses `expiration` (kept as `original-expiration` in its x-death entry); a
retry loop through a TTL'd queue brings a message back with growing x-death counts; cycles of
automatic deaths are broken."""

import datetime
import time

import pika
import pika.exceptions
import pytest

X_DEATH_KEYS = {"count", "exchange", "queue", "reason", "routing-keys", "time"}


def expiring(milliseconds, **kwargs):
    return pika.BasicProperties(expiration=milliseconds, **kwargs)


def confirm_channel(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def get_one(conn, ch, queue):
    """basic.get (manual ack), polling until a message is there."""
    for _ in range(250):
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method:
            return method, props, body
        conn.sleep(0.02)
    raise AssertionError(f"nothing arrived in {queue}")


def get_now(ch, queue):
    """One basic.get (auto-ack): the body, or None for get-empty."""
    method, _, body = ch.basic_get(queue, auto_ack=True)
    return body if method else None


def ready(queue_state, conn, queue):
    return queue_state(conn, queue)[0]


def deaths(props):
    """(queue, reason, count, exchange, routing-keys, original-expiration) per x-death entry; each
    entry has exactly RabbitMQ's keys."""
    summary = []
    for d in props.headers["x-death"]:
        keys = set(d)
        expected = X_DEATH_KEYS | ({"original-expiration"} if "original-expiration" in d else set())
        assert keys == expected, d
        assert isinstance(d["time"], datetime.datetime), d
        summary.append((d["queue"], d["reason"], d["count"], d["exchange"], d["routing-keys"],
                        d.get("original-expiration")))
    return summary


# --- x-message-ttl and expiration ----------------------------------------------------------------

def test_messages_not_consumed_within_the_ttl_are_gone_without_a_consumer(
        connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q, arguments={"x-message-ttl": 300})
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", q, body)
    published = time.monotonic()
    assert ready(queue_state, conn, q) == 3
    assert pump(conn, until=lambda: ready(queue_state, conn, q) == 0)
    assert time.monotonic() - published >= 0.25
    assert get_now(ch, q) is None


def test_a_message_consumed_before_the_ttl_arrives_normally(connect, names, inbox, pump):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q, arguments={"x-message-ttl": 300})
    ch.basic_publish("", q, b"fetched")
    assert get_now(ch, q) == b"fetched"
    got = inbox()
    conn.channel().basic_consume(q, got, auto_ack=True)
    ch.basic_publish("", q, b"consumed")
    assert pump(conn, until=lambda: len(got) == 1)
    assert got.bodies() == [b"consumed"]
    assert got[0].properties.expiration is None
    assert not pump(conn, until=lambda: len(got) > 1, timeout=0.4)


def test_a_per_message_expiration_expires_that_message_only(connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"short", expiring("100"))
    ch.basic_publish("", q, b"long", expiring("60000"))
    ch.basic_publish("", q, b"forever")
    assert pump(conn, until=lambda: ready(queue_state, conn, q) == 2)
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"long" and props.expiration == "60000"
    assert get_now(ch, q) == b"forever"
    assert get_now(ch, q) is None


def test_the_lower_of_queue_ttl_and_expiration_applies(connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    short_queue, long_queue = names.queue("short"), names.queue("long")
    ch.queue_declare(short_queue, arguments={"x-message-ttl": 100})
    ch.basic_publish("", short_queue, b"x", expiring("60000"))
    ch.queue_declare(long_queue, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", long_queue, b"short", expiring("100"))
    ch.basic_publish("", long_queue, b"kept")
    assert pump(conn, until=lambda: (ready(queue_state, conn, short_queue),
                                     ready(queue_state, conn, long_queue)) == (0, 1))
    assert get_now(ch, short_queue) is None
    assert get_now(ch, long_queue) == b"kept"


def test_an_expired_message_behind_an_unexpired_head_waits_for_the_head(
        connect, names, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"A", expiring("10000"))
    ch.basic_publish("", q, b"B", expiring("100"))
    conn.sleep(0.3)
    # Expiry happens at the head only: B is still counted.
    assert ready(queue_state, conn, q) == 2
    assert get_now(ch, q) == b"A"
    # B reached the head, expired: never delivered.
    assert get_now(ch, q) is None
    assert ready(queue_state, conn, q) == 0


@pytest.mark.parametrize(
    "arguments,properties",
    [({"x-message-ttl": 0}, None), ({}, "0")],
    ids=["x-message-ttl-0", "expiration-0"],
)
def test_ttl_zero_delivers_to_a_waiting_consumer_and_drops_otherwise(
        connect, names, inbox, pump, queue_state, arguments, properties):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q, arguments=arguments)

    def props():
        return expiring(properties) if properties else None

    consumer_ch = conn.channel()
    got = inbox()
    tag = consumer_ch.basic_consume(q, got, auto_ack=True)
    ch.basic_publish("", q, b"now", props())
    assert pump(conn, until=lambda: len(got) == 1)
    assert got.bodies() == [b"now"]
    consumer_ch.basic_cancel(tag)
    # Nobody waiting: dropped at once.
    ch.basic_publish("", q, b"never", props())
    assert get_now(ch, q) is None
    assert ready(queue_state, conn, q) == 0


def test_ttl_zero_drops_a_message_no_consumer_has_credit_for(
        connect, names, inbox, pump, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q, arguments={"x-message-ttl": 0})
    consumer_ch = conn.channel()
    consumer_ch.basic_qos(prefetch_count=1)
    got = inbox()
    consumer_ch.basic_consume(q, got)
    ch.basic_publish("", q, b"one")
    assert pump(conn, until=lambda: len(got) == 1)
    # The consumer's prefetch is used up: nobody can take "two" now.
    ch.basic_publish("", q, b"two")
    assert ready(queue_state, conn, q) == 0
    consumer_ch.basic_ack(got[0].tag)
    assert not pump(conn, until=lambda: len(got) > 1, timeout=0.4)
    ch.basic_publish("", q, b"three")
    assert pump(conn, until=lambda: len(got) == 2)
    assert got.bodies() == [b"one", b"three"]


# --- dead-lettering of expired messages ----------------------------------------------------------

def test_an_expired_message_is_dead_lettered_with_reason_expired(connect, names, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    dlq, q = names.queue("dlq"), names.queue("ttl")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"stale", pika.BasicProperties(headers={"app": "kept"},
                                                           message_id="m-1"))
    method, props, body = get_one(conn, ch, dlq)
    assert body == b"stale"
    assert (method.exchange, method.routing_key, method.redelivered) == ("", dlq, False)
    assert props.expiration is None and props.message_id == "m-1"
    assert deaths(props) == [(q, "expired", 1, "", [q], None)]
    assert props.headers["app"] == "kept"
    assert props.headers["x-first-death-reason"] == "expired"
    assert props.headers["x-first-death-queue"] == q
    assert props.headers["x-first-death-exchange"] == ""
    ch.basic_ack(method.delivery_tag)
    assert ready(queue_state, conn, q) == 0


def test_expiration_is_removed_from_the_dead_lettered_copy_and_kept_in_x_death(connect, names):
    conn = connect()
    ch = confirm_channel(conn)
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    dlq, q = names.queue("dlq"), names.queue("work")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.queue_bind(q, x, "key")
    ch.basic_publish(x, "key", b"stale", expiring("150", correlation_id="c-1"))
    method, props, body = get_one(conn, ch, dlq)
    assert body == b"stale"
    assert props.expiration is None, "the copy must not expire again"
    assert props.correlation_id == "c-1"
    assert deaths(props) == [(q, "expired", 1, x, ["key"], "150")]
    assert props.headers["x-first-death-exchange"] == x
    ch.basic_ack(method.delivery_tag)


def test_an_unacked_message_requeued_after_its_ttl_is_dead_lettered_not_redelivered(
        connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    dlq, q = names.queue("dlq"), names.queue("ttl")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"late")
    ch.basic_publish("", q, b"later")
    method, _, body = get_one(conn, ch, q)
    assert body == b"late"
    # Unacked messages do not expire; the ready one behind it does.
    assert pump(conn, until=lambda: ready(queue_state, conn, q) == 0)
    ch.basic_nack(method.delivery_tag, requeue=True)
    first = get_one(conn, ch, dlq)
    second = get_one(conn, ch, dlq)
    assert [first[2], second[2]] == [b"later", b"late"]
    assert deaths(second[1]) == [(q, "expired", 1, "", [q], None)]
    assert get_now(ch, q) is None
    ch.basic_ack(second[0].delivery_tag, multiple=True)


def test_a_retry_loop_brings_the_message_back_after_the_delay_with_growing_counts(
        connect, names, inbox, pump):
    conn = connect()
    ch = confirm_channel(conn)
    # work_x --"job"--> work --reject--> retry_x (fanout) --> retry (TTL 200) --expired--> work_x
    work_x, retry_x = names.exchange("work-x"), names.exchange("retry-x")
    ch.exchange_declare(work_x, "direct")
    ch.exchange_declare(retry_x, "fanout")
    work, retry = names.queue("work"), names.queue("retry")
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": retry_x})
    ch.queue_bind(work, work_x, "job")
    ch.queue_declare(retry, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": work_x})
    ch.queue_bind(retry, retry_x)
    consumer_ch = conn.channel()
    got = inbox()
    consumer_ch.basic_consume(work, got)
    ch.basic_publish(work_x, "job", b"task")
    assert pump(conn, until=lambda: len(got) == 1)
    assert got[0].properties.headers is None
    consumer_ch.basic_reject(got[0].tag, requeue=False)
    rejected = time.monotonic()
    for round_ in (1, 2):
        assert pump(conn, until=lambda: len(got) == round_ + 1)
        assert time.monotonic() - rejected >= 0.18, "back before the retry delay"
        again = got[-1]
        assert again.body == b"task" and not again.redelivered
        assert (again.method.exchange, again.method.routing_key) == (work_x, "job")
        assert deaths(again.properties) == [
            (retry, "expired", round_, retry_x, ["job"], None),
            (work, "rejected", round_, work_x, ["job"], None),
        ]
        assert again.properties.headers["x-first-death-reason"] == "rejected"
        assert again.properties.headers["x-first-death-queue"] == work
        if round_ == 1:
            consumer_ch.basic_reject(again.tag, requeue=False)
            rejected = time.monotonic()
        else:
            consumer_ch.basic_ack(again.tag)
    assert not pump(conn, until=lambda: len(got) > 3, timeout=0.4)


# --- dead-letter cycles --------------------------------------------------------------------------

def test_a_cycle_of_expirations_between_two_queues_is_broken(connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    a, b = names.queue("a"), names.queue("b")
    # a --expired--> b --expired--> a: a cycle of automatic deaths.
    ch.queue_declare(a, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": b})
    ch.queue_declare(b, arguments={"x-message-ttl": 300, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": a})
    ch.basic_publish("", a, b"loop")

    def counts():
        return ready(queue_state, conn, a), ready(queue_state, conn, b)

    assert pump(conn, until=lambda: counts() == (0, 1)), "it expires in a and waits in b"
    assert pump(conn, until=lambda: counts() == (0, 0))
    # Had it gone back to a, it would show up in a or (for 300 ms at a time) in b again.
    seen = []
    pump(conn, until=lambda: seen.append(counts()) or seen[-1] != (0, 0), timeout=0.6)
    assert set(seen) == {(0, 0)}


def test_a_queue_that_dead_letters_its_expired_messages_to_itself_drops_them(
        connect, names, queue_state, pump):
    conn = connect()
    ch = confirm_channel(conn)
    fanout = names.exchange()
    ch.exchange_declare(fanout, "fanout")
    observer, q = names.queue("observer"), names.queue("self")
    ch.queue_declare(observer)
    ch.queue_bind(observer, fanout)
    ch.queue_declare(q, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": fanout})
    ch.queue_bind(q, fanout)
    ch.basic_publish("", q, b"once")
    assert pump(conn, until=lambda: ready(queue_state, conn, observer) == 1)
    # Had it come back to q, it would expire there again and reach the observer once more.
    conn.sleep(0.4)
    assert ready(queue_state, conn, observer) == 1
    assert ready(queue_state, conn, q) == 0
    method, props, body = get_one(conn, ch, observer)
    assert body == b"once"
    assert deaths(props) == [(q, "expired", 1, "", [q], None)]
    ch.basic_ack(method.delivery_tag)



def test_get_ok_counts_what_is_left_without_the_expired_messages_the_get_uncovered(
        connect, names, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"A", expiring("10000"))
    ch.basic_publish("", q, b"B", expiring("100"))
    ch.basic_publish("", q, b"C")
    conn.sleep(0.3)
    assert ready(queue_state, conn, q) == 3, "B waits behind A"
    method, _, body = ch.basic_get(q, auto_ack=True)
    # B reached the head expired and was dropped before the count: only C is left.
    assert (body, method.message_count) == (b"A", 1)
    assert get_now(ch, q) == b"C"


def test_an_expiration_of_minus_zero_is_a_ttl_of_zero(connect, names, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"never", expiring("-0"))
    assert ready(queue_state, conn, q) == 0
    assert get_now(ch, q) is None


def refused_expiration(conn, names, expiration):
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"bad", expiring(expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 406
    return info.value.reply_text


def test_expirations_are_checked_as_rabbitmq_does(connect, names, queue_state):
    conn = connect()
    ch = confirm_channel(conn)
    q = names.queue()
    ch.queue_declare(q)
    # Up to ten years is fine.
    ch.basic_publish("", q, b"a", expiring("4294967296"))
    ch.basic_publish("", q, b"b", expiring("315360000000"))
    assert ready(queue_state, conn, q) == 2
    assert refused_expiration(conn, names, "315360000001") == (
        "PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}")
    assert refused_expiration(conn, names, "1.5") == (
        "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}")


def test_a_message_ttl_above_ten_years_is_406(connect, names):
    ch = connect().channel()
    ch.queue_declare(names.queue(), arguments={"x-message-ttl": 315360000000})
    q = names.queue()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(q, arguments={"x-message-ttl": 315360000001})
    assert (info.value.reply_code, info.value.reply_text) == (
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': "
        "{value_too_large,315360000001}",
    )

"""Dead-lettering of rejected messages with pika: nack/reject with requeue=False republishes to
the queue's x-dead-letter-exchange (routing key: x-dead-letter-routing-key, else the message's
own), with RabbitMQ's x-death and x-first-death-* headers; a retry loop through two queues counts
each death per queue and reason."""

import pika


def get_one(conn, ch, queue):
    for _ in range(200):
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method:
            return method, props, body
        conn.sleep(0.02)
    raise AssertionError(f"nothing arrived in {queue}")


def death_summary(props):
    return [(d["queue"], d["reason"], d["count"], d["exchange"], d["routing-keys"])
            for d in props.headers["x-death"]]


def test_nack_without_requeue_dead_letters(connect, names):
    conn = connect()
    ch = conn.channel()
    dlx = names.exchange()
    ch.exchange_declare(dlx, "fanout")
    dlq = names.queue()
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    work = names.queue()
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", work, b"job", pika.BasicProperties(headers={"app": "kept"}))
    method, _, _ = get_one(conn, ch, work)
    ch.basic_nack(method.delivery_tag, requeue=False)
    method, props, body = get_one(conn, ch, dlq)
    assert body == b"job" and (method.exchange, method.routing_key) == (dlx, work)
    assert props.headers["app"] == "kept"
    assert death_summary(props) == [(work, "rejected", 1, "", [work])]
    assert props.headers["x-first-death-queue"] == work
    assert props.headers["x-first-death-reason"] == "rejected"
    ch.basic_ack(method.delivery_tag)


def test_retry_loop_counts_grow(connect, names):
    conn = connect()
    ch = conn.channel()
    work, retry = names.queue("work"), names.queue("retry")
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": retry})
    ch.queue_declare(retry, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work})
    ch.basic_publish("", work, b"try")
    for round_ in (1, 2, 3):
        method, props, _ = get_one(conn, ch, work)
        if round_ > 1:
            counts = {(d["queue"], d["reason"]): d["count"] for d in props.headers["x-death"]}
            assert counts == {(work, "rejected"): round_ - 1, (retry, "rejected"): round_ - 1}
        ch.basic_reject(method.delivery_tag, requeue=False)
        method, props, _ = get_one(conn, ch, retry)
        assert props.headers["x-death"][0]["queue"] == work
        assert props.headers["x-death"][0]["count"] == round_
        ch.basic_reject(method.delivery_tag, requeue=False)

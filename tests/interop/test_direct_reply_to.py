"""Direct reply-to with pika: the requester consumes `amq.rabbitmq.reply-to` with auto-ack,
publishes a request whose reply_to is that pseudo-queue, and the answer published to the rewritten
reply_to comes straight back, without any queue declared for it."""

import pika
import pika.exceptions
import pytest

REPLY_TO = "amq.rabbitmq.reply-to"


def test_rpc_round_trip(connect, names, inbox, pump):
    server_conn, client_conn = connect(), connect()
    server = server_conn.channel()
    requests = names.queue()
    server.queue_declare(requests)
    client = client_conn.channel()
    replies = inbox()
    client.basic_consume(REPLY_TO, replies, auto_ack=True)
    client.basic_publish("", requests, b"ping", pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c7"))
    method, props, body = None, None, None
    for _ in range(100):
        method, props, body = server.basic_get(requests, auto_ack=True)
        if method:
            break
        server_conn.sleep(0.02)
    assert body == b"ping"
    assert props.reply_to.startswith(REPLY_TO + ".") and props.correlation_id == "c7"
    server.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id="c7"))
    assert pump(client_conn, until=lambda: replies)
    assert replies.bodies() == [b"pong"]
    assert replies[0].properties.correlation_id == "c7"


def test_acking_reply_consumer_is_406(connect):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert info.value.reply_code == 406

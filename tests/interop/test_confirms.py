"""Publisher confirms with pika: confirmed publishes, unroutable mandatory messages (basic.return
before basic.ack), confirm delivery tags and `multiple` acks, and the confirm/tx exclusion.
Expected codes and texts are RabbitMQ 3.10's."""

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.deadline(20)

ChannelClosed = pika.exceptions.ChannelClosedByBroker


def closed_with(info, code: int, text: str) -> None:
    exc = info.value
    assert (exc.reply_code, exc.reply_text) == (code, text), repr(exc)


@pytest.fixture
def queue(names, connect):
    q = names.queue()
    connect().channel().queue_declare(q)
    return q


class Confirms:
    """Publisher confirms as they come, on a channel driven through pika's asynchronous Channel
    (BlockingChannel waits for each confirm in turn and hides `multiple`)."""

    def __init__(self, conn, pump):
        self.conn = conn
        self.pump = pump
        self.channel = conn.channel()
        self.frames = []  # Basic.Ack / Basic.Nack methods in arrival order
        self.returns = []
        self.events = []  # ("return", body) and ("ack", tag, multiple), in arrival order
        selected = []
        impl = self.channel._impl
        impl.add_on_return_callback(self._on_return)
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        assert pump(conn, until=lambda: selected, timeout=5), "no confirm.select-ok"

    def _on_return(self, _channel, method, _properties, body):
        self.returns.append((method, body))
        self.events.append(("return", body))

    def _on_confirm(self, frame):
        self.frames.append(frame.method)
        self.events.append(("ack", frame.method.delivery_tag, frame.method.multiple))

    def publish(self, exchange: str, routing_key: str, body: bytes, mandatory: bool = False):
        self.channel._impl.basic_publish(exchange, routing_key, body, mandatory=mandatory)

    def confirmed(self) -> list[int]:
        """The tags the acks and nacks received so far cover, sorted. A single ack must name an
        unconfirmed tag; a multiple one confirms every outstanding tag up to its own, which must
        itself be outstanding (confirms may come out of order: an unroutable message is confirmed
        at once, a routed one when its queues have it)."""
        covered = set()
        for method in self.frames:
            assert method.delivery_tag not in covered, f"tag confirmed twice: {self.frames}"
            if method.multiple:
                covered.update(range(1, method.delivery_tag + 1))
            else:
                covered.add(method.delivery_tag)
        return sorted(covered)

    def wait(self, count: int, timeout: float = 5.0) -> list[int]:
        assert self.pump(self.conn, until=lambda: len(self.confirmed()) >= count, timeout=timeout), (
            f"{len(self.confirmed())} of {count} confirms"
        )
        return self.confirmed()


def test_publishes_are_confirmed(connect, queue, drain):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", queue, b"%d" % i, pika.BasicProperties(delivery_mode=2))
    # Unroutable but not mandatory: dropped, and still acked.
    ch.basic_publish("amq.direct", "nobody-binds-this", b"dropped")
    assert [d.body for d in drain(ch, queue)] == [b"%d" % i for i in range(20)]


def test_unroutable_mandatory_raises_unroutable_error(connect, names, queue, drain):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(x, "nowhere", b"back to me", pika.BasicProperties(message_id="m1"),
                         mandatory=True)
    (returned,) = info.value.messages
    assert (returned.method.reply_code, returned.method.reply_text) == (312, "NO_ROUTE")
    assert (returned.method.exchange, returned.method.routing_key) == (x, "nowhere")
    assert returned.body == b"back to me" and returned.properties.message_id == "m1"
    # The channel carries on.
    ch.basic_publish("", queue, b"next", mandatory=True)
    assert [d.body for d in drain(ch, queue)] == [b"next"]


def test_confirm_tags_count_every_publish_and_return_comes_before_ack(connect, queue, pump):
    c = Confirms(connect(), pump)
    c.publish("", queue, b"1")
    c.publish("amq.direct", "unroutable", b"2")  # dropped, acked
    c.publish("amq.direct", "unroutable", b"3", mandatory=True)  # returned, then acked
    c.publish("", queue, b"4", mandatory=True)
    assert c.wait(4) == [1, 2, 3, 4]
    assert all(isinstance(m, pika.spec.Basic.Ack) for m in c.frames), c.frames
    assert [(m.reply_code, body) for m, body in c.returns] == [(312, b"3")]
    # The return of message 3 comes before the ack that covers it.
    first_ack_of_3 = next(
        i for i, e in enumerate(c.events) if e[0] == "ack" and (e[1] == 3 or (e[2] and e[1] > 3))
    )
    assert c.events.index(("return", b"3")) < first_ack_of_3, c.events


def test_many_publishes_are_confirmed_once_each_with_multiple_acks(connect, queue, pump, queue_state):
    conn = connect()
    c = Confirms(conn, pump)
    count = 2000
    for i in range(count):
        c.publish("", queue, b"%d" % i)
    assert c.wait(count) == list(range(1, count + 1))
    pump(conn, timeout=0.2)
    assert c.confirmed() == list(range(1, count + 1)), "more confirms than publishes"
    assert all(isinstance(m, pika.spec.Basic.Ack) for m in c.frames)
    # A broker that confirms a burst batches its acks (RabbitMQ does, by far fewer frames than
    # messages); one ack frame per message would be a performance bug, not a protocol error, but
    # clients like pika and lapin are built around `multiple`.
    assert any(m.multiple for m in c.frames), "no ack with multiple=true"
    assert len(c.frames) < count
    assert queue_state(conn, queue) == (count, 0)


def test_confirm_select_twice_is_fine(connect, pump):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    answered = []
    ch._impl.add_callback(answered.append, [pika.spec.Confirm.SelectOk])
    ch._impl._send_method(pika.spec.Confirm.Select())
    assert pump(conn, until=lambda: answered, timeout=5)
    assert ch.is_open


def test_tx_select_after_confirm_select_is_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosed) as info:
        ch.tx_select()
    closed_with(info, 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
    assert conn.is_open


def test_confirm_select_after_tx_select_is_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(ChannelClosed) as info:
        ch.confirm_delivery()
    closed_with(info, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")


def test_publish_to_missing_exchange_in_confirm_mode_closes_the_channel(connect, names):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    missing = names.exchange("missing")
    with pytest.raises(ChannelClosed) as info:
        ch.basic_publish(missing, "k", b"lost")
    closed_with(info, 404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'")


def test_confirm_channels_are_independent(connect, queue, pump):
    conn = connect()
    first = Confirms(conn, pump)
    second = Confirms(conn, pump)
    for i in range(3):
        first.publish("", queue, b"a%d" % i)
    second.publish("", queue, b"b")
    assert first.wait(3) == [1, 2, 3]
    assert second.wait(1) == [1]

"""Connection-level interop with pika: handshake, authentication, vhosts, channels, heartbeats and
graceful shutdown. Queue, exchange and publish tests go in their own modules beside this one."""

import time

import pika
import pika.credentials
import pika.exceptions
import pytest


@pytest.mark.warren_only  # RabbitMQ reports its own product name
def test_guest_connects_and_sees_warren(warren):
    conn = warren.connect()
    try:
        assert conn.is_open
        props = conn._impl.server_properties
        product = props.get("product")
        assert product in ("Warren", b"Warren"), props
        capabilities = props.get("capabilities", {})
        assert capabilities.get("authentication_failure_close") is True, props
    finally:
        conn.close()
    assert conn.is_closed


def test_default_port_fixture_is_usable(warren_port):
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=warren_port,
        credentials=pika.PlainCredentials("guest", "guest"),
        stack_timeout=10,
    )
    conn = pika.BlockingConnection(params)
    assert conn.is_open
    conn.close()


def test_opens_50_channels_and_closes_them(warren):
    conn = warren.connect()
    channels = [conn.channel() for _ in range(50)]
    numbers = {ch.channel_number for ch in channels}
    assert len(numbers) == 50
    assert all(ch.is_open for ch in channels)
    for ch in channels:
        ch.close()
    assert all(ch.is_closed for ch in channels)
    # The connection is still healthy and a freed number can be reused.
    again = conn.channel(channel_number=channels[0].channel_number)
    assert again.is_open
    conn.close()
    assert conn.is_closed


def test_connection_close_is_clean(warren):
    conn = warren.connect()
    conn.channel()
    conn.channel()
    # BlockingConnection.close() closes the channels, sends connection.close and waits for
    # close-ok; it raises if the broker drops the socket or answers anything else.
    conn.close()
    assert conn.is_closed
    # The broker keeps serving after a client leaves.
    conn2 = warren.connect()
    assert conn2.is_open
    conn2.close()


@pytest.mark.parametrize("user,password", [("guest", "wrong"), ("nobody", "guest")])
def test_bad_login_is_refused_with_403(warren, user, password):
    with pytest.raises(
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ConnectionClosedByBroker)
    ) as info:
        warren.connect(credentials=pika.PlainCredentials(user, password))
    text = repr(info.value)
    assert "403" in text and "ACCESS_REFUSED" in text, text
    # The broker keeps serving.
    conn = warren.connect()
    assert conn.is_open
    conn.close()


def test_unknown_vhost_is_refused_with_530(warren):
    with pytest.raises(
        (pika.exceptions.ProbableAccessDeniedError, pika.exceptions.ConnectionClosedByBroker)
    ) as info:
        warren.connect(virtual_host="no-such-vhost")
    text = repr(info.value)
    assert "530" in text and "NOT_ALLOWED" in text, text
    conn = warren.connect(virtual_host="/")
    assert conn.is_open
    conn.close()


def _amqplain_credentials_class():
    for cls in pika.credentials.VALID_TYPES:
        if getattr(cls, "TYPE", None) == "AMQPLAIN":
            return cls
    return None


def test_amqplain_login(warren):
    cls = _amqplain_credentials_class()
    if cls is None:
        pytest.skip(
            f"pika {pika.__version__} has no AMQPLAIN credentials class (it ships PLAIN and "
            "EXTERNAL only); AMQPLAIN is covered by the Rust tests"
        )
    conn = warren.connect(credentials=cls("guest", "guest"))
    assert conn.is_open
    conn.close()


def test_heartbeat_is_negotiated_and_keeps_the_connection_alive(warren):
    conn = warren.connect(heartbeat=2)
    try:
        # pika sends tune-ok with its own value when it sets one.
        assert conn._impl.params.heartbeat == 2
        checker = conn._impl._heartbeat_checker
        assert checker is not None
        before = checker._heartbeat_frames_received
        # sleep() keeps pika's I/O loop running: it sends a heartbeat every second and would drop
        # the connection (AMQPHeartbeatTimeout) if the broker went silent; the broker drops it if
        # it does not count pika's heartbeats as traffic (2 intervals = 4 s).
        conn.sleep(5)
        assert conn.is_open
        received = checker._heartbeat_frames_received - before
        # An idle broker that honours heartbeat=2 sends at least one heartbeat every 2 s.
        assert received >= 2, f"broker sent {received} heartbeats in 5 s with heartbeat=2"
        ch = conn.channel()
        assert ch.is_open
    finally:
        if conn.is_open:
            conn.close()


def test_broker_drops_a_client_that_misses_heartbeats(warren):
    conn = warren.connect(heartbeat=1)
    # Block pika's I/O loop: no heartbeats go out for longer than two intervals.
    time.sleep(4)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        conn.channel()
    assert conn.is_closed


@pytest.mark.warren_only  # RabbitMQ 3.x refuses client flow control: 540 "active=false"
def test_channel_flow(warren):
    conn = warren.connect()
    ch = conn.channel()
    assert ch.flow(False) is False
    assert ch.flow(True) is True
    conn.close()


def test_channel_number_above_channel_max_closes_the_connection_with_530(warren):
    conn = warren.connect(channel_max=10)
    assert conn._impl.params.channel_max == 10
    for _ in range(10):
        conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.channel(channel_number=11)
    assert info.value.reply_code == 530, repr(info.value)
    assert conn.is_closed


def test_channel_error_leaves_the_connection_usable(warren):
    conn = warren.connect()
    bystander = conn.channel()
    victim = conn.channel()
    # Queues are not implemented yet (540 NOT_IMPLEMENTED); once they are, a passive declare of
    # a missing queue is 404 NOT_FOUND. Both are channel errors.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        victim.queue_declare("warren-interop-no-such-queue", passive=True)
    assert info.value.reply_code in (404, 540), repr(info.value)
    assert victim.is_closed
    assert conn.is_open and bystander.is_open
    assert bystander.flow(True) is True
    conn.close()


def test_sigterm_closes_clients_with_320(start_broker):
    with start_broker() as broker:
        conn = broker.connect()
        ch = conn.channel()
        started = time.monotonic()
        broker.process.terminate()  # SIGTERM
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            conn.sleep(10)
        assert info.value.reply_code == 320, repr(info.value)
        assert "CONNECTION_FORCED" in info.value.reply_text, repr(info.value)
        assert time.monotonic() - started < 5, "close arrived late"
        assert conn.is_closed and ch.is_closed
        assert broker.terminate() == 0, broker.log()

"""Limits that keep one client from hurting others: a user's and a vhost's connection limits, a
vhost's queue limit, and the message size limit, each refused with RabbitMQ's code and text.

One broker for the module: user `capped` (max_connections 2) and user `steady` (no limit), both
with every permission in vhost `small` (max_connections 4, max_queues 3) and in `/`.

With WARREN_TEST_EXTERNAL_PORT (a RabbitMQ 3.10), WARREN_TEST_RABBITMQCTL names the command that
sets the same up (set_user_limits, set_vhost_limits); without it the module is skipped.
"""

import os
import threading
import uuid

import pika
import pika.exceptions
import pytest

from conftest import EXTERNAL_PORT, external_broker, running_broker
from test_permissions import rabbitmqctl

PASSWORD = "pw"
USERS = {"capped": 2, "steady": None}
VHOST = "small"
VHOST_CONNECTIONS = 4
VHOST_QUEUES = 3

CONFIG = f"""
[[vhosts]]
name = "{VHOST}"
max_connections = {VHOST_CONNECTIONS}
max_queues = {VHOST_QUEUES}
""" + "".join(
    f"""
[[users]]
name = "{user}"
password = "{PASSWORD}"
{f"max_connections = {limit}" if limit else ""}
"""
    + "".join(
        f"""
[[permissions]]
user = "{user}"
vhost = "{vhost}"
configure = ".*"
write = ".*"
read = ".*"
"""
        for vhost in ["/", VHOST]
    )
    for user, limit in USERS.items()
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    if EXTERNAL_PORT:
        if not os.environ.get("WARREN_TEST_RABBITMQCTL"):
            pytest.skip("WARREN_TEST_EXTERNAL_PORT needs WARREN_TEST_RABBITMQCTL to set up users")
        rabbitmqctl("add_vhost", VHOST)
        rabbitmqctl(
            "set_vhost_limits", "-p", VHOST,
            f'{{"max-connections": {VHOST_CONNECTIONS}, "max-queues": {VHOST_QUEUES}}}',
        )
        for user, limit in USERS.items():
            rabbitmqctl("add_user", user, PASSWORD)
            for vhost in ["/", VHOST]:
                rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            if limit:
                rabbitmqctl("set_user_limits", user, f'{{"max-connections": {limit}}}')
        try:
            yield external_broker()
        finally:
            rabbitmqctl("delete_vhost", VHOST)
            for user in USERS:
                rabbitmqctl("delete_user", user)
        return
    tmp = tmp_path_factory.mktemp("limits")
    config = tmp / "warren.toml"
    config.write_text(CONFIG)
    with running_broker(tmp, ["--config", str(config)]) as broker:
        yield broker


def connect(broker, user: str, vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        broker.params(virtual_host=vhost, credentials=pika.PlainCredentials(user, PASSWORD))
    )


def refused_open(broker, user: str, vhost: str = "/") -> str:
    """The text of the 530 that refuses `user` (pika reports it as a probable access denial)."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        connect(broker, user, vhost)
    closed = refused.value.args[0]
    prefix = "ConnectionClosedByBroker: (530) "
    assert isinstance(closed, str) and closed.startswith(prefix), closed
    return closed.removeprefix(prefix)[1:-1]


def test_a_users_connection_limit(limited):
    first, second = connect(limited, "capped"), connect(limited, "capped")
    assert refused_open(limited, "capped") == (
        "NOT_ALLOWED - connection refused for user 'capped': user connection limit (2) is reached"
    )
    # Other users are not counted against it.
    connect(limited, "steady").close()
    # A connection closed makes room again.
    first.close()
    connect(limited, "capped").close()
    second.close()


def test_a_vhosts_connection_limit(limited):
    held = [connect(limited, "steady", VHOST) for _ in range(VHOST_CONNECTIONS)]
    assert refused_open(limited, "steady", VHOST) == (
        f"NOT_ALLOWED - access to vhost '{VHOST}' refused for user 'steady': "
        f"connection limit ({VHOST_CONNECTIONS}) is reached"
    )
    # Other vhosts are not counted against it.
    connect(limited, "steady").close()
    for connection in held:
        connection.close()
    connect(limited, "steady", VHOST).close()


def test_a_vhosts_queue_limit(limited):
    connection = connect(limited, "steady", VHOST)
    channel = connection.channel()
    names = [f"limit-{uuid.uuid4().hex[:8]}" for _ in range(VHOST_QUEUES + 1)]
    try:
        for name in names[:VHOST_QUEUES]:
            channel.queue_declare(name)
        # Declaring one that exists is not a new queue.
        channel.queue_declare(names[0])
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.queue_declare(names[-1])
        assert (closed.value.reply_code, closed.value.reply_text) == (
            406,
            f"PRECONDITION_FAILED - cannot declare queue '{names[-1]}': queue limit in vhost "
            f"'{VHOST}' ({VHOST_QUEUES}) is reached",
        )
        channel = connection.channel()
        channel.queue_delete(names[0])
        channel.queue_declare(names[-1])
    finally:
        channel = connection.channel() if channel.is_closed else channel
        for name in names:
            channel.queue_delete(name)
        connection.close()


def test_a_connection_flood_from_one_user_leaves_another_users_publishing_alone(limited):
    """`capped` opens connections in a loop (all but two refused) while `steady` publishes with
    confirms: every message of steady's is confirmed, and the flood is refused with 530s."""
    stop = threading.Event()
    outcomes = {"refused": 0, "opened": 0, "other": []}

    def flood():
        held = []
        while not stop.is_set():
            try:
                held.append(connect(limited, "capped"))
                outcomes["opened"] += 1
            except pika.exceptions.ProbableAccessDeniedError:
                outcomes["refused"] += 1
            except Exception as e:  # noqa: BLE001 - recorded for the assertion below
                outcomes["other"].append(repr(e))
        for connection in held:
            connection.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        connection = connect(limited, "steady")
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        for i in range(2000):
            channel.basic_publish("", queue, f"m{i}".encode())
        assert channel.queue_declare(queue, passive=True).method.message_count == 2000
        connection.close()
    finally:
        stop.set()
        flooder.join(timeout=30)
    assert outcomes["opened"] == USERS["capped"]
    assert outcomes["refused"] > 10, outcomes
    assert outcomes["other"] == []


@pytest.mark.warren_only
def test_a_message_over_max_message_size_is_406(limited):
    """Warren's default is 16 MiB, as RabbitMQ 4's (3.10's is 128 MiB)."""
    connection = connect(limited, "steady")
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    size = 16 * 1024 * 1024 + 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_publish("", queue, b"x" * size)
    assert (closed.value.reply_code, closed.value.reply_text) == (
        406,
        f"PRECONDITION_FAILED - message size {size} is larger than configured max size "
        f"{16 * 1024 * 1024}",
    )
    channel = connection.channel()
    channel.basic_publish("", queue, b"x" * (size - 1))
    connection.close()

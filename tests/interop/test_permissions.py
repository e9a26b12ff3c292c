"""Access control: users x vhosts x operations, as RabbitMQ enforces them.

One broker for the module, with a vhost `sec` and four users (password "pw"):

    admin   configure .*        write .*                      read .*
    reader  configure ""        write ""                      read .*
    writer  configure ^w\\.      write ^w\\.|^amq\\.default$     read ^w\\.
            topic permissions on exchange w.topic: write ^eu\\.  read ^eu\\.
    lodger  permissions in "/" only

admin sets up the resources (exchanges w.x, w.topic, r.x; queues w.q, r.q); each case then runs
one operation as one user on a fresh connection and expects it to pass, or the exact refusal.

Against Warren the broker is started with a configuration file saying the above. With
WARREN_TEST_EXTERNAL_PORT (say a RabbitMQ 3.10 on 5673), WARREN_TEST_RABBITMQCTL must name the
command that manages it (e.g. "rabbitmqctl -n ref@localhost"): the module creates the vhost, users
and permissions with it and deletes them afterwards; without it the module is skipped.
"""

import os
import shlex
import subprocess
import uuid

import pika
import pika.exceptions
import pytest

from conftest import EXTERNAL_PORT, external_broker, running_broker

VHOST = "sec"
PASSWORD = "pw"
PERMISSIONS = {
    "admin": (".*", ".*", ".*"),
    "reader": ("", "", ".*"),
    "writer": ("^w\\.", "^w\\.|^amq\\.default$", "^w\\."),
}
TOPIC = ("writer", "w.topic", "^eu\\.", "^eu\\.")

CONFIG = f"""
[[vhosts]]
name = "{VHOST}"

[[users]]
name = "guest"
password = "guest"

[[permissions]]
user = "guest"
configure = ".*"
write = ".*"
read = ".*"

[[users]]
name = "lodger"
password = "{PASSWORD}"

[[permissions]]
user = "lodger"
configure = ".*"
write = ".*"
read = ".*"
""" + "".join(
    f"""
[[users]]
name = "{user}"
password = "{PASSWORD}"

[[permissions]]
user = "{user}"
vhost = "{VHOST}"
configure = '{c}'
write = '{w}'
read = '{r}'
"""
    for user, (c, w, r) in PERMISSIONS.items()
) + f"""
[[topic_permissions]]
user = "{TOPIC[0]}"
vhost = "{VHOST}"
exchange = "{TOPIC[1]}"
write = '{TOPIC[2]}'
read = '{TOPIC[3]}'
"""


def rabbitmqctl(*args: str) -> None:
    command = shlex.split(os.environ["WARREN_TEST_RABBITMQCTL"]) + list(args)
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def set_up_rabbitmq() -> None:
    rabbitmqctl("add_vhost", VHOST)
    for user in ["lodger", *PERMISSIONS]:
        rabbitmqctl("add_user", user, PASSWORD)
    rabbitmqctl("set_permissions", "-p", "/", "lodger", ".*", ".*", ".*")
    for user, (c, w, r) in PERMISSIONS.items():
        rabbitmqctl("set_permissions", "-p", VHOST, user, c, w, r)
    rabbitmqctl("set_topic_permissions", "-p", VHOST, *TOPIC)


def tear_down_rabbitmq() -> None:
    rabbitmqctl("delete_vhost", VHOST)
    for user in ["lodger", *PERMISSIONS]:
        rabbitmqctl("delete_user", user)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    if EXTERNAL_PORT:
        if not os.environ.get("WARREN_TEST_RABBITMQCTL"):
            pytest.skip("WARREN_TEST_EXTERNAL_PORT needs WARREN_TEST_RABBITMQCTL to set up users")
        set_up_rabbitmq()
        try:
            broker = external_broker()
            set_up_resources(broker)
            yield broker
        finally:
            tear_down_rabbitmq()
        return
    tmp = tmp_path_factory.mktemp("permissions")
    config = tmp / "warren.toml"
    config.write_text(CONFIG)
    with running_broker(tmp, ["--config", str(config)]) as broker:
        set_up_resources(broker)
        yield broker


def params(broker, user: str, vhost: str = VHOST) -> pika.ConnectionParameters:
    return broker.params(
        virtual_host=vhost, credentials=pika.PlainCredentials(user, PASSWORD)
    )


def set_up_resources(broker) -> None:
    connection = pika.BlockingConnection(params(broker, "admin"))
    channel = connection.channel()
    channel.exchange_declare("w.x", "direct")
    channel.exchange_declare("w.topic", "topic")
    channel.exchange_declare("r.x", "fanout")
    channel.queue_declare("w.q")
    channel.queue_declare("r.q")
    connection.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def refused(kind: str, name: str, user: str) -> tuple[int, str]:
    return 403, f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VHOST}' refused for user '{user}'"


def topic_refused(key: str, user: str) -> tuple[int, str]:
    return 403, (
        f"ACCESS_REFUSED - access to topic '{key}' in exchange 'w.topic' in vhost '{VHOST}' "
        f"refused for user '{user}'"
    )


def publish(exchange: str, key: str):
    def run(channel):
        channel.confirm_delivery()
        channel.basic_publish(exchange, key, b"m")

    return run


def consume(queue: str):
    def run(channel):
        channel.basic_consume(queue, lambda *_: None, auto_ack=True)

    return run


# (user, operation, what RabbitMQ answers: None for ok, else (code, text)).
CASES = {
    "reader declares a queue": (
        "reader", lambda ch: ch.queue_declare("r.new"), refused("queue", "r.new", "reader")),
    "reader declares passively": ("reader", lambda ch: ch.queue_declare("w.q", passive=True), None),
    "writer declares its queue": ("writer", lambda ch: ch.queue_declare(unique("w.")), None),
    "writer declares another's queue": (
        "writer", lambda ch: ch.queue_declare("x.q"), refused("queue", "x.q", "writer")),
    "writer declares a queue dead-lettering to its exchange": (
        "writer",
        lambda ch: ch.queue_declare(unique("w.d"), arguments={"x-dead-letter-exchange": "w.x"}),
        None,
    ),
    "writer declares a queue dead-lettering to another's exchange": (
        "writer",
        lambda ch: ch.queue_declare("w.dl", arguments={"x-dead-letter-exchange": "r.x"}),
        refused("exchange", "r.x", "writer"),
    ),
    "writer declares its exchange": ("writer", lambda ch: ch.exchange_declare(unique("w."), "fanout"), None),
    "writer declares another's exchange": (
        "writer", lambda ch: ch.exchange_declare("x.x", "fanout"), refused("exchange", "x.x", "writer")),
    "writer declares an exchange with another's alternate": (
        "writer",
        lambda ch: ch.exchange_declare("w.ae", "fanout", arguments={"alternate-exchange": "r.x"}),
        refused("exchange", "r.x", "writer"),
    ),
    "reader deletes a queue": ("reader", lambda ch: ch.queue_delete("r.q"), refused("queue", "r.q", "reader")),
    "writer deletes another's exchange": (
        "writer", lambda ch: ch.exchange_delete("r.x"), refused("exchange", "r.x", "writer")),
    "writer publishes to the default exchange": ("writer", publish("", "w.q"), None),
    "writer publishes to its exchange": ("writer", publish("w.x", "k"), None),
    "writer publishes to another's exchange": ("writer", publish("r.x", "k"), refused("exchange", "r.x", "writer")),
    "reader publishes to the default exchange": (
        "reader", publish("", "r.q"), refused("exchange", "amq.default", "reader")),
    "writer publishes an allowed topic": ("writer", publish("w.topic", "eu.orders"), None),
    "writer publishes a refused topic": ("writer", publish("w.topic", "us.orders"), topic_refused("us.orders", "writer")),
    "admin publishes any topic": ("admin", publish("w.topic", "us.orders"), None),
    "reader gets from any queue": ("reader", lambda ch: ch.basic_get("r.q"), None),
    "writer gets from its queue": ("writer", lambda ch: ch.basic_get("w.q"), None),
    "writer gets from another's queue": (
        "writer", lambda ch: ch.basic_get("r.q"), refused("queue", "r.q", "writer")),
    "reader consumes": ("reader", consume("r.q"), None),
    "writer consumes from another's queue": ("writer", consume("r.q"), refused("queue", "r.q", "writer")),
    "reader purges": ("reader", lambda ch: ch.queue_purge("w.q"), None),
    "writer purges another's queue": ("writer", lambda ch: ch.queue_purge("r.q"), refused("queue", "r.q", "writer")),
    "reader binds (write on the queue)": (
        "reader", lambda ch: ch.queue_bind("r.q", "r.x"), refused("queue", "r.q", "reader")),
    "writer binds from another's exchange (read on it)": (
        "writer", lambda ch: ch.queue_bind("w.q", "r.x"), refused("exchange", "r.x", "writer")),
    "writer binds an allowed topic": ("writer", lambda ch: ch.queue_bind("w.q", "w.topic", "eu.#"), None),
    "writer binds a refused topic": (
        "writer", lambda ch: ch.queue_bind("w.q", "w.topic", "us.#"), topic_refused("us.#", "writer")),
    "writer unbinds a refused topic": (
        "writer", lambda ch: ch.queue_unbind("w.q", "w.topic", "us.#"), topic_refused("us.#", "writer")),
    "writer binds exchanges it may": ("writer", lambda ch: ch.exchange_bind("w.x", "w.topic", "eu.x"), None),
    "writer binds into another's exchange": (
        "writer", lambda ch: ch.exchange_bind("r.x", "w.x", "k"), refused("exchange", "r.x", "writer")),
    "admin binds anything": ("admin", lambda ch: ch.queue_bind("r.q", "r.x"), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_operation(secured, case):
    user, operation, expected = CASES[case]
    connection = pika.BlockingConnection(params(secured, user))
    try:
        channel = connection.channel()
        if expected is None:
            operation(channel)
            # The channel is still usable: the operation was not refused after the fact.
            channel.queue_declare("w.q", passive=True)
            assert channel.is_open
            return
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            operation(channel)
            channel.queue_declare("w.q", passive=True)
        assert (closed.value.reply_code, closed.value.reply_text) == expected
        # A refusal is a channel error: the connection goes on.
        assert connection.channel().is_open
    finally:
        if connection.is_open:
            connection.close()


def refused_open(broker, user: str, vhost: str) -> tuple[int, str]:
    """Opens `vhost` as `user`, expecting a refusal; pika reports it as a probable access denial
    whose argument is the broker's connection.close."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        pika.BlockingConnection(params(broker, user, vhost))
    closed = refused.value.args[0]
    assert isinstance(closed, str) and closed.startswith("ConnectionClosedByBroker: (530) "), closed
    return 530, closed.removeprefix("ConnectionClosedByBroker: (530) ")[1:-1]


def test_a_vhost_without_permissions_is_530(secured):
    assert refused_open(secured, "lodger", VHOST) == (
        530,
        f"NOT_ALLOWED - access to vhost '{VHOST}' refused for user 'lodger'",
    )
    # lodger may open "/", where it has permissions.
    pika.BlockingConnection(params(secured, "lodger", "/")).close()


def test_an_unknown_vhost_is_530(secured):
    assert refused_open(secured, "admin", "nowhere") == (530, "NOT_ALLOWED - vhost nowhere not found")

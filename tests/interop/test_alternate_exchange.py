"""Alternate exchanges with pika: a message its exchange routes nowhere goes to the exchange named
by the `alternate-exchange` argument, counts as routed for `mandatory` (no basic.return), and a
missing alternate or a cycle of alternates ends in a return, as in RabbitMQ."""

import pika
import pika.exceptions
import pytest


def declare_with_alternate(ch, names, kind: str, alternate: str, name: str | None = None) -> str:
    x = name or names.exchange()
    ch.exchange_declare(x, kind, arguments={"alternate-exchange": alternate})
    return x


def queue_bound_to(ch, names, exchange: str, key: str = "") -> str:
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, exchange, routing_key=key)
    return q


def test_unroutable_goes_to_the_alternate_and_is_not_returned(connect, names, drain):
    ch = connect().channel()
    ch.confirm_delivery()
    ae = names.exchange()
    ch.exchange_declare(ae, "fanout")
    unrouted = queue_bound_to(ch, names, ae)
    main = declare_with_alternate(ch, names, "topic", ae)
    orders = queue_bound_to(ch, names, main, "orders.*")
    # Mandatory publishes raise UnroutableError when returned: these must not.
    ch.basic_publish(main, "payments.eu", b"to the alternate", mandatory=True)
    ch.basic_publish(main, "orders.eu", b"to orders", mandatory=True)
    got = drain(ch, unrouted)
    assert [d.body for d in got] == [b"to the alternate"]
    assert (got[0].method.exchange, got[0].method.routing_key) == (main, "payments.eu")
    assert [d.body for d in drain(ch, orders)] == [b"to orders"]


def test_missing_or_empty_alternate_returns_the_message(connect, names):
    ch = connect().channel()
    ch.confirm_delivery()
    empty = names.exchange()
    ch.exchange_declare(empty, "direct")
    for alternate in (empty, names.exchange("missing")):
        main = declare_with_alternate(ch, names, "direct", alternate)
        with pytest.raises(pika.exceptions.UnroutableError) as info:
            ch.basic_publish(main, "k", b"nowhere", mandatory=True)
        (returned,) = info.value.messages
        assert (returned.method.reply_code, returned.method.exchange) == (312, main)


def test_alternates_chain_and_cycles_end(connect, names, drain):
    ch = connect().channel()
    ch.confirm_delivery()
    c = names.exchange()
    ch.exchange_declare(c, "fanout")
    q = queue_bound_to(ch, names, c)
    b = declare_with_alternate(ch, names, "direct", c)
    a = declare_with_alternate(ch, names, "direct", b)
    ch.basic_publish(a, "k", b"two hops", mandatory=True)
    assert [d.body for d in drain(ch, q)] == [b"two hops"]
    x = names.exchange()
    y = declare_with_alternate(ch, names, "direct", x)
    declare_with_alternate(ch, names, "direct", y, name=x)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "k", b"in circles", mandatory=True)
    # The channel carries on.
    ch.basic_publish(c, "", b"after", mandatory=True)
    assert [d.body for d in drain(ch, q)] == [b"after"]

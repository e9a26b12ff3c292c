"""A raw-socket AMQP 0-9-1 client that pipelines: it keeps up to `window` methods outstanding on
one channel and checks each reply against the method it answers, in order (bench/topology.py
--pipeline). pika cannot do this (a BlockingChannel waits for each reply). Only what the
benchmark sends is encoded: the handshake (PLAIN, guest), channel.open, exchange.declare,
queue.declare and queue.bind. Talks to 127.0.0.1 only.
"""
import socket
import struct

FRAME_END = b"\xce"


def short(text):
    data = text.encode()
    return struct.pack("B", len(data)) + data


def frame(channel, payload, kind=1):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(channel, struct.pack(">HH", class_id, method_id) + args)


EMPTY_TABLE = struct.pack(">I", 0)


def queue_declare(name, durable=True, passive=False):
    bits = (1 if passive else 0) | (2 if durable else 0)
    return method(1, 50, 10, struct.pack(">H", 0) + short(name) + bytes([bits]) + EMPTY_TABLE)


def queue_bind(name, exchange, key):
    args = struct.pack(">H", 0) + short(name) + short(exchange) + short(key) + b"\x00"
    return method(1, 50, 20, args + EMPTY_TABLE)


class BrokerClosed(Exception):
    pass


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(0, 10, 10)  # start
        start_ok = EMPTY_TABLE + short("PLAIN") + struct.pack(">I", 12) + b"\x00guest\x00guest"
        self.sock.sendall(method(0, 10, 11, start_ok + short("en_US")))
        tune = self.expect(0, 10, 30)
        channel_max, frame_max, _ = struct.unpack(">HIH", tune[:8])
        self.sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        self.sock.sendall(method(0, 10, 40, short("/") + short("") + b"\x00"))
        self.expect(0, 10, 41)
        self.sock.sendall(method(1, 20, 10, short("")))
        self.expect(1, 20, 11)

    def read(self):
        """The complete method frames in the buffer, (channel, class, method, arguments) each;
        when there are none, reads once from the socket first."""
        got = []
        while not got:
            at, buf = 0, self.buf
            while len(buf) - at >= 7:
                kind, channel, size = struct.unpack_from(">BHI", buf, at)
                if len(buf) - at < size + 8:
                    break
                if kind == 1:
                    class_id, method_id = struct.unpack_from(">HH", buf, at + 7)
                    got.append((channel, class_id, method_id, bytes(buf[at + 11 : at + 7 + size])))
                at += size + 8
            del buf[:at]
            if got:
                return got
            data = self.sock.recv(1 << 20)
            if not data:
                raise BrokerClosed("the broker closed the socket")
            self.buf += data
        return got

    def expect(self, channel, class_id, method_id):
        while True:
            for got in self.read():
                check(got, (channel, class_id, method_id))
                return got[3]

    def exchange_declare(self, name, kind="direct"):
        args = struct.pack(">H", 0) + short(name) + short(kind) + b"\x02" + EMPTY_TABLE
        self.sock.sendall(method(1, 40, 10, args))
        self.expect(1, 40, 11)

    def pipeline(self, requests, window):
        """Sends `requests` ((frame bytes, expected (class, method), expected queue name or
        None)), keeping at most `window` unanswered; returns when all are answered, in order."""
        sent, answered, total = 0, 0, len(requests)
        while answered < total:
            if sent < total and sent - answered < window:
                upto = min(total, answered + window)
                self.sock.sendall(b"".join(r[0] for r in requests[sent:upto]))
                sent = upto
            for got in self.read():
                _, (class_id, method_id), name = requests[answered]
                check(got, (1, class_id, method_id))
                if name is not None and got[3][1 : 1 + got[3][0]].decode() != name:
                    raise AssertionError(f"reply {answered} names another queue than {name}")
                answered += 1
        return answered

    def close(self):
        self.sock.close()


def check(got, wanted):
    channel, class_id, method_id, args = got
    if (channel, class_id, method_id) == wanted:
        return
    if (class_id, method_id) in ((20, 40), (10, 50)):
        code = struct.unpack_from(">H", args)[0]
        text = args[3 : 3 + args[2]].decode(errors="replace")
        raise BrokerClosed(f"closed on channel {channel}: {code} {text}")
    raise AssertionError(f"expected {wanted}, got {(channel, class_id, method_id)}")


def declare_and_bind(port, names, exchange, window):
    """Each of `names` declared durable and bound to `exchange` by its name, pipelined."""
    client = Client(port)
    requests = []
    for name in names:
        requests.append((queue_declare(name), (50, 11), name))
        requests.append((queue_bind(name, exchange, name), (50, 21), None))
    client.pipeline(requests, window)
    client.close()


def missing(port, names, window):
    """How many of `names` a passive declare does not find (0, or 1 at the first missing one:
    the broker closes the channel)."""
    client = Client(port)
    try:
        client.pipeline([(queue_declare(n, passive=True), (50, 11), n) for n in names], window)
        return 0
    except BrokerClosed:
        return 1
    finally:
        client.close()

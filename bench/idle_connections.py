#!/usr/bin/env python3
"""Idle-connection cost of a running AMQP 0-9-1 broker: opens N connections over raw sockets (full
handshake as guest, one channel open each, TCP_NODELAY), then reports the broker's RSS growth per
connection (from /proc/PID/status) and the handshake rate (this one-threaded client may be the limit).
The client's soft RLIMIT_NOFILE is raised to its hard limit first (10,000 connections need more
than the usual 1,024); the broker needs as many descriptors (Warren raises its own soft limit at
start; check RabbitMQ's in /proc/PID/limits).

    python3 bench/idle_connections.py PORT N BROKER_PID
e.g. Warren:   target/release/warren --listen 127.0.0.1:5699 --data-dir /tmp/wd & \
               python3 bench/idle_connections.py 5699 300 $!
     RabbitMQ: python3 bench/idle_connections.py 5673 300 $(pgrep -f 'beam.smp.*ref@localhost')
Only talks to 127.0.0.1. Standard library only.
"""
import resource
import socket
import struct
import sys
import time


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def sstr(s):
    return bytes([len(s)]) + s


def lstr(s):
    return struct.pack(">I", len(s)) + s


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def recv_frame(sock):
    header = b""
    while len(header) < 7:
        chunk = sock.recv(7 - len(header))
        if not chunk:
            raise RuntimeError("broker closed the connection")
        header += chunk
    _, _, size = struct.unpack(">BHI", header)
    body = b""
    while len(body) < size + 1:
        chunk = sock.recv(size + 1 - len(body))
        if not chunk:
            raise RuntimeError("broker closed the connection")
        body += chunk
    return body


def open_connection(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    recv_frame(sock)  # connection.start
    start_ok = lstr(b"") + sstr(b"PLAIN") + lstr(b"\0guest\0guest") + sstr(b"en_US")
    sock.sendall(method(0, 10, 11, start_ok))
    recv_frame(sock)  # connection.tune
    sock.sendall(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
    sock.sendall(method(0, 10, 40, sstr(b"/") + sstr(b"") + b"\x00"))
    recv_frame(sock)  # connection.open-ok
    sock.sendall(method(1, 20, 10, sstr(b"")))
    recv_frame(sock)  # channel.open-ok
    return sock


def main():
    port, count, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if count + 16 > hard:
        sys.exit(f"{count} connections need more descriptors than the hard limit ({hard})")
    before = rss_kib(pid)
    started = time.time()
    sockets = [open_connection(port) for _ in range(count)]
    elapsed = time.time() - started
    time.sleep(1)
    after = rss_kib(pid)
    print(
        f"connections={count} rss_before_kib={before} rss_after_kib={after} "
        f"per_conn_kib={(after - before) / count:.1f} handshakes_per_s={count / elapsed:.0f}"
    )
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()

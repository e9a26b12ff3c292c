#!/usr/bin/env python3
"""The publish cost of de-duplication (issue 20): N messages of 16 bytes, each with its own
`message_id`, published with confirms (1,000 unconfirmed at most) by a raw-socket publisher
(pre-encoded frames, so the client is not the bottleneck), into one queue with and without a
de-duplication window; then the last `--cache-size` keys again (still in the window), all
dropped as duplicates. For each case: the
publish rate (wall clock, until the last confirm) and the broker's CPU time per message
(utime + stime from /proc, before and after).

    .venv/bin/python bench/dedup.py --warren target/release/warren -n 300000 --cache-size 100000

Cases: a transient queue and transient messages (the window in memory only), and a durable
queue with persistent messages (the window in its file, synced with the group commit); for each,
no de-duplication, queue-level and exchange-level (a fanout exchange with the window in front of
the queue). A fresh broker and data directory per case. Talks to 127.0.0.1 only.
"""
import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_client import Client, frame, method, short  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def publishes(n, exchange, routing_key, persistent, offset=0):
    """Pre-encoded basic.publish + header + body frames, message_id = the message's number."""
    out = []
    body = b"x" * 16
    for i in range(offset, offset + n):
        args = struct.pack(">H", 0) + short(exchange) + short(routing_key) + b"\x00"
        flags = 0x1000 | 0x0080  # delivery-mode, message-id
        props = bytes([2 if persistent else 1]) + short(f"id-{i}")
        header = struct.pack(">HHQH", 60, 0, len(body), flags) + props
        out.append(method(1, 60, 40, args) + frame(1, header, 2) + frame(1, body, 3))
    return out


def publish_confirmed(client, frames, base, window=1000):
    """Sends `frames` keeping at most `window` unconfirmed (`base` publishes were confirmed on
    the channel before); returns when all are acked."""
    sent, acked, total = 0, 0, len(frames)
    while acked < total:
        if sent < total and sent - acked < window:
            upto = min(total, acked + window)
            client.sock.sendall(b"".join(frames[sent:upto]))
            sent = upto
        for channel, class_id, method_id, args in client.read():
            if (class_id, method_id) != (60, 80):
                raise AssertionError(f"expected basic.ack, got {class_id}.{method_id}")
            tag, multiple = struct.unpack(">QB", args[:9])
            acked = max(acked, tag - base)


def run_case(warren, n, cache_size, durable, level):
    with tempfile.TemporaryDirectory(prefix="warren-dedup-bench-") as data_dir:
        port = free_port()
        broker = subprocess.Popen(
            [warren, "--management", "off", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            dedup = {"x-message-deduplication": True, "x-cache-size": cache_size}
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
            ch = conn.channel()
            ch.queue_declare("q", durable=durable, arguments=dedup if level == "queue" else None)
            exchange = ""
            if level == "exchange":
                exchange = "dx"
                ch.exchange_declare("dx", "fanout", durable=durable, arguments=dedup)
                ch.queue_bind("q", "dx")
            client = Client(port)
            client.sock.sendall(method(1, 85, 10, b"\x00"))
            client.expect(1, 85, 11)
            results = []
            # New keys, then the last `cache_size` of them again (still in the window).
            rounds = [("new keys", n, 0), ("duplicates", min(n, cache_size), max(0, n - cache_size))]
            base = 0
            for label, count, offset in rounds:
                frames = publishes(count, exchange, "q", durable, offset)
                cpu, started = cpu_seconds(broker.pid), time.monotonic()
                publish_confirmed(client, frames, base)
                elapsed = time.monotonic() - started
                used = cpu_seconds(broker.pid) - cpu
                base += count
                results.append((label, count / elapsed, used / count * 1e6))
                if level == "none":
                    break
            count = ch.queue_declare("q", passive=True).method.message_count
            conn.close()
            client.close()
            return results, count
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=15)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warren", default="target/release/warren")
    parser.add_argument("-n", type=int, default=300_000)
    parser.add_argument("--cache-size", type=int, default=100_000)
    args = parser.parse_args()
    print(f"{args.n} messages of 16 B, confirms (window 1,000), x-cache-size {args.cache_size}")
    print(f"{'case':58} {'msg/s':>10} {'broker CPU us/msg':>18}  queued")
    for durable in (False, True):
        kind = "durable queue, persistent" if durable else "transient queue, transient"
        for level in ("none", "queue", "exchange"):
            results, count = run_case(args.warren, args.n, args.cache_size, durable, level)
            for label, rate, us in results:
                name = f"{kind}, dedup {level}" + ("" if level == "none" else f" ({label})")
                print(f"{name:58} {rate:10,.0f} {us:18.2f}  {count}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Delayed messages (issue 20): N messages held by an `x-delayed-message` exchange, and how
accurately held messages fire.

    .venv/bin/python bench/delayed.py --warren target/release/warren -n 1000000
    .venv/bin/python bench/delayed.py --warren target/release/warren -n 10000000 --probes 0

1. Starts the broker on a fresh data directory; declares a durable `x-delayed-message` exchange
   (`x-delayed-type: direct`), a durable queue bound with key `k` and one bound with key `p`.
2. Publishes N persistent (delivery-mode 2) 16-byte messages with key `k` and an `x-delay`
   spread uniformly over [--min, --max] minutes (default 10 to 70: none fires during the run),
   from --publishers pika connections (one process each) without confirms; each publisher ends
   with one confirmed publish on a second channel of its connection, so when it returns, the
   broker has every message it sent held and synced. The publish rate is N over that time.
3. RSS (`VmRSS`): the peak while publishing, and "held", after 5 s idle; the data directory's
   size on disk (`du`: allocated blocks).
4. Firing accuracy, with the N messages pending (--probes 0: skipped): --probes messages (default 2000) at --rate per
   second (default 200) with key `p` and an `x-delay` uniform in 200..2000 ms, each carrying its
   due time (the wall clock at publish + the delay); a consumer on the `p` queue records
   lateness = receive time - due time. Reports p50, p99 and max in ms (pika's own latency
   included).
5. With --fire-all, each body is its due time, and at the end a consumer takes all N as they
   fire (prefetch 2000, acks every 1000): their lateness, p50/p99/max, and the RSS peak while
   they fire. Use delays that come due soon, e.g. `--min 1 --max 3`.
"""
import argparse
import multiprocessing
import os
import random
import socket
import subprocess
import tempfile
import threading
import time

import pika

from broker_process import Sampler, free_port, status_kib as rss_kib

EXCHANGE = "bench-delayed"
HELD = "bench-delayed-held"
PROBES = "bench-delayed-probes"


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def params(port):
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, blocked_connection_timeout=600)


def publisher(port, count, low_ms, high_ms, seed, stamped):
    """Publishes `count` held messages, then one confirmed publish on a second channel. With
    `stamped`, each body is its due time (wall clock, s), for the lateness of every message."""
    rng = random.Random(seed)
    connection = pika.BlockingConnection(params(port))
    channel = connection.channel()
    # Prebuilt properties (building them per message would measure Python, not the broker).
    delays = [rng.randint(low_ms, high_ms) for _ in range(4096)]
    properties = [pika.BasicProperties(delivery_mode=2, headers={"x-delay": d}) for d in delays]
    body = b"0123456789abcdef"
    publish = channel.basic_publish
    for i in range(count):
        pick = (i * 2654435761) & 4095
        if stamped:
            body = b"%.4f" % (time.time() + delays[pick] / 1000)
        publish(EXCHANGE, "k", body, properties[pick])
        if i % 20_000 == 0:
            connection.process_data_events(0)
    last = connection.channel()
    last.confirm_delivery()
    last.basic_publish(EXCHANGE, "k", b"end", pika.BasicProperties(
        delivery_mode=2, headers={"x-delay": high_ms}))
    connection.close()


def probe(port, count, rate):
    """Publishes probes at `rate`/s and consumes them; returns the lateness of each, in ms."""
    late = []
    done = threading.Event()

    def consume():
        connection = pika.BlockingConnection(params(port))
        channel = connection.channel()

        def on_message(ch, _method, _properties, body):
            late.append((time.time() - float(body)) * 1000)
            if len(late) == count:
                done.set()
                ch.stop_consuming()

        channel.basic_consume(PROBES, on_message, auto_ack=True)
        ready.set()
        channel.start_consuming()
        connection.close()

    ready = threading.Event()
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    ready.wait()
    connection = pika.BlockingConnection(params(port))
    channel = connection.channel()
    rng = random.Random(7)
    began = time.monotonic()
    for i in range(count):
        delay = rng.randint(200, 2000)
        due = time.time() + delay / 1000
        channel.basic_publish(EXCHANGE, "p", repr(due).encode(),
                              pika.BasicProperties(headers={"x-delay": delay}))
        pause = began + (i + 1) / rate - time.monotonic()
        if pause > 0:
            connection.sleep(pause)
    done.wait(timeout=30)
    connection.close()
    return sorted(late)


def drain_held(port, count):
    """Consumes `count` messages of the held queue as they fire; their lateness in ms (the
    publishers' closing messages, whose body is not a time, are left out)."""
    late = []
    connection = pika.BlockingConnection(params(port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2000)
    seen = 0
    for method, _properties, body in channel.consume(HELD, inactivity_timeout=120):
        if method is None:
            break
        seen += 1
        try:
            late.append((time.time() - float(body)) * 1000)
        except ValueError:
            pass
        if seen % 1000 == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if seen == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
            break
    connection.close()
    return sorted(late)


def du(path):
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warren", default="target/release/warren")
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--min", type=float, default=10, help="shortest delay, minutes")
    parser.add_argument("--max", type=float, default=70, help="longest delay, minutes")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--data", help="data directory's parent (default: a new temporary one)")
    parser.add_argument("--fire-all", action="store_true",
                        help="bodies carry their due time; at the end, consume all N as they fire "
                             "and report their lateness (use short --min/--max)")
    args = parser.parse_args()
    root = args.data or tempfile.mkdtemp(prefix="warren-delayed-")
    data = os.path.join(root, "data")
    port = free_port()
    log = open(os.path.join(root, "warren.log"), "ab")
    broker = subprocess.Popen(
        [args.warren, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--management", "off"],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": os.environ.get("BENCH_LOG", "warn")},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise SystemExit("the broker did not start")
                time.sleep(0.05)
        connection = pika.BlockingConnection(params(port))
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, "x-delayed-message", durable=True,
                                 arguments={"x-delayed-type": "direct"})
        for queue, key in ((HELD, "k"), (PROBES, "p")):
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, EXCHANGE, routing_key=key)
        connection.close()
        time.sleep(1)
        idle = rss_kib(broker.pid)
        low, high = int(args.min * 60_000), int(args.max * 60_000)
        sampler = Sampler(broker.pid)
        share = [args.n // args.publishers + (i < args.n % args.publishers)
                 for i in range(args.publishers)]
        began = time.monotonic()
        workers = [multiprocessing.Process(target=publisher,
                                           args=(port, count, low, high, i, args.fire_all))
                   for i, count in enumerate(share)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
            if worker.exitcode != 0:
                raise SystemExit(f"a publisher failed ({worker.exitcode})")
        took = time.monotonic() - began
        peak = sampler.stop()
        time.sleep(5)
        held = rss_kib(broker.pid)
        disk = du(data)
        print(f"held {args.n:,} persistent 16 B messages (x-delay {args.min:g} to {args.max:g} min) "
              f"in {took:.1f} s: {args.n / took:,.0f} msg/s from {args.publishers} pika publishers, "
              f"synced")
        print(f"RSS: idle {mib(idle)}, peak while publishing {mib(peak)}, held {mib(held)}; "
              f"data directory {disk / 1024:.1f} MiB on disk")
        if args.probes:
            late = probe(port, args.probes, args.rate)
            if len(late) < args.probes:
                raise SystemExit(f"only {len(late)} of {args.probes} probes arrived")
            pick = lambda q: late[min(len(late) - 1, int(q * len(late)))]
            print(f"firing, {args.probes} probes at {args.rate:g}/s with {args.n:,} pending: "
                  f"late p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {late[-1]:.1f} ms "
                  f"(min {late[0]:.1f} ms)")
            print(f"RSS after the probes: {mib(rss_kib(broker.pid))}")
        if args.fire_all:
            sampler = Sampler(broker.pid)
            late = drain_held(port, args.n + args.publishers)
            pick = lambda q: late[min(len(late) - 1, int(q * len(late)))]
            print(f"fired all {len(late):,} (x-delay {args.min:g} to {args.max:g} min): late p50 "
                  f"{pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {late[-1]:.1f} ms; "
                  f"RSS peak while firing {mib(sampler.stop())}")
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()

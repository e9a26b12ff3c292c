#!/usr/bin/env python3
"""Durable topology at scale (issue 19): declares N durable queues, each bound to a durable
direct exchange, against a fresh broker; reports declares/s (a queue.declare-ok and its bind-ok
each count once per queue), the broker's RSS after, and the time from a restart (after kill -9)
until it listens again with everything recovered.

    .venv/bin/python bench/topology.py --warren target/release/warren -n 100000 [--connections 1]

pika's channels wait for each reply (no pipelining on one channel), so one connection declares
one queue at a time; --connections C splits the queues over C connections (threads).

    .venv/bin/python bench/topology.py --warren target/release/warren -n 100000 --pipeline 1000

--pipeline W declares from one connection with a raw-socket client (bench/pipeline_client.py)
that keeps up to W methods outstanding and checks every reply, in order; the check after the
restart is pipelined too, over every queue, and its time is reported (restart to all there).
"""
import argparse
import os
import shutil
import signal
import tempfile
import threading
import time

import pika

import pipeline_client
from broker_process import free_port, start, status_kib


def rss_mb(pid):
    return status_kib(pid) / 1024


def declare(port, names):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    for name in names:
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "topology", routing_key=name)
    connection.close()


def missing_queues(port, names):
    """How many of `names` a passive declare does not find."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel, missing = connection.channel(), 0
    for name in names:
        try:
            channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            missing += 1
            channel = connection.channel()
    connection.close()
    return missing


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warren", default="target/release/warren")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=0, metavar="WINDOW")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="warren-topology-")
    data = os.path.join(root, "data")
    os.makedirs(data)
    port = free_port()
    process, _ = start(args.warren, data, port, 1)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        connection.channel().exchange_declare("topology", "direct", durable=True)
        connection.close()
        names = [f"queue-{i}" for i in range(args.n)]
        parts = [names[i :: args.connections] for i in range(args.connections)]
        began = time.monotonic()
        if args.pipeline:
            target = lambda part: pipeline_client.declare_and_bind(  # noqa: E731
                port, part, "topology", args.pipeline
            )
        else:
            target = lambda part: declare(port, part)  # noqa: E731
        threads = [threading.Thread(target=target, args=(part,)) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - began
        rss = rss_mb(process.pid)
        fds = len(os.listdir(f"/proc/{process.pid}/fd"))
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed = time.monotonic()
        process, restart = start(args.warren, data, port, 2)
        all_there = ""
        if args.pipeline:
            missing = pipeline_client.missing(port, names, args.pipeline)
            all_there = f", to all {args.n} queues found {time.monotonic() - killed:.2f} s"
        rss_restarted = rss_mb(process.pid)
        if not args.pipeline:
            missing = missing_queues(port, names[:: max(1, args.n // 1000)] + names[-1:])
        print(
            f"n={args.n} connections={args.connections} pipeline={args.pipeline} declare+bind: {took:.1f} s, "
            f"{args.n / took:.0f} queues/s ({2 * args.n / took:.0f} declares+binds/s); "
            f"RSS after {rss:.1f} MB, {fds} open files; restart to listening {restart:.2f} s"
            f"{all_there} "
            f"(RSS after restart {rss_restarted:.1f} MB); sampled queues missing after restart: "
            f"{missing}"
        )
    finally:
        process.kill()
        process.wait()
        shutil.copy(os.path.join(root, "warren.log"), "/tmp/warren-topology-last.log")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

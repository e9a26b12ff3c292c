#!/usr/bin/env python3
"""A large backlog in one durable queue (issue 19): publishes N persistent 16-byte messages with
confirms into one durable queue that nobody consumes, and reports what the broker holds in RAM
for them; then kill -9, a restart (time to listening, time until the queue answers with all N,
RSS after), and optionally a drain of the whole backlog (rate, RSS, nothing missing).

    .venv/bin/python bench/backlog.py --warren target/release/warren -n 100000000 [--drain]

The publisher is warren-perf's raw-frame one (`--raw --persistent --durable --confirm 1000
-C N -y 0`): it sends as fast as confirms come back, 1,000 unconfirmed at most. RSS is
`VmRSS` from /proc, sampled every 0.5 s: "peak" is the largest sample while publishing, "held"
is after publishing, once the broker has been idle for 5 s. --config FILE passes a
configuration file to the broker (e.g. to set `queue_memory_window`).

The drain (--drain) is warren-perf consuming only (`-x 0 -y 1 --raw-consume --qos 1000
--multi-ack-every 100`), stopped once a passive declare finds the queue empty; the count it
received must be N.

Against RabbitMQ (--rabbitmq-uri URI --rabbitmq-pid PID of its beam.smp) it publishes the same
and reports the node's RSS; the restart and drain are Warren's only.
"""
import argparse
import json
import os
import signal
import subprocess
import tempfile
import time

import pika

from broker_process import Sampler, free_port, start, status_kib

QUEUE = "backlog"


def mb(kib):
    return f"{kib / 1024:.1f} MB"


def depth(port):
    """The queue's ready count (a passive declare)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        return connection.channel().queue_declare(QUEUE, passive=True).method.message_count
    finally:
        connection.close()


def perf(args, uri, extra):
    command = [args.perf, "--uri", uri, "--queue-pattern", QUEUE, "--json"] + extra
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def publish(args, uri, pid):
    """Publishes N persistent messages with confirms; returns (msg/s, peak RSS KiB)."""
    sampler = Sampler(pid)
    run = perf(args, uri, ["--raw", "--persistent", "--durable", "--confirm", "1000",
                           "-C", str(args.n), "-y", "0"])
    out, _ = run.communicate()
    peak = sampler.stop()
    result = json.loads(out)
    if result["confirmed"] != args.n:
        raise SystemExit(f"only {result['confirmed']} of {args.n} confirmed: {result['errors']}")
    return result["rates_msg_per_s"]["confirm"]["overall"], peak


def held(pid):
    """VmRSS once the broker has settled (5 s after the last activity)."""
    time.sleep(5)
    return status_kib(pid, "VmRSS")


def drain(args, port, pid):
    """Consumes the whole backlog; returns (received, seconds, peak RSS KiB)."""
    sampler = Sampler(pid)
    uri = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
    began = time.monotonic()
    run = perf(args, uri, ["--predeclared", "-x", "0", "-y", "1", "--raw-consume", "--qos", "1000",
                           "--multi-ack-every", "100", "-z", "86400"])
    while depth(port) > 0:
        if run.poll() is not None:
            raise SystemExit("the consumer stopped before the queue was empty")
        time.sleep(1)
    took = time.monotonic() - began
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate()
    return json.loads(out)["received"], took, sampler.stop()


def rabbitmq(args):
    print(f"RabbitMQ ({args.rabbitmq_uri}): RSS before {mb(status_kib(args.rabbitmq_pid, 'VmRSS'))}")
    rate, peak = publish(args, args.rabbitmq_uri, args.rabbitmq_pid)
    print(f"published {args.n:,} at {rate:,.0f} msg/s; RSS peak {mb(peak)}, "
          f"held {mb(held(args.rabbitmq_pid))}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warren", default="target/release/warren")
    parser.add_argument("--perf", default="target/release/warren-perf")
    parser.add_argument("-n", type=int, default=10_000_000)
    parser.add_argument("--config", help="configuration file for the broker")
    parser.add_argument("--data", help="data directory's parent (default: a new temporary one)")
    parser.add_argument("--drain", action="store_true", help="consume the backlog at the end")
    parser.add_argument("--rabbitmq-uri")
    parser.add_argument("--rabbitmq-pid", type=int)
    args = parser.parse_args()
    if args.rabbitmq_uri:
        return rabbitmq(args)
    root = args.data or tempfile.mkdtemp(prefix="warren-backlog-")
    data = os.path.join(root, "data")
    os.makedirs(data, exist_ok=False)
    port = free_port()
    uri = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
    process, _ = start(args.warren, data, port, 1, args.config)
    try:
        time.sleep(1)
        idle = status_kib(process.pid, "VmRSS")
        rate, peak = publish(args, uri, process.pid)
        after = held(process.pid)
        queued = depth(port)
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
        print(f"published {args.n:,} persistent 16 B messages at {rate:,.0f} msg/s (confirmed)")
        print(f"queued {queued:,}; data directory {disk / 2**30:.2f} GiB")
        print(f"RSS: idle {mb(idle)}, peak while publishing {mb(peak)}, held {mb(after)}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        process, restart = start(args.warren, data, port, 2, args.config)
        began = time.monotonic()
        recovered = depth(port)
        answered = restart + time.monotonic() - began
        print(f"kill -9 and restart: listening after {restart:.2f} s, the queue answered with "
              f"{recovered:,} after {answered:.2f} s; RSS {mb(status_kib(process.pid, 'VmRSS'))}, "
              f"held {mb(held(process.pid))}")
        if recovered != args.n:
            raise SystemExit(f"recovered {recovered:,} of {args.n:,}")
        if args.drain:
            received, took, drain_peak = drain(args, port, process.pid)
            print(f"drained {received:,} in {took:.1f} s ({received / took:,.0f} msg/s); "
                  f"RSS peak {mb(drain_peak)}")
            if received != args.n:
                raise SystemExit(f"received {received:,} of {args.n:,}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()
        if not args.data:
            subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What a broker with many idle queues costs when nothing happens (issue 19: "100,000 idle queues
cost ~nothing"): declares N durable queues once into a data directory kept for later runs, then
starts the broker on it (management API on, so its rate sampler runs), waits for it to settle and
measures its CPU time over S seconds with `perf stat -e task-clock -p PID sleep S`.

    .venv/bin/python bench/idle_queues.py --warren target/release/warren -n 100000 \\
        --data /tmp/idle-queues-100k [--connections 8] [--seconds 30] [--settle 10]

The data directory is filled only if it has no `.declared-N` marker: the same queues serve every
binary compared (a restart recovers them). Only talks to 127.0.0.1.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pika


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(warren, data, port, http):
    """Starts the broker; returns it once it logged that it listens (recovery done)."""
    path = os.path.join(data, "..", "warren-idle-queues.log")
    with open(path, "wb"):
        pass
    log = open(path, "ab")
    process = subprocess.Popen(
        [warren, "--listen", f"127.0.0.1:{port}", "--data-dir", data,
         "--management", f"127.0.0.1:{http}"],
        stdout=log, stderr=log,
        env={**os.environ, "RUST_LOG": os.environ.get("BENCH_LOG", "warn,warren::server=info")},
    )
    started = time.monotonic()
    while True:
        with open(path, "rb") as f:
            if b"listening for AMQP" in f.read():
                return process, time.monotonic() - started
        if process.poll() is not None:
            raise SystemExit(f"warren exited: {process.returncode}")
        time.sleep(0.01)


def declare(port, names):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    for name in names:
        channel.queue_declare(name, durable=True)
    connection.close()


def fill(args, port, http):
    process, _ = start(args.warren, args.data, port, http)
    try:
        names = [f"idle-{i:06d}" for i in range(args.n)]
        parts = [names[i :: args.connections] for i in range(args.connections)]
        began = time.monotonic()
        threads = [threading.Thread(target=declare, args=(port, part)) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - began
        print(f"declared {args.n} durable queues in {took:.0f} s ({args.n / took:.0f}/s)")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


def task_clock(pid, seconds):
    """CPU milliseconds the process used over `seconds` (perf's task-clock)."""
    out = subprocess.run(
        ["perf", "stat", "-e", "task-clock", "-p", str(pid), "sleep", str(seconds)],
        capture_output=True, text=True, check=True,
    ).stderr
    match = re.search(r"([\d.,]+)\s+msec task-clock", out)
    if not match:
        raise SystemExit(f"no task-clock in perf's output:\n{out}")
    return float(match.group(1).replace(",", ""))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warren", default="target/release/warren")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--data", required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--settle", type=int, default=10)
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    port, http = free_port(), free_port()
    marker = os.path.join(args.data, f".declared-{args.n}")
    if not os.path.exists(marker):
        fill(args, port, http)
        open(marker, "w").close()
    process, recovered = start(args.warren, args.data, port, http)
    try:
        time.sleep(args.settle)
        ms = task_clock(process.pid, args.seconds)
        print(
            f"queues={args.n} recovered_in={recovered:.1f}s idle_cpu={ms:.0f} ms over "
            f"{args.seconds} s = {100 * ms / (args.seconds * 1000):.2f}% of a core; "
            f"rss={rss_mb(process.pid):.0f} MB"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


if __name__ == "__main__":
    main()

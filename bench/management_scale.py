#!/usr/bin/env python3
"""How fast the management API answers with many queues (issue 18: "answers stay fast with
100,000 queues"). Declares N queues on a running broker over AMQP (pika), puts a message into
every 100th, then times each request R times and prints the median and the 90th percentile.

  target/release/warren --listen 127.0.0.1:5790 --data-dir /tmp/wscale --management 127.0.0.1:15790 &
  .venv/bin/python bench/management_scale.py --amqp 5790 --http 15790 --queues 100000

Works against RabbitMQ with its management plugin too (same requests, guest/guest)."""
import argparse, base64, json, statistics, time, urllib.error, urllib.request

import pika


def request(base, path, auth):
    req = urllib.request.Request(base + path, headers={"Authorization": auth})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - started, body


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--amqp", type=int, default=5672)
    parser.add_argument("--http", type=int, default=15672)
    parser.add_argument("--queues", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--skip-declare", action="store_true")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.http}"
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    if not args.skip_declare:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", args.amqp))
        channel = connection.channel()
        started = time.perf_counter()
        for i in range(args.queues):
            channel.queue_declare(f"scale-{i:06d}")
            if i % 100 == 0:
                channel.basic_publish("", f"scale-{i:06d}", b"x" * 16)
        took = time.perf_counter() - started
        print(f"declared {args.queues} queues in {took:.1f} s ({args.queues / took:,.0f}/s)")
        connection.close()
    middle = f"scale-{args.queues // 2:06d}"
    paths = [
        "/api/overview",
        "/api/queues?page=1&page_size=100",
        "/api/queues/%2F?page=500&page_size=100",
        "/api/queues?page=1&page_size=100&name=scale-0999",
        "/api/queues?page=1&page_size=100&sort=messages&sort_reverse=true",
        f"/api/queues/%2F/{middle}",
        "/api/exchanges?page=1&page_size=100",
        "/metrics",
    ]
    print(f"{'request':<66} {'median ms':>10} {'p90 ms':>8} {'bytes':>10}")
    for path in paths:
        times, size = [], 0
        try:
            for _ in range(args.runs):
                took, body = request(base, path, auth)
                times.append(took * 1000)
                size = len(body)
        except urllib.error.HTTPError as e:
            print(f"{path:<66} {'HTTP ' + str(e.code):>10}")
            continue
        times.sort()
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        print(f"{path:<66} {statistics.median(times):>10.1f} {p90:>8.1f} {size:>10,}")
    _, body = request(base, "/api/nodes", auth)
    node = json.loads(body)[0]
    print(f"broker memory (mem_used): {node.get('mem_used', 0) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

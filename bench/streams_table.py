#!/usr/bin/env python3
"""The markdown tables of a bench/streams.sh run: medians over the repetitions of each scenario
and broker, from the warren-perf --json files (`<scenario>-<broker>-<rep>.json`, with `.meta`)
in the output directory, and the strace window of the catch-up (`.strace-c`, `.strace-reads`).

    python3 bench/streams_table.py OUT_DIR

Standard library only.
"""
import glob
import json
import os
import re
import statistics
import sys

BROKERS = [("warren", "Warren"), ("rabbit", "RabbitMQ")]


def load(out, scenario, broker):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, f"{scenario}-{broker}-*.json"))):
        base = path[: -len(".json")]
        run = {"base": base}
        try:
            with open(path) as f:
                run["r"] = json.load(f)
        except (OSError, ValueError):
            continue
        try:
            with open(base + ".meta") as f:
                run["meta"] = json.load(f)
        except (OSError, ValueError):
            run["meta"] = {}
        runs.append(run)
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate(v):
    return "–" if v is None else f"{v:,.0f}"


def num(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:,.0f} MiB"


def latency(us):
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


def clean(r):
    return (
        r["drained"]
        and r["lost"] == 0
        and r["duplicates"] == 0
        and r["misrouted"] == 0
        and not r["errors"]
    )


def accepted(r):
    rates = r["rates_msg_per_s"]
    return rates.get("accepted") or rates["publish"]["overall"]


def fanout(out):
    sizes = sorted(
        {int(m.group(1)) for p in glob.glob(os.path.join(out, "fanout*-*.json"))
         if (m := re.match(r"fanout(\d+)-", os.path.basename(p)))}
    )
    if not sizes:
        return
    print("### Fan-out: 1 producer → 1 stream → 10 consumers from \"next\"\n")
    print("| size | broker | publish msg/s | deliveries msg/s (10×) | per consumer | latency p50 / p99 "
          "| broker µs/msg published | broker cores | peak RSS | clean runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for key, title in BROKERS:
            runs = [x["r"] for x in load(out, f"fanout{size}", key)]
            if not runs:
                continue
            consume = med([r["rates_msg_per_s"]["consume"]["overall"] for r in runs])
            consumers = runs[0]["settings"]["consumers"]
            print(
                f"| {size} B | {title} | {rate(med([accepted(r) for r in runs]))} | {rate(consume)} "
                f"| {rate(consume / consumers if consume else None)} "
                f"| {latency(med([r['latency_us']['p50'] for r in runs]))} / "
                f"{latency(med([r['latency_us']['p99'] for r in runs]))} "
                f"| {num(med([r['cpu']['broker_us_per_msg'] for r in runs]))} "
                f"| {num(med([r['cpu']['broker_cores'] for r in runs]))} "
                f"| {mib(med([r['cpu']['broker_peak_rss_kib'] for r in runs]))} "
                f"| {sum(clean(r) for r in runs)}/{len(runs)} |"
            )
    print()


def strace_counts(path):
    """syscall -> calls, from `strace -c` output."""
    calls = {}
    try:
        text = open(path).read()
    except OSError:
        return calls
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return calls


def progress_messages(base, lines):
    """Messages received in the progress lines [a, b) (one line a second)."""
    a, b = lines
    try:
        progress = open(base + ".progress").read().splitlines()
    except OSError:
        return None
    total = 0.0
    for line in progress[a:b]:
        m = re.search(r"received\s+([\d,]+) msg/s", line)
        if m:
            total += float(m.group(1).replace(",", ""))
    return total or None


def read_sizes(path):
    """syscall -> (calls, bytes returned, median size) from an `strace -e trace=...` log."""
    sizes = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return {}
    for line in lines:
        m = re.match(r"^\d+\s+(\w+)\(.*\)\s+=\s+(-?\d+)", line)
        if m:
            sizes.setdefault(m.group(1), []).append(int(m.group(2)))
    return {k: (len(v), sum(max(x, 0) for x in v), statistics.median(v)) for k, v in sizes.items()}


def catchup(out):
    rows = {key: load(out, "catchup", key) for key, _ in BROKERS}
    if not any(rows.values()):
        return
    count = next(x for v in rows.values() for x in v)["r"]["settings"]["count"]
    print(f"### Catch-up: {count:,} × 16 B published (confirms), then read from \"first\" by one consumer\n")
    print("| broker | publish msg/s | catch-up read msg/s | broker µs/msg read | broker cores reading "
          "| RSS after publish | peak RSS reading | disk | read syscalls/msg (/proc io) "
          "| bytes/read syscall | clean runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, title in BROKERS:
        runs = rows[key]
        if not runs:
            continue
        unstraced = [x for x in runs if not x["meta"].get("straced")] or runs
        rs = [x["r"] for x in runs]
        dp = [r.get("drain_phase") or {} for r in rs]
        cores = [
            (d.get("broker_seconds") / r["consume_seconds"]) if d.get("broker_seconds") and r["consume_seconds"] else None
            for d, r in zip(dp, rs)
        ]
        disk = med([x["meta"].get("disk_bytes") for x in runs])
        print(
            f"| {title} | {rate(med([accepted(x['r']) for x in unstraced]))} "
            f"| {rate(med([x['r']['rates_msg_per_s']['consume']['overall'] for x in unstraced]))} "
            f"| {num(med([d.get('broker_us_per_msg') for d in dp]))} | {num(med(cores))} "
            f"| {mib(med([r['memory']['rss_after_publish_kib'] for r in rs]))} "
            f"| {mib(med([d.get('rss_peak_kib') for d in dp]))} "
            f"| {'–' if disk is None else f'{disk / 2**20:,.0f} MiB'} "
            f"| {num(med([d.get('syscr_per_msg') for d in dp]), '{:.4f}')} "
            f"| {num(med([d.get('rchar_per_syscr') for d in dp]), '{:,.0f}')} "
            f"| {sum(clean(r) for r in rs)}/{len(rs)} |"
        )
    print()
    for x in rows.get("warren", []):
        base = x["base"]
        try:
            window = json.load(open(base + ".strace-window"))
        except (OSError, ValueError):
            continue
        print(f"strace during the read ({os.path.basename(base)}; ptrace slows the broker, so "
              "per-message figures, not rates):\n")
        msgs = progress_messages(base, window["count_lines"])
        calls = strace_counts(base + ".strace-c")
        total = sum(calls.values())
        print(f"- `strace -f -c`, ~{msgs or 0:,.0f} messages delivered in the window: "
              f"{total:,} syscalls, {num(total / msgs if msgs else None, '{:.4f}')} per message")
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
        print("  - " + ", ".join(
            f"{name} {n:,} ({num(n / msgs if msgs else None, '{:.4f}')}/msg)" for name, n in top))
        msgs = progress_messages(base, window["reads_lines"])
        sizes = read_sizes(base + ".strace-reads")
        print(f"- reads (`strace -f -e trace=read,pread64,readv,preadv,recvfrom,recvmsg`, "
              f"~{msgs or 0:,.0f} messages delivered in the window):")
        for name, (n, total_bytes, median_size) in sorted(sizes.items()):
            print(f"  - {name}: {n:,} calls, {total_bytes / 2**20:,.1f} MiB, median {median_size:,.0f} B "
                  f"per call, {num(n / msgs if msgs else None, '{:.5f}')} per message")
        print()


def main():
    out = sys.argv[1]
    try:
        print("```\n" + open(os.path.join(out, "run.info")).read().strip() + "\n```\n")
    except OSError:
        pass
    fanout(out)
    catchup(out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The markdown table of a bench/compare.sh run: medians over the repetitions of each scenario and
broker, from the warren-perf --json files (`<scenario>-<broker>-<rep>.json`) in the output directory.

    python3 bench/compare_table.py OUT_DIR [SCENARIO...]

Standard library only.
"""
import json
import os
import statistics
import sys

TITLES = {
    "a": "(a) 1p→1c 16 B auto-ack",
    "b": "(b) 1p→1c confirms + manual acks",
    "c": "(c) 1 KiB persistent, durable, confirms",
    "d": "(d) fanout 10 queues, 10 consumers (consume = deliveries)",
    "e": "(e) topic, 1000 bindings",
    "f": "(f) 1M backlog, then drain",
    "g": "(g) 1000 connections × 1 msg/s",
    "h": "(h) latency at 1000 msg/s",
}
BROKERS = [("warren", "Warren"), ("rabbit", "RabbitMQ")]


def load(out, scenario, broker):
    runs = []
    rep = 1
    while True:
        base = os.path.join(out, f"{scenario}-{broker}-{rep}")
        if not os.path.exists(base + ".json"):
            break
        run = {"rep": rep}
        try:
            with open(base + ".json") as f:
                run["r"] = json.load(f)
        except (OSError, ValueError):
            run["r"] = None
        try:
            with open(base + ".meta") as f:
                run["meta"] = json.load(f)
        except (OSError, ValueError):
            run["meta"] = {}
        runs.append(run)
        rep += 1
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate(v):
    if v is None:
        return "–"
    return f"{v:,.0f}"


def latency(us):
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


def num(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def ratio(w, r):
    if w is None or r is None or r == 0:
        return "–"
    return f"{w / r:.2f}×"


def summarise(scenario, runs):
    ok = [x["r"] for x in runs if x["r"]]
    get = lambda f: med([f(r) for r in ok])  # noqa: E731
    clean = sum(
        1
        for r in ok
        if r["drained"] and r["lost"] == 0 and r["duplicates"] == 0 and r["misrouted"] == 0
        and not r["errors"]
    )
    not_drained = sum(1 for r in ok if not r["drained"])
    s = {
        "runs": len(runs),
        "parsed": len(ok),
        "clean": clean,
        "not_drained": not_drained,
        "errors": sorted({e[:160] for r in ok for e in r["errors"]}),
        # Publish: messages / (start -> the broker's close-ok to the last producer, i.e. every
        # publish processed); without a close-ok, messages / (start -> last write).
        "publish": get(
            lambda r: r["rates_msg_per_s"].get("accepted")
            or r["rates_msg_per_s"]["publish"]["overall"]
        ),
        # Consume: deliveries / (start, or for (f) the consumers' start -> last delivery).
        "consume": get(lambda r: r["rates_msg_per_s"]["consume"]["overall"]),
        "publish_median": get(lambda r: r["rates_msg_per_s"]["publish"]["median"]),
        "consume_median": get(lambda r: r["rates_msg_per_s"]["consume"]["median"]),
        "p50": get(lambda r: r["latency_us"]["p50"] if r["latency_us"]["samples"] else None),
        "p99": get(lambda r: r["latency_us"]["p99"] if r["latency_us"]["samples"] else None),
        "cpu": get(lambda r: r["cpu"]["broker_us_per_msg"]),
        "tool": get(lambda r: r["cpu"]["tool_us_per_msg"]),
        "peak_rss": get(lambda r: (r["cpu"]["broker_peak_rss_kib"] or 0) / 1024 or None),
        "machine": get(lambda r: (r["cpu"]["machine_busy"] or 0) * 100),
        "before": med([x["meta"].get("busy_before_pct") for x in runs]),
        "client_bound": sum(1 for r in ok if r["bottleneck"].startswith("client-bound")),
        "per_conn": get(lambda r: r.get("memory", {}).get("per_connection_kib")),
        "backlog_rss": get(
            lambda r: (r.get("memory", {}).get("rss_after_publish_kib") or 0) / 1024 or None
        ),
        "backlog_bytes": get(
            lambda r: (
                (r["memory"]["rss_after_publish_kib"] - r["memory"]["rss_before_connect_kib"])
                * 1024
                / max(r["sent"], 1)
            )
            if r.get("memory", {}).get("rss_after_publish_kib") is not None
            and r["memory"].get("rss_before_connect_kib") is not None
            else None
        ),
        "sent": get(lambda r: r["sent"]),
    }
    notes = []
    if scenario == "f" and s["backlog_rss"] is not None:
        notes.append(
            f"RSS with the backlog queued {s['backlog_rss']:.0f} MiB"
            f" (~{s['backlog_bytes']:.0f} B/msg)"
        )
    if scenario == "g" and s["per_conn"] is not None:
        notes.append(f"**{s['per_conn']:.1f} KiB per connection**")
    if s["not_drained"]:
        notes.append(f"**not drained in {s['not_drained']}/{s['parsed']} runs**")
    if s["client_bound"]:
        notes.append(f"client-bound in {s['client_bound']}/{s['parsed']}")
    if s["parsed"] < s["runs"]:
        notes.append(f"{s['runs'] - s['parsed']} runs without a result")
    s["notes"] = notes
    return s


def main():
    out = sys.argv[1]
    scenarios = sys.argv[2:] or list("abcdefgh")
    info = {}
    try:
        with open(os.path.join(out, "run.info")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                info[k] = v
    except OSError:
        pass
    print(
        f"Warren {info.get('commit', '?')}"
        + (
            f" (+{info['dirty']} uncommitted files)"
            if info.get("dirty", "0") != "0" and not info.get("commit", "").startswith("binary")
            else ""
        )
        + f", RabbitMQ {info.get('rabbitmq', '?')}; {info.get('repeat', '?')} runs each"
        f" ({info.get('duration', '?')} s), medians; {info.get('cpu', '')}"
    )
    print()
    print(
        "| scenario | broker | publish msg/s | consume msg/s | latency p50 | p99 "
        "| broker CPU µs/msg | peak RSS MiB | tool µs/msg | machine busy % (before) "
        "| clean runs | notes |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    errors = []
    for scenario in scenarios:
        rows = {}
        for key, name in BROKERS:
            runs = load(out, scenario, key)
            if not runs:
                continue
            s = summarise(scenario, runs)
            rows[key] = s
            print(
                f"| {TITLES[scenario]} | {name} | {rate(s['publish'])} | {rate(s['consume'])} "
                f"| {latency(s['p50'])} | {latency(s['p99'])} | {num(s['cpu'])} "
                f"| {num(s['peak_rss'], '{:.0f}')} | {num(s['tool'])} "
                f"| {num(s['machine'], '{:.0f}')} ({num(s['before'], '{:.0f}')}) "
                f"| {s['clean']}/{s['runs']} | {'; '.join(s['notes'])} |"
            )
            errors += [f"{scenario} {name}: {e}" for e in s["errors"]]
        if "warren" in rows and "rabbit" in rows:
            w, r = rows["warren"], rows["rabbit"]
            extra = ""
            if scenario == "g":
                extra = f"per connection {ratio(w['per_conn'], r['per_conn'])}"
            print(
                f"| {TITLES[scenario]} | **W/R** | {ratio(w['publish'], r['publish'])} "
                f"| {ratio(w['consume'], r['consume'])} | {ratio(w['p50'], r['p50'])} "
                f"| {ratio(w['p99'], r['p99'])} | {ratio(w['cpu'], r['cpu'])} "
                f"| {ratio(w['peak_rss'], r['peak_rss'])} | | | | {extra} |"
            )
    if errors:
        print()
        print("Errors reported by warren-perf:")
        for e in errors:
            print(f"- {e}")


if __name__ == "__main__":
    main()

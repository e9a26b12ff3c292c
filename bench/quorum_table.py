#!/usr/bin/env python3
"""The markdown tables of a bench/quorum.sh run: medians over the repetitions of each scenario,
from the warren-perf --json files (`<scenario>-<rep>.json`), the script's `.meta` files (the
brokers' pids, CPU ticks before and after, VmHWM) and, for the failover runs, warren-perf's
per-second progress lines (`.progress`).

    python3 bench/quorum_table.py OUT_DIR

Standard library only.
"""
import glob
import json
import os
import re
import statistics
import sys

THROUGHPUT = [
    ("warren-quorum", "quorum queue, 3 nodes", "Warren"),
    ("rabbit-quorum", "quorum queue, 3 nodes", "RabbitMQ"),
    ("warren-durable", "durable queue, 1 node", "Warren"),
    ("rabbit-durable", "durable queue, 1 node", "RabbitMQ"),
]
BROKERS = [("warren", "Warren"), ("rabbit", "RabbitMQ")]
PROGRESS = re.compile(
    r"^\s*(\d+)s\s+sent\s+([\d,]+) msg/s\s+confirmed\s+([\d,]+) msg/s\s+received\s+([\d,]+) msg/s"
)


def load(out, name):
    """The runs of `name` (e.g. warren-quorum, failover-warren), in repetition order."""
    runs = []
    paths = glob.glob(os.path.join(out, f"{name}-*.meta"))
    for path in sorted(paths, key=lambda p: int(re.search(r"-(\d+)\.meta$", p).group(1))):
        base = path[: -len(".meta")]
        run = {"base": base, "r": None}
        try:
            with open(path) as f:
                run["meta"] = json.load(f)
        except (OSError, ValueError):
            run["meta"] = {}
        try:
            with open(base + ".json") as f:
                run["r"] = json.load(f)
        except (OSError, ValueError):
            pass
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


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def clean(r):
    return (
        r is not None
        and r["drained"]
        and r["lost"] == 0
        and r["duplicates"] == 0
        and r["misrouted"] == 0
        and not r["errors"]
    )


def confirmed_rate(r):
    """Messages confirmed ÷ (start → the broker's close-ok to the producer, which comes after the
    last confirm); without a close-ok, ÷ (start → the last publish)."""
    if r.get("accepted_seconds"):
        return r["confirmed"] / r["accepted_seconds"]
    return r["rates_msg_per_s"]["confirm"]["overall"]


def node_cpu_seconds(meta, after="cpu_ticks_after"):
    """CPU seconds of each broker process over the run, or None where unknown."""
    tck = meta.get("clk_tck") or 100
    before, end = meta.get("cpu_ticks_before") or [], meta.get(after) or []
    if not before or len(before) != len(end):
        return None
    return [None if a is None or b is None else (b - a) / tck for a, b in zip(before, end)]


def run_figures(run):
    r, meta = run["r"], run["meta"]
    if r is None:
        return None
    cpu = node_cpu_seconds(meta)
    total = sum(cpu) if cpu and None not in cpu else None
    hwm = meta.get("vmhwm_kib") or []
    sent = r["sent"] or None
    return {
        "publish": confirmed_rate(r),
        "consume": r["rates_msg_per_s"]["consume"]["overall"],
        "p50": r["latency_us"]["p50"] if r["latency_us"]["samples"] else None,
        "p99": r["latency_us"]["p99"] if r["latency_us"]["samples"] else None,
        "us_per_msg": total * 1e6 / sent if total is not None and sent else None,
        "node_us": [c * 1e6 / sent if c is not None and sent else None for c in cpu] if cpu else [],
        "cores": total / r["cpu"]["wall_seconds"] if total is not None and r["cpu"]["wall_seconds"] else None,
        "rss": sum(hwm) if hwm and None not in hwm else None,
        "busy": meta.get("busy_before_pct"),
        "machine": (r["cpu"]["machine_busy"] or 0) * 100 if r["cpu"].get("machine_busy") is not None else None,
        "clean": clean(r),
        "errors": r["errors"],
    }


def throughput(out):
    rows = {}
    for name, _, _ in THROUGHPUT:
        runs = load(out, name)
        if runs:
            rows[name] = runs
    if not rows:
        return
    print("### 1 producer → 1 queue → 1 consumer, 16 B persistent, confirms (1000 in flight), "
          "manual acks (prefetch 1000, multiple ack every 100)\n")
    print("| queue | broker | confirmed publish msg/s | consume msg/s | latency p50 | p99 "
          "| broker µs/msg (all nodes) | broker cores | peak RSS (sum) | clean runs | notes |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    summary = {}
    errors = []
    for name, title, broker in THROUGHPUT:
        runs = rows.get(name)
        if not runs:
            continue
        figures = [f for f in (run_figures(x) for x in runs) if f]
        get = lambda k: med([f[k] for f in figures])  # noqa: E731
        s = {k: get(k) for k in ("publish", "consume", "p50", "p99", "us_per_msg", "cores", "rss")}
        summary[name] = s
        notes = []
        nodes = max((len(f["node_us"]) for f in figures), default=0)
        if nodes > 1:
            per_node = [med([f["node_us"][i] for f in figures if len(f["node_us"]) > i]) for i in range(nodes)]
            notes.append("µs/msg per node " + " / ".join(num(v, "{:.1f}") for v in per_node)
                         + " (node 1 leads, takes the client)")
        busy = med([f["machine"] for f in figures])
        before = med([f["busy"] for f in figures])
        notes.append(f"machine {num(busy, '{:.0f}')}% busy ({num(before, '{:.0f}')}% before)")
        failed = len(runs) - len(figures)
        if failed:
            notes.append(f"**{failed} runs without a result**")
        clean_runs = sum(1 for f in figures if f["clean"])
        print(
            f"| {title} | {broker} | {rate(s['publish'])} | {rate(s['consume'])} "
            f"| {latency(s['p50'])} | {latency(s['p99'])} | {num(s['us_per_msg'])} "
            f"| {num(s['cores'])} | {mib(s['rss'])} | {clean_runs}/{len(runs)} | {'; '.join(notes)} |"
        )
        errors += sorted({f"{name}: {e[:160]}" for f in figures for e in f["errors"]})
    for kind, title in (("quorum", "quorum queue, 3 nodes"), ("durable", "durable queue, 1 node")):
        w, r = summary.get(f"warren-{kind}"), summary.get(f"rabbit-{kind}")
        if w and r:
            print(
                f"| {title} | **W/R** | {ratio(w['publish'], r['publish'])} "
                f"| {ratio(w['consume'], r['consume'])} | {ratio(w['p50'], r['p50'])} "
                f"| {ratio(w['p99'], r['p99'])} | {ratio(w['us_per_msg'], r['us_per_msg'])} "
                f"| | {ratio(w['rss'], r['rss'])} | | |"
            )
    print()
    pairs = [(b, t) for b, t in BROKERS if summary.get(f"{b}-quorum") and summary.get(f"{b}-durable")]
    if pairs:
        print("Cost of replication, quorum (3 nodes) ÷ durable (1 node):\n")
        print("| broker | confirmed publish | consume | latency p50 | broker µs/msg | peak RSS |")
        print("|---|--:|--:|--:|--:|--:|")
        for b, t in pairs:
            q, d = summary[f"{b}-quorum"], summary[f"{b}-durable"]
            print(f"| {t} | {ratio(q['publish'], d['publish'])} | {ratio(q['consume'], d['consume'])} "
                  f"| {ratio(q['p50'], d['p50'])} | {ratio(q['us_per_msg'], d['us_per_msg'])} "
                  f"| {ratio(q['rss'], d['rss'])} |")
        print()
    if errors:
        print("Errors reported by warren-perf:\n")
        for e in errors:
            print(f"- {e}")
        print()


def progress_lines(base):
    """(second, sent, confirmed, received) of each per-second line."""
    lines = []
    try:
        with open(base + ".progress") as f:
            for line in f:
                m = PROGRESS.match(line)
                if m:
                    lines.append(tuple(int(g.replace(",", "")) for g in m.groups()))
    except OSError:
        pass
    return lines


def failover_figures(run):
    r, meta = run["r"], run["meta"]
    kill = meta.get("killed_after_lines")
    if r is None or kill is None:
        return None
    lines = progress_lines(run["base"])
    publishing = int(r["settings"].get("time") or len(lines))
    confirmed = [c for _, _, c, _ in lines[:publishing]]
    if len(confirmed) <= kill:
        return None
    steady = confirmed[1:kill] or confirmed[:kill]
    baseline = statistics.median(steady) if steady else None
    # The rate once the cluster is down to two nodes: from the third second after the kill on.
    settled = confirmed[kill + 3:]
    after_rate = statistics.median(settled) if settled else None
    # The kill falls early in line `kill` (0-based). The stall: the confirms missing against the
    # lower of the rates before and after, in seconds of that rate, from the kill's line until a
    # line is back to 80% of it.
    reference = min(r for r in (baseline, after_rate) if r is not None) if baseline else None
    stall, back = None, None
    if reference:
        stall = 0.0
        for i in range(kill, len(confirmed)):
            if i > kill and confirmed[i] >= 0.8 * reference:
                back = i
                break
            stall += min(1.0, max(0.0, 1 - confirmed[i] / reference))
    before_total = sum(confirmed[:kill])
    return {
        "leader": meta.get("leader"),
        "entry": meta.get("entry_node"),
        "new_leader": meta.get("new_leader"),
        "kill_second": kill,
        "baseline": baseline,
        "zero": sum(1 for c in confirmed[kill:] if c == 0),
        "stall": stall,
        "recovered": back is not None,
        "max_latency": r["latency_us"]["max"] if r["latency_us"]["samples"] else None,
        "before": before_total,
        "after": r["confirmed"] - before_total,
        "after_rate": after_rate,
        "lost": r["lost"],
        "missing": r["missing"],
        "duplicates": r["duplicates"],
        "redelivered": r["redelivered"],
        "nacked": r["nacked"],
        "sent": r["sent"],
        "confirmed": r["confirmed"],
        "clean": clean(r),
        "errors": r["errors"],
        "note": meta.get("note") or "",
    }


def failover(out):
    rows = {b: load(out, f"failover-{b}") for b, _ in BROKERS}
    if not any(rows.values()):
        return
    print("### Failover: kill -9 of the queue's leader under the same confirmed load\n")
    print("warren-perf publishes and consumes through a node that does not lead the queue; the "
          "leader's process is killed after the progress line of the given second. *Seconds "
          "without confirms*: whole progress seconds after the kill with no confirm. *Stall*: the "
          "confirms missing against the lower of the rates before and after (the median from the "
          "third second after the kill on), in seconds of that rate, from the kill's second until "
          "a second is back to 80% of it (one-second resolution: an estimate). *Longest "
          "wait*: the largest publish → delivery latency of the run (a message caught in the "
          "failover).\n")
    print("| broker | run | leader killed → new (load on) | killed after | confirmed msg/s before "
          "| seconds without confirms | stall | longest wait | confirmed before / after the kill "
          "| confirmed msg/s after | lost | duplicates | redelivered | clean | notes |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    errors = []
    for b, title in BROKERS:
        runs = rows.get(b) or []
        figures = []
        for run in runs:
            f = failover_figures(run)
            rep = run["meta"].get("rep", "?")
            if f is None:
                why = run["meta"].get("note") or "no result (see the logs)"
                print(f"| {title} | {rep} | | | | | | | | | | | | no | {why} |")
                continue
            figures.append(f)
            notes = [f["note"]] if f["note"] else []
            if not f["recovered"]:
                notes.append("**confirms never back to 80% of the rate**")
            if f["nacked"]:
                notes.append(f"{f['nacked']:,} nacked")
            if f["missing"] and f["lost"] is None:
                notes.append(f"{f['missing']:,} missing, not drained")
            print(
                f"| {title} | {rep} | {f['leader']} → {f['new_leader'] or '?'} ({f['entry']}) "
                f"| {f['kill_second']} s | {rate(f['baseline'])} | {f['zero']} "
                f"| {num(f['stall'], '{:.1f} s')} | {latency(f['max_latency'])} "
                f"| {f['before']:,} / {f['after']:,} | {rate(f['after_rate'])} "
                f"| {num(f['lost'], '{:,}')} | {f['duplicates']:,} "
                f"| {f['redelivered']:,} | {'yes' if f['clean'] else 'no'} | {'; '.join(notes)} |"
            )
            errors += sorted({f"{title} run {rep}: {e[:160]}" for e in f["errors"]})
        if len(figures) > 1:
            g = lambda k: med([f[k] for f in figures])  # noqa: E731
            print(
                f"| {title} | **median** | | | {rate(g('baseline'))} | {num(g('zero'), '{:.0f}')} "
                f"| {num(g('stall'), '{:.1f} s')} | {latency(g('max_latency'))} | "
                f"| {rate(g('after_rate'))} | {num(g('lost'), '{:,.0f}')} | {num(g('duplicates'), '{:,.0f}')} "
                f"| | {sum(f['clean'] for f in figures)}/{len(runs)} | |"
            )
    print()
    if errors:
        print("Errors reported by warren-perf in the failover runs:\n")
        for e in errors:
            print(f"- {e}")
        print()


def main():
    out = sys.argv[1]
    try:
        print("```\n" + open(os.path.join(out, "run.info")).read().strip() + "\n```\n")
    except OSError:
        pass
    throughput(out)
    failover(out)


if __name__ == "__main__":
    main()

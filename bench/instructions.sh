#!/usr/bin/env bash
# Warren's instructions per message, counted by valgrind's callgrind (this machine's perf has no
# hardware counters: `perf stat -e instructions true` says <not supported>).
#
#   bench/instructions.sh [options] [SCENARIO...]      (a and/or b; default: both)
#
#   a  1 producer -> 1 consumer, 16 B transient, auto-ack          (compare.sh scenario a)
#   b  the same with confirms (1000 in flight) and manual acks (prefetch 1000, multi-ack every 100)
#   f  backlog: the count published with confirms (1000 in flight) before a consumer drains it
#      with manual acks as (b) (compare.sh scenario f; use -n 1000000 for its size, so that
#      most of the backlog is paged out of the queue's memory window)
#
# One measurement: start the release warren under callgrind with instrumentation off
# (--instr-atstart=no: start-up is not counted), switch it on with `callgrind_control -i on`, run
# warren-perf --raw --raw-consume with a fixed --count, switch it off, stop the broker with SIGTERM
# (its graceful shutdown; callgrind writes its totals at exit) and read the instruction total (the
# `totals:` line; with --instr-atstart=no the `summary:` line reads 0).
# The same with --count 0 (connect, declare, consume, close; no message) is the baseline:
#   instructions/message = (Ir(count) - Ir(0)) / count.
# Every run does both; runs are repeated to show the spread. All threads of the broker are counted
# (valgrind serialises them, so the broker is slow: keep the count moderate).
#
# Options:
#   -n, --count N       messages per measured run (200000)
#   --runs R            repetitions (2)
#   --warren-bin PATH   warren binary (default: build with cargo build --release into --target-dir)
#   --perf-bin PATH     warren-perf binary (likewise)
#   --rev REV           build this commit (exported with git archive) instead of the working tree
#   --target-dir DIR    cargo target dir for the build (default: <repo>/target/compare)
#   --port P            broker port on 127.0.0.1 (5792)
#   --config FILE       start the broker with this configuration file
#   --out DIR           callgrind files and logs (default: /tmp/warren-instructions-<date>)
#   -h, --help
set -euo pipefail

# A broker with a management API (issue 18) is measured without it (its port, 15672, may be
# taken, and its rate sampler is not the message path); older builds have no such flag.
warren_extra_args() {
    if "$1" --help 2>/dev/null | grep -q -- '--management'; then
        echo "--management off"
    fi
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=200000
RUNS=2
WARREN_BIN=""
PERF_BIN=""
REV=""
CONFIG=""
TARGET_DIR="$REPO/target/compare"
PORT=5792
OUT="/tmp/warren-instructions-$(date +%Y%m%d-%H%M%S)"
SCENARIOS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--count) COUNT=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --warren-bin) WARREN_BIN=$2; shift 2 ;;
        --perf-bin) PERF_BIN=$2; shift 2 ;;
        --target-dir) TARGET_DIR=$2; shift 2 ;;
        --rev) REV=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        a|b|f) SCENARIOS+=("$1"); shift ;;
        *) echo "instructions.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(a b)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

BROKER_PID=""
PERF_PID=""

stop_broker() {
    if alive "$BROKER_PID"; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local i=0
        while alive "$BROKER_PID" && [[ $i -lt 1200 ]]; do sleep 0.1; i=$((i + 1)); done
        alive "$BROKER_PID" && kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if alive "$PERF_PID"; then kill -TERM "$PERF_PID" 2>/dev/null || true; fi
    stop_broker
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
if port_open "$PORT"; then echo "instructions.sh: port $PORT is in use (--port)" >&2; exit 2; fi
mkdir -p "$OUT"
SRC=$REPO
LABEL="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
[[ $DIRTY -gt 0 ]] && LABEL="$LABEL (+$DIRTY uncommitted files)"
if [[ -n "$REV" ]]; then
    LABEL=$(git -C "$REPO" rev-parse --short "$REV")
    SRC="$OUT/src-$LABEL"
    rm -rf "$SRC" && mkdir -p "$SRC"
    git -C "$REPO" archive "$LABEL" | tar -x -C "$SRC"
fi
[[ -n "$WARREN_BIN" ]] && LABEL="binary $WARREN_BIN (repository at $LABEL)"
if [[ -z "$WARREN_BIN" || -z "$PERF_BIN" ]]; then
    log "building warren and warren-perf (release) from $SRC into $TARGET_DIR"
    (cd "$SRC" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p warren -p warren-perf)
    : "${WARREN_BIN:=$TARGET_DIR/release/warren}"
    : "${PERF_BIN:=$TARGET_DIR/release/warren-perf}"
fi
WARREN_EXTRA_ARGS=$(warren_extra_args "$WARREN_BIN")
[[ -n "$CONFIG" ]] && WARREN_EXTRA_ARGS="$WARREN_EXTRA_ARGS --config $CONFIG"
[[ -n "$CONFIG" ]] && LABEL="$LABEL, --config $CONFIG"

scenario_args() {
    case "$1" in
        a) echo "-a" ;;
        b) echo "--confirm 1000 --qos 1000 --multi-ack-every 100" ;;
        f) echo "--backlog --confirm 1000 --qos 1000 --multi-ack-every 100" ;;
    esac
}

# Sets IR to the broker's instruction count for one run of `count` messages (not in a subshell:
# the cleanup trap must see BROKER_PID).
measure() { # scenario count run
    local s=$1 count=$2 run=$3 base="$OUT/$1-$3-$2"
    rm -rf "$OUT/data"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$base.callgrind" \
        "$WARREN_BIN" $WARREN_EXTRA_ARGS --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" >"$base.broker.log" 2>&1 &
    BROKER_PID=$!
    local i=0
    while ! port_open "$PORT"; do
        alive "$BROKER_PID" || { log "warren under valgrind died (see $base.broker.log)"; return 1; }
        [[ $i -ge 1200 ]] && { log "warren under valgrind did not listen in 120 s"; return 1; }
        sleep 0.1; i=$((i + 1))
    done
    callgrind_control -i on "$BROKER_PID" >/dev/null 2>&1
    # shellcheck disable=SC2046 # the scenario's arguments are meant to split
    "$PERF_BIN" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" --raw --raw-consume -C "$count" \
        --drain 600 --json $(scenario_args "$s") >"$base.json" 2>"$base.progress" &
    PERF_PID=$!
    local status=0
    wait "$PERF_PID" || status=$?
    PERF_PID=""
    callgrind_control -i off "$BROKER_PID" >/dev/null 2>&1
    stop_broker
    if [[ $status -ne 0 ]]; then
        log "warren-perf failed (status $status) for $s count=$count: see $base.json / .progress"
        return 1
    fi
    IR=$(sed -n 's/^totals: *//p' "$base.callgrind")
    [[ -n "$IR" ]] || { log "no totals in $base.callgrind"; return 1; }
}

log "count $COUNT, $RUNS runs, scenarios ${SCENARIOS[*]}; files in $OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
for s in "${SCENARIOS[@]}"; do
    for run in $(seq 1 "$RUNS"); do
        log "$s run $run: baseline (0 messages)"
        measure "$s" 0 "$run"
        zero=$IR
        log "$s run $run: $COUNT messages"
        measure "$s" "$COUNT" "$run"
        full=$IR
        echo "$s $run $zero $full" >>"$RESULTS"
        log "$s run $run: baseline $zero Ir, measured $full Ir"
    done
done

python3 - "$RESULTS" "$COUNT" "$LABEL" <<'EOF'
import sys
from collections import defaultdict
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
count = int(sys.argv[2])
names = {"a": "(a) 1p→1c 16 B auto-ack", "b": "(b) confirms 1000 + manual acks (multi-ack 100)",
         "f": "(f) backlog published with confirms, then drained"}
print(f"Warren {sys.argv[3]}: broker instructions per message (callgrind Ir), {count:,} messages per run")
print()
print("| scenario | run | baseline Ir (0 messages) | Ir with messages | instructions/message |")
print("|---|--:|--:|--:|--:|")
per = defaultdict(list)
for s, run, zero, full in rows:
    v = (int(full) - int(zero)) / count
    per[s].append(v)
    print(f"| {names[s]} | {run} | {int(zero):,} | {int(full):,} | {v:,.0f} |")
print()
for s, values in per.items():
    lo, hi = min(values), max(values)
    mean = sum(values) / len(values)
    print(f"{names[s]}: mean {mean:,.0f} instructions/message, spread {hi - lo:,.0f}"
          f" ({100 * (hi - lo) / mean:.2f}% of the mean) over {len(values)} runs")
EOF

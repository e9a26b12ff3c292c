#!/usr/bin/env bash
# Warren against RabbitMQ on a fixed set of scenarios, with warren-perf's raw-frame clients.
#
#   bench/compare.sh [options] [SCENARIO...]        (scenarios a-h; default: all)
#
# Each run starts a fresh broker (Warren: empty data dir; RabbitMQ: a node of its own), runs one
# warren-perf command with --json --broker-pid, and stops the broker; runs alternate between the two
# brokers (W R W R ...) and each scenario is repeated R times. The table gives medians over the
# repetitions. Only 127.0.0.1 is used; only processes this script started are stopped.
#
# Options:
#   -r, --repeat R        repetitions per scenario and broker (3)
#   -d, --duration S      seconds of publishing per run (10); (f) is count-bound instead
#   --warren-only         skip RabbitMQ (quick checks)
#   --warren-bin PATH     use this warren binary instead of building one
#   --perf-bin PATH       use this warren-perf binary instead of building one
#   --rev REV             build this commit (exported with git archive into the output directory)
#                         instead of the working tree, so the figures belong to one commit
#   --target-dir DIR      cargo target dir for the build (default: <repo>/target/compare)
#   --out DIR             where the JSON of every run, the logs and table.md go
#                         (default: /tmp/warren-compare-<date>)
#   --warren-port P       (5790)     --rabbit-port P (5673)    --rabbit-dist-port P (25673)
#   --rabbit-node NAME    (cmp@localhost); its files live under /tmp/cmp-rabbit
#   --quiet-wait S        before a run, wait up to S seconds for the machine to be idle (60)
#   -h, --help
#
# Scenarios (every one with warren-perf --raw --raw-consume):
#   a  1 producer -> 1 consumer, 16 B transient, auto-ack
#   b  the same with confirms (1000 in flight) and manual acks (prefetch 1000, multi-ack every 100)
#   c  1 KiB persistent messages to a durable queue, confirms 1000, manual acks as (b)
#   d  fanout to 10 queues with 10 consumers, manual acks as (b)
#   e  topic exchange, 1000 bindings of mixed * / # patterns, manual acks as (b)
#   f  backlog: 1,000,000 x 16 B published with confirms (1000 in flight), then drained by one
#      consumer (manual acks as (b)); publish rate, drain rate, peak RSS
#   g  1,000 producer connections at 1 msg/s each, 10 queues, 10 consumers: RSS per connection
#   h  latency at 1,000 msg/s (1 producer, 1 consumer, prefetch 100, one ack per message)
set -euo pipefail

# A broker with a management API (issue 18) is measured without it (its port, 15672, may be
# taken, and its rate sampler is not the message path); older builds have no such flag.
warren_extra_args() {
    if "$1" --help 2>/dev/null | grep -q -- '--management'; then
        echo "--management off"
    fi
}
set -f # scenario arguments hold * and #: never glob them

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=3
DURATION=10
WARREN_ONLY=0
WARREN_BIN=""
PERF_BIN=""
REV=""
TARGET_DIR="$REPO/target/compare"
OUT="/tmp/warren-compare-$(date +%Y%m%d-%H%M%S)"
WARREN_PORT=5790
RABBIT_PORT=5673
RABBIT_DIST_PORT=25673
RABBIT_NODE=cmp@localhost
RABBIT_DIR=/tmp/cmp-rabbit
QUIET_WAIT=60
SCENARIOS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -r|--repeat) REPEAT=$2; shift 2 ;;
        -d|--duration) DURATION=$2; shift 2 ;;
        --warren-only) WARREN_ONLY=1; shift ;;
        --warren-bin) WARREN_BIN=$2; shift 2 ;;
        --perf-bin) PERF_BIN=$2; shift 2 ;;
        --target-dir) TARGET_DIR=$2; shift 2 ;;
        --rev) REV=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --warren-port) WARREN_PORT=$2; shift 2 ;;
        --rabbit-port) RABBIT_PORT=$2; shift 2 ;;
        --rabbit-dist-port) RABBIT_DIST_PORT=$2; shift 2 ;;
        --rabbit-node) RABBIT_NODE=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        [a-h]) SCENARIOS+=("$1"); shift ;;
        *) echo "compare.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(a b c d e f g h)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# --- processes we started, and cleanup -------------------------------------------------------
WARREN_PID=""
RABBIT_LAUNCHER_PID=""
RABBIT_PID=""
PERF_PID=""
EPMD_BEFORE=$(pgrep -x epmd || true)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# Waits up to $2 seconds for PID $1 to exit.
wait_gone() {
    local pid=$1 limit=$(($2 * 10)) i=0
    while alive "$pid" && [[ $i -lt $limit ]]; do sleep 0.1; i=$((i + 1)); done
    ! alive "$pid"
}

stop_warren() {
    if alive "$WARREN_PID"; then
        kill -TERM "$WARREN_PID" 2>/dev/null || true
        wait_gone "$WARREN_PID" 20 || kill -KILL "$WARREN_PID" 2>/dev/null || true
        wait "$WARREN_PID" 2>/dev/null || true
    fi
    WARREN_PID=""
}

rabbitmqctl_() { runuser -u rabbitmq -- rabbitmqctl -n "$RABBIT_NODE" "$@"; }

stop_rabbit() {
    if [[ -z "$RABBIT_PID" && -n "$RABBIT_LAUNCHER_PID" ]]; then
        RABBIT_PID=$(find_beam)
    fi
    if alive "$RABBIT_PID"; then
        rabbitmqctl_ stop >/dev/null 2>&1 || true
        if ! wait_gone "$RABBIT_PID" 30; then
            kill -TERM "$RABBIT_PID" 2>/dev/null || true
            wait_gone "$RABBIT_PID" 10 || kill -KILL "$RABBIT_PID" 2>/dev/null || true
        fi
    fi
    if alive "$RABBIT_LAUNCHER_PID"; then
        wait_gone "$RABBIT_LAUNCHER_PID" 10 || kill -TERM "$RABBIT_LAUNCHER_PID" 2>/dev/null || true
    fi
    [[ -n "$RABBIT_LAUNCHER_PID" ]] && { wait "$RABBIT_LAUNCHER_PID" 2>/dev/null || true; }
    RABBIT_PID=""
    RABBIT_LAUNCHER_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if alive "$PERF_PID"; then kill -TERM "$PERF_PID" 2>/dev/null || true; fi
    stop_warren
    stop_rabbit
    # epmd is started (daemonised) by the first Erlang node; stop it only if it was not running
    # before this script and no node is registered with it any more.
    if [[ -z "$EPMD_BEFORE" ]]; then
        local epmd
        epmd=$(pgrep -x epmd || true)
        if [[ -n "$epmd" ]] && ! epmd -names 2>/dev/null | grep -q '^name '; then
            kill -TERM $epmd 2>/dev/null || true
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries ----------------------------------------------------------------------------------
mkdir -p "$OUT"
SRC=$REPO
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
if [[ -n "$REV" ]]; then
    COMMIT=$(git -C "$REPO" rev-parse --short "$REV")
    DIRTY=0
    SRC="$OUT/src-$COMMIT"
    rm -rf "$SRC" && mkdir -p "$SRC"
    git -C "$REPO" archive "$COMMIT" | tar -x -C "$SRC"
fi
[[ -n "$WARREN_BIN" ]] && COMMIT="binary $WARREN_BIN (repository at $COMMIT)"
if [[ -z "$WARREN_BIN" || -z "$PERF_BIN" ]]; then
    log "building warren and warren-perf (release) from $SRC into $TARGET_DIR"
    (cd "$SRC" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p warren -p warren-perf)
    : "${WARREN_BIN:=$TARGET_DIR/release/warren}"
    : "${PERF_BIN:=$TARGET_DIR/release/warren-perf}"
fi
[[ -x "$WARREN_BIN" ]] || { echo "compare.sh: no warren binary at $WARREN_BIN" >&2; exit 2; }
WARREN_EXTRA_ARGS=$(warren_extra_args "$WARREN_BIN")
[[ -x "$PERF_BIN" ]] || { echo "compare.sh: no warren-perf binary at $PERF_BIN" >&2; exit 2; }

# 1,000+ connections: raise the soft fd limit to the hard one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$OUT"
if port_open "$WARREN_PORT"; then
    echo "compare.sh: port $WARREN_PORT is in use; pick another with --warren-port" >&2; exit 2
fi
if [[ $WARREN_ONLY -eq 0 ]]; then
    command -v rabbitmq-server >/dev/null || {
        log "installing rabbitmq-server (apt)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    }
    if port_open "$RABBIT_PORT" || port_open "$RABBIT_DIST_PORT"; then
        echo "compare.sh: port $RABBIT_PORT or $RABBIT_DIST_PORT is in use; see --rabbit-port" >&2
        exit 2
    fi
    if epmd -names 2>/dev/null | grep -q "^name ${RABBIT_NODE%@*} "; then
        echo "compare.sh: a node $RABBIT_NODE is already running; see --rabbit-node" >&2; exit 2
    fi
    rm -rf "$RABBIT_DIR"
    mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
    echo "[]." >"$RABBIT_DIR/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$RABBIT_DIR"
    RABBIT_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
fi

# --- brokers -------------------------------------------------------------------------------------
wait_port() { # port seconds pid
    local i=0
    while ! port_open "$1"; do
        alive "$3" || return 1
        [[ $i -ge $(($2 * 10)) ]] && return 1
        sleep 0.1; i=$((i + 1))
    done
}

start_warren() { # log file
    local data="$OUT/warren-data"
    rm -rf "$data"
    "$WARREN_BIN" $WARREN_EXTRA_ARGS --listen "127.0.0.1:$WARREN_PORT" --data-dir "$data" >"$1" 2>&1 &
    WARREN_PID=$!
    wait_port "$WARREN_PORT" 30 "$WARREN_PID" || { log "warren did not start (see $1)"; return 1; }
    BROKER_PID=$WARREN_PID
    URI="amqp://guest:guest@127.0.0.1:$WARREN_PORT/%2f"
}

# The beam.smp process of our node: the one descended from our launcher (the node name is not on
# its command line).
find_beam() {
    local pid
    for pid in $(pgrep -x beam.smp || true); do
        local p=$pid
        while [[ -n "$p" && "$p" -gt 1 ]]; do
            if [[ "$p" == "$RABBIT_LAUNCHER_PID" ]]; then echo "$pid"; return; fi
            p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || true)
        done
    done
}

start_rabbit() { # log file
    # The Debian package's soft fd limit (1024, from pam_limits under runuser) stops it near 830
    # connections: raise it inside the rabbitmq user's shell, up to our hard limit.
    local nofile
    nofile=$(ulimit -Hn)
    RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_NODENAME=$RABBIT_NODE \
        RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia \
        RABBITMQ_LOG_BASE=$RABBIT_DIR/log RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins \
        setsid runuser -u rabbitmq -- sh -c "ulimit -n $nofile; exec rabbitmq-server" >"$1" 2>&1 &
    RABBIT_LAUNCHER_PID=$!
    wait_port "$RABBIT_PORT" 60 "$RABBIT_LAUNCHER_PID" || { log "rabbitmq did not start (see $1)"; return 1; }
    RABBIT_PID=$(find_beam)
    [[ -n "$RABBIT_PID" ]] || { log "no beam.smp for $RABBIT_NODE"; return 1; }
    BROKER_PID=$RABBIT_PID
    URI="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f"
}

# Share of the machine busy over one second, in percent.
machine_busy() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local busy=0 total=0 i
    for i in 1 2 3 4 5 6 7 8; do
        local d=$((b[i] - a[i]))
        total=$((total + d))
        [[ $i -ne 4 && $i -ne 5 ]] && busy=$((busy + d))
    done
    echo $((total > 0 ? 100 * busy / total : 0))
}

# Waits (up to --quiet-wait) for other work on the machine to calm down; prints the last reading.
wait_quiet() {
    local waited=0 busy
    busy=$(machine_busy)
    while [[ $busy -gt 15 && $waited -lt $QUIET_WAIT ]]; do
        sleep 4; waited=$((waited + 5)); busy=$(machine_busy)
    done
    echo "$busy"
}

# --- scenarios -----------------------------------------------------------------------------------
ACKS=(--qos 1000 --multi-ack-every 100)
scenario_args() {
    local z=(-z "$DURATION" --drain 30)
    case "$1" in
        a) echo "${z[@]} -a" ;;
        b) echo "${z[@]} --confirm 1000 ${ACKS[*]}" ;;
        c) echo "${z[@]} -s 1024 --persistent --durable --confirm 1000 ${ACKS[*]} --queue-pattern perf-dq-{}" ;;
        d) echo "${z[@]} --type fanout --queues 10 -y 10 ${ACKS[*]}" ;;
        e) echo "${z[@]} --type topic --binding-keys perf.{}.*,perf.#.{},*.x.{},{}.# --bindings 1000 --routing-key perf.4.x ${ACKS[*]}" ;;
        f) echo "--backlog -C 1000000 --confirm 1000 ${ACKS[*]} --drain 180" ;;
        g) echo "${z[@]} -x 1000 -r 1 --queues 10 -y 10 --qos 100" ;;
        h) echo "${z[@]} -r 1000 --qos 100" ;;
    esac
}

run_one() { # scenario broker(warren|rabbit) repetition
    local s=$1 broker=$2 rep=$3 base="$OUT/$1-$2-$3"
    local busy
    busy=$(wait_quiet)
    if [[ $broker == warren ]]; then start_warren "$base.broker.log"; else start_rabbit "$base.broker.log"; fi
    local args
    args=$(scenario_args "$s")
    local limit=$((DURATION + 300))
    log "$s $broker #$rep (machine ${busy}% busy before): warren-perf --raw --raw-consume $args"
    # shellcheck disable=SC2086 # the scenario's arguments are meant to split
    "$PERF_BIN" --uri "$URI" --broker-pid "$BROKER_PID" --json --raw --raw-consume $args \
        >"$base.json" 2>"$base.progress" &
    PERF_PID=$!
    local i=0
    while alive "$PERF_PID" && [[ $i -lt $((limit * 10)) ]]; do sleep 0.1; i=$((i + 1)); done
    if alive "$PERF_PID"; then
        log "warren-perf still running after ${limit}s: stopping it"
        kill -TERM "$PERF_PID" 2>/dev/null || true
    fi
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    echo "{\"busy_before_pct\": $busy, \"scenario\": \"$s\", \"broker\": \"$broker\"}" >"$base.meta"
    if [[ $broker == warren ]]; then stop_warren; else stop_rabbit; fi
    python3 - "$base.json" <<'EOF' >&2 || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"    no JSON result ({e}); see the .progress file"); sys.exit()
rates = r["rates_msg_per_s"]
accepted = rates.get("accepted") or rates["publish"]["overall"]
print(f"    publish {accepted:,.0f}  consume {rates['consume']['overall']:,.0f} msg/s"
      f"  p50/p99 {r['latency_us']['p50']:.0f}/{r['latency_us']['p99']:.0f} us"
      f"  drained {r['drained']}  lost {r['lost']}  broker {r['cpu']['broker_us_per_msg'] or 0:.2f} us/msg"
      f"  errors {len(r['errors'])}")
EOF
}

log "results in $OUT; scenarios ${SCENARIOS[*]}; $REPEAT repetitions of ${DURATION}s"
{
    echo "commit=$COMMIT"
    echo "dirty=$DIRTY"
    echo "warren_bin=$WARREN_BIN"
    echo "rabbitmq=${RABBIT_VERSION:-skipped}"
    echo "repeat=$REPEAT"
    echo "duration=$DURATION"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p') cores=$(nproc) kernel=$(uname -r)"
} >"$OUT/run.info"

for s in "${SCENARIOS[@]}"; do
    for rep in $(seq 1 "$REPEAT"); do
        run_one "$s" warren "$rep"
        [[ $WARREN_ONLY -eq 1 ]] || run_one "$s" rabbit "$rep"
    done
done

python3 "$REPO/bench/compare_table.py" "$OUT" "${SCENARIOS[@]}" | tee "$OUT/table.md"

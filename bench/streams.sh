#!/usr/bin/env bash
# Stream queues (x-queue-type: stream, issue 21): Warren against RabbitMQ, with warren-perf's
# raw-frame clients.
#
#   bench/streams.sh [options] [fanout|catchup ...]      (default: both)
#
#   fanout   one producer (confirms, 1000 in flight) publishing to one stream for --duration
#            seconds, 10 consumers each reading it from "next" (prefetch 1000, a multiple ack
#            every 100): publish rate, total and per-consumer delivery rate, latency, broker CPU
#            per message published, peak RSS. Once per message size in --sizes.
#   catchup  --count messages of 16 B published to a stream with confirms, then one consumer from
#            "first" (prefetch --catchup-qos, a multiple ack every 100) reads them all: publish
#            rate, catch-up read rate, broker CPU per message read, RSS while reading, disk used,
#            and the broker's read syscalls over the read (/proc/PID/io). In the last Warren
#            repetition strace also watches the broker for a window during the read (all
#            syscalls counted, and the sizes of its file reads); that run's rates are left out of
#            the medians when other runs exist (ptrace slows the broker).
#
# Every run gets a fresh broker (Warren: an empty data dir; RabbitMQ: its own node cmp@localhost
# on port 5673, dist port 25673, files under /tmp/cmp-rabbit owned by rabbitmq), runs alternate
# W R W R, and the table (bench/streams_table.py OUT) gives medians over the repetitions. Only
# 127.0.0.1 is used; only processes this script started are stopped, by PID.
#
# Options:
#   -r, --repeat R        repetitions per scenario and broker (3)
#   -d, --duration S      fan-out: seconds of publishing (10)
#   -n, --count N         catch-up: messages (10000000)
#   --sizes "A B"         fan-out message sizes in bytes ("16 1024")
#   --catchup-qos Q       catch-up consumer prefetch (1000)
#   --strace-window S     seconds strace watches the broker during one Warren catch-up (3; 0: none)
#   --warren-only         skip RabbitMQ          --rabbit-only   skip Warren
#   --warren-bin PATH     use this warren binary instead of building one
#   --perf-bin PATH       use this warren-perf binary instead of building one
#   --target-dir DIR      cargo target dir for the build (default: <repo>/target/compare)
#   --out DIR             where the JSON of every run, the logs and table.md go
#                         (default: /tmp/warren-streams-<date>)
#   --warren-port P       (5791)     --rabbit-port P (5673)    --rabbit-dist-port P (25673)
#   --rabbit-node NAME    (cmp@localhost); its files live under /tmp/cmp-rabbit
#   --quiet-wait S        before a run, wait up to S seconds for the machine to be idle (60)
#   -h, --help
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=3
DURATION=10
COUNT=10000000
SIZES="16 1024"
CATCHUP_QOS=1000
STRACE_WINDOW=3
WARREN_ONLY=0
RABBIT_ONLY=0
WARREN_BIN=""
PERF_BIN=""
TARGET_DIR="$REPO/target/compare"
OUT="/tmp/warren-streams-$(date +%Y%m%d-%H%M%S)"
WARREN_PORT=5791
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
        -n|--count) COUNT=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --catchup-qos) CATCHUP_QOS=$2; shift 2 ;;
        --strace-window) STRACE_WINDOW=$2; shift 2 ;;
        --warren-only) WARREN_ONLY=1; shift ;;
        --rabbit-only) RABBIT_ONLY=1; shift ;;
        --warren-bin) WARREN_BIN=$2; shift 2 ;;
        --perf-bin) PERF_BIN=$2; shift 2 ;;
        --target-dir) TARGET_DIR=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --warren-port) WARREN_PORT=$2; shift 2 ;;
        --rabbit-port) RABBIT_PORT=$2; shift 2 ;;
        --rabbit-dist-port) RABBIT_DIST_PORT=$2; shift 2 ;;
        --rabbit-node) RABBIT_NODE=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        fanout|catchup) SCENARIOS+=("$1"); shift ;;
        *) echo "streams.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(fanout catchup)
BROKERS=()
[[ $RABBIT_ONLY -eq 1 ]] || BROKERS+=(warren)
[[ $WARREN_ONLY -eq 1 ]] || BROKERS+=(rabbit)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# --- processes we started, and cleanup -------------------------------------------------------
WARREN_PID=""
RABBIT_LAUNCHER_PID=""
RABBIT_PID=""
PERF_PID=""
STRACE_PID=""
EPMD_BEFORE=$(pgrep -x epmd || true)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
wait_gone() { # pid seconds
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

# The beam.smp process of our node: the one descended from our launcher.
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
    if alive "$STRACE_PID"; then kill -INT "$STRACE_PID" 2>/dev/null || true; fi
    if alive "$PERF_PID"; then kill -TERM "$PERF_PID" 2>/dev/null || true; fi
    stop_warren
    stop_rabbit
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
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
[[ -n "$WARREN_BIN" ]] && COMMIT="binary $WARREN_BIN (repository at $COMMIT)"
if [[ -z "$WARREN_BIN" || -z "$PERF_BIN" ]]; then
    log "building warren and warren-perf (release) into $TARGET_DIR"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" nice cargo build --release -q -p warren -p warren-perf)
    : "${WARREN_BIN:=$TARGET_DIR/release/warren}"
    : "${PERF_BIN:=$TARGET_DIR/release/warren-perf}"
fi
[[ -x "$WARREN_BIN" ]] || { echo "streams.sh: no warren binary at $WARREN_BIN" >&2; exit 2; }
[[ -x "$PERF_BIN" ]] || { echo "streams.sh: no warren-perf binary at $PERF_BIN" >&2; exit 2; }
WARREN_EXTRA_ARGS=""
"$WARREN_BIN" --help 2>/dev/null | grep -q -- '--management' && WARREN_EXTRA_ARGS="--management off"
HAVE_STRACE=0
command -v strace >/dev/null && HAVE_STRACE=1
[[ $HAVE_STRACE -eq 1 ]] || log "no strace: the syscall window is skipped (apt-get install strace)"

if [[ $RABBIT_ONLY -eq 0 ]] && port_open "$WARREN_PORT"; then
    echo "streams.sh: port $WARREN_PORT is in use; pick another with --warren-port" >&2; exit 2
fi
if [[ $WARREN_ONLY -eq 0 ]]; then
    command -v rabbitmq-server >/dev/null || { echo "streams.sh: rabbitmq-server is not installed" >&2; exit 2; }
    if port_open "$RABBIT_PORT" || port_open "$RABBIT_DIST_PORT"; then
        echo "streams.sh: port $RABBIT_PORT or $RABBIT_DIST_PORT is in use; see --rabbit-port" >&2
        exit 2
    fi
    if epmd -names 2>/dev/null | grep -q "^name ${RABBIT_NODE%@*} "; then
        echo "streams.sh: a node $RABBIT_NODE is already running; see --rabbit-node" >&2; exit 2
    fi
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
    DATA_DIR="$OUT/warren-data"
    rm -rf "$DATA_DIR"
    # shellcheck disable=SC2086
    "$WARREN_BIN" $WARREN_EXTRA_ARGS --listen "127.0.0.1:$WARREN_PORT" --data-dir "$DATA_DIR" >"$1" 2>&1 &
    WARREN_PID=$!
    wait_port "$WARREN_PORT" 30 "$WARREN_PID" || { log "warren did not start (see $1)"; return 1; }
    BROKER_PID=$WARREN_PID
    URI="amqp://guest:guest@127.0.0.1:$WARREN_PORT/%2f"
}

start_rabbit() { # log file
    rm -rf "$RABBIT_DIR"
    mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
    echo "[]." >"$RABBIT_DIR/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$RABBIT_DIR"
    DATA_DIR="$RABBIT_DIR/mnesia"
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

wait_quiet() {
    local waited=0 busy
    busy=$(machine_busy)
    while [[ $busy -gt 15 && $waited -lt $QUIET_WAIT ]]; do
        sleep 4; waited=$((waited + 5)); busy=$(machine_busy)
    done
    echo "$busy"
}

# --- scenarios -----------------------------------------------------------------------------------
STREAM=(--queue-args x-queue-type=stream --queue-pattern perf-stream-{})
ACKS=(--multi-ack-every 100)
scenario_args() { # scenario size
    case "$1" in
        fanout) echo "-z $DURATION --drain 30 -s $2 --confirm 1000 -y 10 --qos 1000 ${ACKS[*]} ${STREAM[*]} --consume-args x-stream-offset=next" ;;
        catchup) echo "--backlog -C $COUNT --confirm 1000 --qos $CATCHUP_QOS ${ACKS[*]} ${STREAM[*]} --consume-args x-stream-offset=first --drain 1200" ;;
    esac
}

# strace on the broker for STRACE_WINDOW seconds once the drain has begun: a count of every
# syscall (-c), then the sizes of its reads.
strace_drain() { # base pid
    local base=$1 pid=$2 i=0
    while ! grep -q 'consumers attached' "$base.progress" 2>/dev/null; do
        alive "$PERF_PID" || return 0
        sleep 0.2; i=$((i + 1))
    done
    sleep 1
    alive "$PERF_PID" || return 0
    # The progress file gets one line a second (received msg/s): the lines written during a
    # window tell how many messages the broker delivered in it.
    local l0 l1 l2 l3
    l0=$(wc -l <"$base.progress")
    timeout -s INT "$STRACE_WINDOW" strace -f -c -o "$base.strace-c" -p "$pid" 2>/dev/null || true
    l1=$(wc -l <"$base.progress")
    alive "$PERF_PID" || return 0
    l2=$(wc -l <"$base.progress")
    timeout -s INT 2 strace -f -e trace=read,pread64,readv,preadv,preadv2,recvfrom,recvmsg \
        -o "$base.strace-reads" -p "$pid" 2>/dev/null || true
    l3=$(wc -l <"$base.progress")
    echo "{\"count_lines\": [$l0, $l1], \"reads_lines\": [$l2, $l3]}" >"$base.strace-window"
}

run_one() { # scenario size broker rep
    local s=$1 size=$2 broker=$3 rep=$4
    local name=$s
    [[ $s == fanout ]] && name="fanout$size"
    local base="$OUT/$name-$broker-$rep"
    local busy
    busy=$(wait_quiet)
    if [[ $broker == warren ]]; then start_warren "$base.broker.log"; else start_rabbit "$base.broker.log"; fi
    local args
    args=$(scenario_args "$s" "$size")
    log "$name $broker #$rep (machine ${busy}% busy before): warren-perf --raw --raw-consume $args"
    # shellcheck disable=SC2086
    "$PERF_BIN" --uri "$URI" --broker-pid "$BROKER_PID" --json --raw --raw-consume $args \
        >"$base.json" 2>"$base.progress" &
    PERF_PID=$!
    local straced=false
    if [[ $s == catchup && $broker == warren && $rep -eq $REPEAT && $HAVE_STRACE -eq 1 \
        && $STRACE_WINDOW != 0 ]]; then
        straced=true
        strace_drain "$base" "$BROKER_PID"
    fi
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    local disk
    disk=$(du -sb "$DATA_DIR" 2>/dev/null | cut -f1 || echo null)
    echo "{\"busy_before_pct\": $busy, \"scenario\": \"$name\", \"broker\": \"$broker\", \"size\": $size, \"disk_bytes\": ${disk:-null}, \"straced\": $straced}" >"$base.meta"
    if [[ $broker == warren ]]; then stop_warren; else stop_rabbit; fi
    python3 - "$base.json" <<'PY' >&2 || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"    no JSON result ({e}); see the .progress file"); sys.exit()
rates = r["rates_msg_per_s"]
accepted = rates.get("accepted") or rates["publish"]["overall"]
print(f"    publish {accepted:,.0f}  consume {rates['consume']['overall']:,.0f} msg/s"
      f"  p50/p99 {r['latency_us']['p50']:.0f}/{r['latency_us']['p99']:.0f} us"
      f"  drained {r['drained']}  lost {r['lost']}  dup {r['duplicates']}"
      f"  broker {r['cpu']['broker_us_per_msg'] or 0:.2f} us/msg  errors {r['errors'][:2]}")
PY
}

log "results in $OUT; scenarios ${SCENARIOS[*]}; $REPEAT repetitions; brokers ${BROKERS[*]}"
{
    echo "commit=$COMMIT"
    echo "dirty=$DIRTY"
    echo "warren_bin=$WARREN_BIN"
    echo "rabbitmq=${RABBIT_VERSION:-skipped}"
    echo "repeat=$REPEAT"
    echo "duration=$DURATION"
    echo "count=$COUNT"
    echo "catchup_qos=$CATCHUP_QOS"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p') cores=$(nproc) kernel=$(uname -r)"
} >"$OUT/run.info"

for s in "${SCENARIOS[@]}"; do
    sizes=16
    [[ $s == fanout ]] && sizes=$SIZES
    for size in $sizes; do
        for rep in $(seq 1 "$REPEAT"); do
            for broker in "${BROKERS[@]}"; do
                run_one "$s" "$size" "$broker" "$rep"
            done
        done
    done
done

python3 "$REPO/bench/streams_table.py" "$OUT" | tee "$OUT/table.md"

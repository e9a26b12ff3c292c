#!/usr/bin/env bash
# Replicated quorum queues (x-queue-type: quorum, issue 22): a 3-node Warren cluster against a
# 3-node RabbitMQ cluster, all on loopback, with warren-perf's raw-frame clients.
#
#   bench/quorum.sh [options] [SCENARIO...]      (default: all)
#
# Every throughput scenario: 1 producer -> 1 queue -> 1 consumer, 16 B persistent messages,
# publisher confirms (1000 in flight), manual acks (prefetch 1000, a multiple ack every 100),
# --duration seconds; warren-perf connects to node 1 (the queue's leader: Warren's lowest node id
# leads new groups, RabbitMQ places the leader on the declaring node).
#
#   warren-quorum    3 Warren processes in a cluster, the queue declared x-queue-type=quorum
#   warren-durable   1 Warren process (no [cluster]), a durable classic queue: the baseline
#   rabbit-quorum    3 RabbitMQ nodes clustered (join_cluster), x-queue-type=quorum
#   rabbit-durable   1 RabbitMQ node, a durable classic queue: its baseline
#   failover         the quorum clusters under the same confirmed load for --failover-time
#                    seconds, warren-perf connected to a node that does not lead the queue;
#                    after --kill-after seconds the leader's process gets kill -9: seconds
#                    without confirms, the stall, confirmed before/after, lost and duplicates.
#                    Warren, and RabbitMQ unless --warren-only.
#
# Every run gets fresh brokers (empty data directories), runs alternate between the brokers
# (warren-quorum, rabbit-quorum, warren-durable, rabbit-durable, failover W, failover R, then the
# next repetition), and the table (bench/quorum_table.py OUT) gives medians over the repetitions.
# Broker CPU and peak RSS are summed over all the broker's processes (/proc/PID/stat utime+stime
# read before and after warren-perf; VmHWM after). Only 127.0.0.1 is used; only processes this
# script started are stopped, by PID.
#
# Options:
#   -r, --repeat R        repetitions per scenario and broker (3)
#   -d, --duration S      seconds of publishing per throughput run (10)
#   --failover-time S     seconds of publishing in a failover run (20)
#   --kill-after S        seconds of load before the leader is killed (5)
#   --warren-only         skip RabbitMQ          --rabbit-only   skip Warren
#   --warren-bin PATH     warren binary (<repo>/target/release/warren)
#   --perf-bin PATH       warren-perf binary (<repo>/target/release/warren-perf)
#   --out DIR             where the JSON of every run, the logs and table.md go
#                         (default: /tmp/warren-quorum-<date>)
#   --warren-port P       AMQP ports of the Warren nodes: P, P+1, P+2 (5801)
#   --cluster-port P      Warren cluster ports: P, P+1, P+2 (25801)
#   --management-port P   Warren management ports (failover only): P, P+1, P+2 (15801)
#   --rabbit-port P       AMQP ports of the RabbitMQ nodes: P, P+1, P+2 (5811)
#   --rabbit-dist-port P  their Erlang distribution ports: P, P+1, P+2 (25811)
#   --rabbit-nodes PREFIX node names PREFIX1@localhost .. PREFIX3@localhost (qb); their files
#                         live under /tmp/quorum-rabbit
#   --quiet-wait S        before a run, wait up to S seconds for the machine to be idle (60)
#   -h, --help
set -euo pipefail
set -f # the queue patterns hold {}: never glob

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=3
DURATION=10
FAILOVER_TIME=20
KILL_AFTER=5
WARREN_ONLY=0
RABBIT_ONLY=0
WARREN_BIN="$REPO/target/release/warren"
PERF_BIN="$REPO/target/release/warren-perf"
OUT="/tmp/warren-quorum-$(date +%Y%m%d-%H%M%S)"
WARREN_PORT=5801
CLUSTER_PORT=25801
MANAGEMENT_PORT=15801
RABBIT_PORT=5811
RABBIT_DIST_PORT=25811
RABBIT_PREFIX=qb
RABBIT_DIR=/tmp/quorum-rabbit
QUIET_WAIT=60
SCENARIOS=()
ALL_SCENARIOS=(warren-quorum rabbit-quorum warren-durable rabbit-durable failover)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -r|--repeat) REPEAT=$2; shift 2 ;;
        -d|--duration) DURATION=$2; shift 2 ;;
        --failover-time) FAILOVER_TIME=$2; shift 2 ;;
        --kill-after) KILL_AFTER=$2; shift 2 ;;
        --warren-only) WARREN_ONLY=1; shift ;;
        --rabbit-only) RABBIT_ONLY=1; shift ;;
        --warren-bin) WARREN_BIN=$2; shift 2 ;;
        --perf-bin) PERF_BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --warren-port) WARREN_PORT=$2; shift 2 ;;
        --cluster-port) CLUSTER_PORT=$2; shift 2 ;;
        --management-port) MANAGEMENT_PORT=$2; shift 2 ;;
        --rabbit-port) RABBIT_PORT=$2; shift 2 ;;
        --rabbit-dist-port) RABBIT_DIST_PORT=$2; shift 2 ;;
        --rabbit-nodes) RABBIT_PREFIX=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        warren-quorum|warren-durable|rabbit-quorum|rabbit-durable|failover) SCENARIOS+=("$1"); shift ;;
        *) echo "quorum.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ $WARREN_ONLY -eq 1 && $RABBIT_ONLY -eq 1 ]] && { echo "quorum.sh: --warren-only and --rabbit-only" >&2; exit 2; }
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=("${ALL_SCENARIOS[@]}")
[[ $KILL_AFTER -ge 2 && $KILL_AFTER -lt $FAILOVER_TIME ]] || {
    echo "quorum.sh: --kill-after must be at least 2 and below --failover-time" >&2; exit 2
}
# The runs in order: scenario:broker pairs, brokers alternating.
RUNS=()
for s in "${ALL_SCENARIOS[@]}"; do
    [[ " ${SCENARIOS[*]} " == *" $s "* ]] || continue
    case "$s" in
        warren-*) [[ $RABBIT_ONLY -eq 1 ]] || RUNS+=("$s") ;;
        rabbit-*) [[ $WARREN_ONLY -eq 1 ]] || RUNS+=("$s") ;;
        failover)
            [[ $RABBIT_ONLY -eq 1 ]] || RUNS+=(failover-warren)
            [[ $WARREN_ONLY -eq 1 ]] || RUNS+=(failover-rabbit) ;;
    esac
done
[[ ${#RUNS[@]} -gt 0 ]] || { echo "quorum.sh: nothing to run" >&2; exit 2; }
NEED_WARREN=0
NEED_RABBIT=0
for r in "${RUNS[@]}"; do
    [[ $r == *warren* ]] && NEED_WARREN=1
    [[ $r == *rabbit* ]] && NEED_RABBIT=1
done

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# --- processes we started, and cleanup -------------------------------------------------------
WARREN_PIDS=("" "" "" "")      # index = node id 1..3
RABBIT_LAUNCHERS=("" "" "" "")
RABBIT_PIDS=("" "" "" "")      # the beam.smp of each node
PERF_PID=""
EPMD_BEFORE=$(pgrep -x epmd || true)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
wait_gone() { # pid seconds
    local pid=$1 limit=$(($2 * 10)) i=0
    while alive "$pid" && [[ $i -lt $limit ]]; do sleep 0.1; i=$((i + 1)); done
    ! alive "$pid"
}

stop_warren() {
    local k pid
    for k in 1 2 3; do
        pid=${WARREN_PIDS[$k]}
        alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    for k in 1 2 3; do
        pid=${WARREN_PIDS[$k]}
        if [[ -n "$pid" ]]; then
            wait_gone "$pid" 20 || kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
        WARREN_PIDS[$k]=""
    done
}

rabbit_node() { echo "$RABBIT_PREFIX$1@localhost"; }
rabbitmqctl_() { # node-id args...
    local k=$1; shift
    runuser -u rabbitmq -- rabbitmqctl -n "$(rabbit_node "$k")" "$@"
}

# The beam.smp process descended from launcher $1 (the node name is not on its command line).
find_beam() {
    local pid
    for pid in $(pgrep -x beam.smp || true); do
        local p=$pid
        while [[ -n "$p" && "$p" -gt 1 ]]; do
            if [[ "$p" == "$1" ]]; then echo "$pid"; return 0; fi
            p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || true)
        done
    done
}

stop_rabbit() {
    local k pid stoppers=()
    for k in 1 2 3; do
        if [[ -z "${RABBIT_PIDS[$k]}" && -n "${RABBIT_LAUNCHERS[$k]}" ]]; then
            RABBIT_PIDS[$k]=$(find_beam "${RABBIT_LAUNCHERS[$k]}")
        fi
        if alive "${RABBIT_PIDS[$k]}"; then
            rabbitmqctl_ "$k" stop >/dev/null 2>&1 &
            stoppers+=($!)
        fi
    done
    for pid in "${stoppers[@]}"; do wait "$pid" 2>/dev/null || true; done
    for k in 1 2 3; do
        pid=${RABBIT_PIDS[$k]}
        if alive "$pid" && ! wait_gone "$pid" 30; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
        pid=${RABBIT_LAUNCHERS[$k]}
        if alive "$pid"; then
            wait_gone "$pid" 10 || kill -TERM "$pid" 2>/dev/null || true
        fi
        [[ -n "$pid" ]] && { wait "$pid" 2>/dev/null || true; }
        RABBIT_PIDS[$k]=""
        RABBIT_LAUNCHERS[$k]=""
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Stop everything even if a step fails (and inside a trap, a bare `return` would return the
    # status the trap interrupted, 143, which set -e would take for a failure).
    set +e
    if alive "$PERF_PID"; then kill -TERM "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
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

# --- binaries and ports ------------------------------------------------------------------------
[[ -x "$PERF_BIN" ]] || { echo "quorum.sh: no warren-perf binary at $PERF_BIN (see --perf-bin)" >&2; exit 2; }
if [[ $NEED_WARREN -eq 1 ]]; then
    [[ -x "$WARREN_BIN" ]] || { echo "quorum.sh: no warren binary at $WARREN_BIN (see --warren-bin)" >&2; exit 2; }
    for p in $WARREN_PORT $((WARREN_PORT + 1)) $((WARREN_PORT + 2)) $CLUSTER_PORT $((CLUSTER_PORT + 1)) \
        $((CLUSTER_PORT + 2)) $MANAGEMENT_PORT $((MANAGEMENT_PORT + 1)) $((MANAGEMENT_PORT + 2)); do
        if port_open "$p"; then
            echo "quorum.sh: port $p is in use; see --warren-port, --cluster-port, --management-port" >&2
            exit 2
        fi
    done
fi
if [[ $NEED_RABBIT -eq 1 ]]; then
    command -v rabbitmq-server >/dev/null || { echo "quorum.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 2; }
    for p in $RABBIT_PORT $((RABBIT_PORT + 1)) $((RABBIT_PORT + 2)) $RABBIT_DIST_PORT \
        $((RABBIT_DIST_PORT + 1)) $((RABBIT_DIST_PORT + 2)); do
        if port_open "$p"; then
            echo "quorum.sh: port $p is in use; see --rabbit-port, --rabbit-dist-port" >&2; exit 2
        fi
    done
    for k in 1 2 3; do
        if epmd -names 2>/dev/null | grep -q "^name $RABBIT_PREFIX$k "; then
            echo "quorum.sh: a node $(rabbit_node "$k") is already running; see --rabbit-nodes" >&2; exit 2
        fi
    done
    RABBIT_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
    ERLANG_VERSION=$(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null || echo unknown)
fi
mkdir -p "$OUT"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
CLK_TCK=$(getconf CLK_TCK)

# --- measuring processes -------------------------------------------------------------------------
# utime + stime of a process, in clock ticks ("null" once it is gone).
cpu_ticks() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo null; return 0; }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}
hwm_kib() { awk '/^VmHWM:/ {print $2; found=1} END {if (!found) print "null"}' "/proc/$1/status" 2>/dev/null || echo null; }
json_list() { local IFS=,; echo "[$*]"; }

# --- brokers -------------------------------------------------------------------------------------
wait_port() { # port seconds pid
    local i=0
    while ! port_open "$1"; do
        alive "$3" || return 1
        [[ $i -ge $(($2 * 10)) ]] && return 1
        sleep 0.1; i=$((i + 1))
    done
}

# start_warren NODES MANAGEMENT(0|1) BASE: NODES=1 is a single node without [cluster].
start_warren() {
    local nodes=$1 management=$2 base=$3 k
    BROKER_PIDS=()
    local dir="$OUT/warren"
    rm -rf "$dir"
    mkdir -p "$dir"
    local peers=""
    for k in 1 2 3; do
        peers+="${peers:+, }{ id = $k, address = \"127.0.0.1:$((CLUSTER_PORT + k - 1))\" }"
    done
    for k in $(seq 1 "$nodes"); do
        local config=()
        if [[ $nodes -gt 1 ]]; then
            printf '[cluster]\nnode_id = %s\npeers = [%s]\n' "$k" "$peers" >"$dir/node$k.toml"
            config=(--config "$dir/node$k.toml")
        fi
        local mgmt=off
        [[ $management -eq 1 ]] && mgmt="127.0.0.1:$((MANAGEMENT_PORT + k - 1))"
        env -u WARREN_CONFIG "$WARREN_BIN" "${config[@]}" --listen "127.0.0.1:$((WARREN_PORT + k - 1))" \
            --data-dir "$dir/data$k" --management "$mgmt" >"$base.node$k.log" 2>&1 &
        WARREN_PIDS[$k]=$!
    done
    for k in $(seq 1 "$nodes"); do
        wait_port $((WARREN_PORT + k - 1)) 30 "${WARREN_PIDS[$k]}" || { log "warren node $k did not start (see $base.node$k.log)"; return 1; }
    done
    if [[ $nodes -gt 1 ]]; then
        # The metadata group elects its leader within milliseconds of the peers meeting; give it
        # a moment, and wait for every node to have joined.
        local i=0
        for k in 1 2 3; do
            while ! grep -q 'joined the cluster' "$base.node$k.log" 2>/dev/null; do
                [[ $i -ge 300 ]] && { log "warren node $k did not join (see $base.node$k.log)"; return 1; }
                sleep 0.1; i=$((i + 1))
            done
        done
        sleep 1
    fi
    BROKER_PIDS=()
    for k in $(seq 1 "$nodes"); do BROKER_PIDS+=("${WARREN_PIDS[$k]}"); done
    DATA_DIR=$dir
}

# start_rabbit NODES BASE: NODES=3 joins nodes 2 and 3 to node 1.
start_rabbit() {
    local nodes=$1 base=$2 k
    BROKER_PIDS=()
    rm -rf "$RABBIT_DIR"
    for k in $(seq 1 "$nodes"); do mkdir -p "$RABBIT_DIR/n$k/mnesia" "$RABBIT_DIR/n$k/log"; done
    echo "[]." >"$RABBIT_DIR/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$RABBIT_DIR"
    local nofile
    nofile=$(ulimit -Hn)
    for k in $(seq 1 "$nodes"); do
        RABBITMQ_NODE_PORT=$((RABBIT_PORT + k - 1)) RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_NODENAME=$(rabbit_node "$k") RABBITMQ_DIST_PORT=$((RABBIT_DIST_PORT + k - 1)) \
            RABBITMQ_MNESIA_BASE=$RABBIT_DIR/n$k/mnesia RABBITMQ_LOG_BASE=$RABBIT_DIR/n$k/log \
            RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins \
            setsid runuser -u rabbitmq -- sh -c "ulimit -n $nofile; exec rabbitmq-server" >"$base.node$k.log" 2>&1 &
        RABBIT_LAUNCHERS[$k]=$!
    done
    for k in $(seq 1 "$nodes"); do
        wait_port $((RABBIT_PORT + k - 1)) 90 "${RABBIT_LAUNCHERS[$k]}" || { log "rabbitmq node $k did not start (see $base.node$k.log)"; return 1; }
        RABBIT_PIDS[$k]=$(find_beam "${RABBIT_LAUNCHERS[$k]}")
        [[ -n "${RABBIT_PIDS[$k]}" ]] || { log "no beam.smp for $(rabbit_node "$k")"; return 1; }
    done
    if [[ $nodes -gt 1 ]]; then
        for k in $(seq 2 "$nodes"); do
            { rabbitmqctl_ "$k" stop_app && rabbitmqctl_ "$k" join_cluster "$(rabbit_node 1)" \
                && rabbitmqctl_ "$k" start_app; } >>"$base.cluster.log" 2>&1 \
                || { log "$(rabbit_node "$k") did not join (see $base.cluster.log)"; return 1; }
        done
        local running
        running=$(rabbitmqctl_ 1 cluster_status --formatter json 2>>"$base.cluster.log" \
            | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))' || echo 0)
        if [[ $running -ne $nodes ]]; then
            log "the RabbitMQ cluster has $running running nodes, not $nodes (see $base.cluster.log)"; return 1
        fi
        for k in $(seq 1 "$nodes"); do wait_port $((RABBIT_PORT + k - 1)) 60 "${RABBIT_PIDS[$k]}" || return 1; done
    fi
    BROKER_PIDS=()
    for k in $(seq 1 "$nodes"); do BROKER_PIDS+=("${RABBIT_PIDS[$k]}"); done
    DATA_DIR=$RABBIT_DIR
}

# The node id (1-3) that leads queue perf-qq-0, as node $2 sees it; empty if unknown.
queue_leader() { # broker asked-node
    if [[ $1 == warren ]]; then
        curl -s --max-time 5 "http://guest:guest@127.0.0.1:$((MANAGEMENT_PORT + $2 - 1))/api/cluster/status" \
            | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit()
for q in d.get("quorum_queues", []):
    if q["name"] == "perf-qq-0" and q["group"]["leader"] is not None:
        print(q["group"]["leader"])' 2>/dev/null || true
    else
        rabbitmqctl_ "$2" list_queues -q --no-table-headers name leader 2>/dev/null \
            | awk -v p="$RABBIT_PREFIX" '$1 == "perf-qq-0" { sub("@.*", "", $2); sub("^" p, "", $2); print $2 }' || true
    fi
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

# Waits (up to --quiet-wait) for other work on the machine to calm down; prints the last reading.
wait_quiet() {
    local waited=0 busy
    busy=$(machine_busy)
    while [[ $busy -gt 15 && $waited -lt $QUIET_WAIT ]]; do
        sleep 4; waited=$((waited + 5)); busy=$(machine_busy)
    done
    echo "$busy"
}

# --- runs ------------------------------------------------------------------------------------------
LOAD=(--raw --raw-consume --confirm 1000 --qos 1000 --multi-ack-every 100 --persistent --durable)
QUORUM=(--queue-args x-queue-type=quorum --queue-pattern perf-qq-{})
DURABLE=(--queue-pattern perf-dq-{})

# Runs warren-perf in the background (PERF_PID), stdout to $1.json, stderr to $1.progress.
perf_start() { # base uri args...
    local base=$1 uri=$2; shift 2
    "$PERF_BIN" --uri "$uri" --json "$@" >"$base.json" 2>"$base.progress" &
    PERF_PID=$!
}
perf_wait() { # limit-seconds
    local i=0
    while alive "$PERF_PID" && [[ $i -lt $(($1 * 10)) ]]; do sleep 0.1; i=$((i + 1)); done
    if alive "$PERF_PID"; then
        log "warren-perf still running after $1 s: stopping it"
        kill -TERM "$PERF_PID" 2>/dev/null || true
    fi
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
}

summary() { # json file
    python3 - "$1" <<'EOF' >&2 || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"    no JSON result ({e}); see the .progress file"); sys.exit()
rates = r["rates_msg_per_s"]
print(f"    confirmed {r['confirmed']:,} of {r['sent']:,}  publish {rates.get('accepted') or 0:,.0f}"
      f"  consume {rates['consume']['overall']:,.0f} msg/s"
      f"  p50/p99 {r['latency_us']['p50']:.0f}/{r['latency_us']['p99']:.0f} us"
      f"  max {r['latency_us']['max'] / 1e3:,.0f} ms"
      f"  drained {r['drained']}  lost {r['lost']}  dup {r['duplicates']}  errors {r['errors'][:2]}")
EOF
}

run_throughput() { # scenario rep
    local s=$1 rep=$2 base="$OUT/$1-$2"
    local broker=${s%%-*} kind=${s#*-}
    local nodes=1 queue=("${DURABLE[@]}")
    [[ $kind == quorum ]] && { nodes=3; queue=("${QUORUM[@]}"); }
    local busy
    busy=$(wait_quiet)
    local ok=1
    if [[ $broker == warren ]]; then
        start_warren "$nodes" 0 "$base" || ok=0
    else
        start_rabbit "$nodes" "$base" || ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        local port=$WARREN_PORT
        [[ $broker == rabbit ]] && port=$RABBIT_PORT
        local args=(-z "$DURATION" --drain 30 "${LOAD[@]}" "${queue[@]}")
        log "$s #$rep (machine ${busy}% busy before; $nodes node(s)): warren-perf ${args[*]}"
        local pid cpu_before=() cpu_after=() hwm=()
        for pid in "${BROKER_PIDS[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
        perf_start "$base" "amqp://guest:guest@127.0.0.1:$port/%2f" --broker-pid "${BROKER_PIDS[0]}" "${args[@]}"
        perf_wait $((DURATION + 120))
        for pid in "${BROKER_PIDS[@]}"; do
            cpu_after+=("$(cpu_ticks "$pid")")
            hwm+=("$(hwm_kib "$pid")")
        done
        local disk
        disk=$(du -sb "$DATA_DIR" 2>/dev/null | cut -f1 || true)
        cat >"$base.meta" <<EOF
{"scenario": "$s", "broker": "$broker", "nodes": $nodes, "rep": $rep, "busy_before_pct": $busy,
 "pids": $(json_list "${BROKER_PIDS[@]}"), "clk_tck": $CLK_TCK,
 "cpu_ticks_before": $(json_list "${cpu_before[@]}"), "cpu_ticks_after": $(json_list "${cpu_after[@]}"),
 "vmhwm_kib": $(json_list "${hwm[@]}"), "disk_bytes": ${disk:-null}}
EOF
        summary "$base.json"
    else
        echo "{\"scenario\": \"$s\", \"broker\": \"$broker\", \"rep\": $rep, \"failed\": \"broker start\"}" >"$base.meta"
    fi
    if [[ $broker == warren ]]; then stop_warren; else stop_rabbit; fi
}

run_failover() { # broker rep
    local broker=$1 rep=$2 base="$OUT/failover-$1-$2"
    local busy
    busy=$(wait_quiet)
    local ok=1
    if [[ $broker == warren ]]; then
        start_warren 3 1 "$base" || ok=0
    else
        start_rabbit 3 "$base" || ok=0
    fi
    local port=$WARREN_PORT
    [[ $broker == rabbit ]] && port=$RABBIT_PORT
    local leader="" entry="" killed_line="" killed_pid="" new_leader="" note=""
    local cpu_before=() cpu_kill=() cpu_after=() hwm=() pid k
    if [[ $ok -eq 1 ]]; then
        # Declare the queue through node 1 (warren-perf with --count 0: declare, purge, close),
        # then find its leader and put the load on another node, so that its connections
        # survive the kill.
        perf_start "$base.declare" "amqp://guest:guest@127.0.0.1:$port/%2f" -C 0 "${LOAD[@]}" "${QUORUM[@]}"
        perf_wait 60
        local i=0
        while [[ -z "$leader" && $i -lt 20 ]]; do
            leader=$(queue_leader "$broker" 1)
            [[ -n "$leader" ]] || { sleep 0.5; i=$((i + 1)); }
        done
        if [[ -z "$leader" ]]; then
            log "failover $broker #$rep: no leader for perf-qq-0 (see $base.declare.*)"
            ok=0
        fi
    fi
    if [[ $ok -eq 1 ]]; then
        for k in 1 2 3; do [[ $k != "$leader" ]] && { entry=$k; break; }; done
        local args=(-z "$FAILOVER_TIME" --drain 60 "${LOAD[@]}" "${QUORUM[@]}")
        log "failover $broker #$rep (machine ${busy}% busy before): leader node $leader, load on node $entry; kill -9 of the leader after ${KILL_AFTER}s: warren-perf ${args[*]}"
        local entry_pid
        if [[ $broker == warren ]]; then entry_pid=${WARREN_PIDS[$entry]}; else entry_pid=${RABBIT_PIDS[$entry]}; fi
        for pid in "${BROKER_PIDS[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
        perf_start "$base" "amqp://guest:guest@127.0.0.1:$((port + entry - 1))/%2f" --broker-pid "$entry_pid" "${args[@]}"
        # Look at the leader again two seconds before the kill (rabbitmqctl takes a second),
        # then kill it when the progress lines say KILL_AFTER seconds of load have passed.
        lines() { grep -c 'msg/s' "$base.progress" 2>/dev/null || true; }
        while alive "$PERF_PID" && [[ $(lines) -lt $((KILL_AFTER - 2)) ]]; do sleep 0.05; done
        local now_leader
        now_leader=$(queue_leader "$broker" "$entry")
        if [[ -n "$now_leader" && "$now_leader" != "$leader" ]]; then
            note="leader moved from node $leader to node $now_leader before the kill"
            leader=$now_leader
        fi
        while alive "$PERF_PID" && [[ $(lines) -lt $KILL_AFTER ]]; do sleep 0.05; done
        if alive "$PERF_PID"; then
            if [[ $broker == warren ]]; then killed_pid=${WARREN_PIDS[$leader]}; else killed_pid=${RABBIT_PIDS[$leader]}; fi
            for pid in "${BROKER_PIDS[@]}"; do
                cpu_kill+=("$(cpu_ticks "$pid")")
                hwm+=("$(hwm_kib "$pid")")
            done
            killed_line=$(lines)
            kill -KILL "$killed_pid" 2>/dev/null || true
            # Reap it here, quietly (bash reports a killed background job otherwise).
            { wait "$killed_pid"; } 2>/dev/null || true
            log "    killed node $leader (pid $killed_pid) after $killed_line progress lines"
            [[ "$leader" == "$entry" ]] && note="${note:+$note; }the killed leader was warren-perf's node"
        else
            note="${note:+$note; }warren-perf ended before the kill"
        fi
        perf_wait $((FAILOVER_TIME + 180))
        for pid in "${BROKER_PIDS[@]}"; do cpu_after+=("$(cpu_ticks "$pid")"); done
        [[ "$leader" != "$entry" ]] && new_leader=$(queue_leader "$broker" "$entry")
        summary "$base.json"
        log "    leader after the kill: node ${new_leader:-unknown}"
    fi
    cat >"$base.meta" <<EOF
{"scenario": "failover", "broker": "$broker", "nodes": 3, "rep": $rep, "busy_before_pct": $busy,
 "ok": $([[ $ok -eq 1 ]] && echo true || echo false), "leader": ${leader:-null}, "entry_node": ${entry:-null},
 "killed_pid": ${killed_pid:-null}, "killed_after_lines": ${killed_line:-null}, "kill_after": $KILL_AFTER,
 "new_leader": ${new_leader:-null}, "note": "$note", "pids": $(json_list "${BROKER_PIDS[@]}"), "clk_tck": $CLK_TCK,
 "cpu_ticks_before": $(json_list "${cpu_before[@]}"), "cpu_ticks_at_kill": $(json_list "${cpu_kill[@]}"),
 "cpu_ticks_after": $(json_list "${cpu_after[@]}"), "vmhwm_kib_at_kill": $(json_list "${hwm[@]}")}
EOF
    if [[ $broker == warren ]]; then stop_warren; else stop_rabbit; fi
}

log "results in $OUT; runs ${RUNS[*]}; $REPEAT repetitions of ${DURATION}s (failover ${FAILOVER_TIME}s, kill after ${KILL_AFTER}s)"
{
    echo "commit=$COMMIT"
    echo "dirty=$DIRTY"
    echo "warren_bin=$WARREN_BIN"
    [[ $NEED_WARREN -eq 1 ]] && echo "warren_version=$("$WARREN_BIN" --version 2>/dev/null || echo unknown)"
    echo "perf_bin=$PERF_BIN ($("$PERF_BIN" --version 2>/dev/null || echo unknown))"
    echo "rabbitmq=${RABBIT_VERSION:-skipped}"
    echo "erlang=${ERLANG_VERSION:-skipped}"
    echo "repeat=$REPEAT"
    echo "duration=$DURATION"
    echo "failover_time=$FAILOVER_TIME"
    echo "kill_after=$KILL_AFTER"
    echo "runs=${RUNS[*]}"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p') cores=$(nproc) kernel=$(uname -r)"
} >"$OUT/run.info"

for rep in $(seq 1 "$REPEAT"); do
    for r in "${RUNS[@]}"; do
        case "$r" in
            failover-*) run_failover "${r#failover-}" "$rep" ;;
            *) run_throughput "$r" "$rep" ;;
        esac
    done
done

python3 "$REPO/bench/quorum_table.py" "$OUT" | tee "$OUT/table.md"

#!/usr/bin/env bash
# Broker CPU time and RSS for the lapin examples: `producer N` (persistent messages, confirms)
# then `consumer N` (prefetch 100, one ack per message), against any broker on loopback.
#
#   cargo build --release --examples --bins
#   target/release/warren --listen 127.0.0.1:5698 --data-dir /tmp/wd & bash bench/examples_cpu.sh 5698 $! 100000
#   bash bench/examples_cpu.sh 5673 $(pgrep -f 'beam.smp.*refb') 100000      # a RabbitMQ on 5673
#
# CPU is read from /proc/PID/stat (utime+stime, in clock ticks). The examples publish and ack one
# message at a time, so wall time is the client's; the broker's CPU time is the figure to compare.
set -euo pipefail
PORT=$1 PID=$2 N=${3:-100000}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT/%2f"
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
now() { date +%s.%N; }
t0=$(ticks) s0=$(now)
target/release/examples/producer "$N" >/dev/null
t1=$(ticks) s1=$(now)
target/release/examples/consumer "$N" >/dev/null
t2=$(ticks) s2=$(now)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
awk -v port="$PORT" -v n="$N" -v hz="$HZ" -v p=$((t1 - t0)) -v c=$((t2 - t1)) -v ws="$s0" -v w1="$s1" -v w2="$s2" -v rss="$rss" 'BEGIN {
    printf "port %s: publish+confirm %.2f s wall, broker %.1f us/msg; consume+ack %.2f s wall, broker %.1f us/msg; RSS %d kB\n",
        port, w1 - ws, p / hz / n * 1e6, w2 - w1, c / hz / n * 1e6, rss }'

#!/usr/bin/env bash
# The client libraries' own upstream test suites, run against the real broker binary:
#   amqplib  (Node.js, npm)  test/connect, callback_api, channel_api .test.js   node --test
#   py-amqp  (Python, PyPI)  t/integration/test_rmq.py                           pytest
#   kombu    (Python, PyPI)  t/integration/test_py_amqp.py                       pytest
# Only their broker-backed files run: the rest of each suite tests the client against mocks.
# (pika's acceptance tests are not in any package a registry serves; tests/interop has ours.)
#
# Usage: bash scripts/client-suites.sh [amqplib|py-amqp|kombu ...]     (default: all three)
#   WARREN_BIN                   the broker to start (default target/debug/warren); it listens on
#                                a free port of [::] (dual-stack, as its default listener), with a
#                                fresh data dir, and is stopped with SIGTERM at the end
#   CLIENT_SUITES_EXTERNAL_PORT  run against a broker already listening on that loopback port
#                                instead (e.g. a RabbitMQ node, guest/guest, vhost /)
#   CLIENT_SUITES_CACHE          where the pinned suites and their venv are kept
#                                (default .cache/client-suites; fetched once from npm / PyPI)
#
# Prints one line per suite and exits non-zero when any test fails, except the tests listed in
# scripts/client-suites/excluded.tsv (RabbitMQ-only by design, or needing TLS or the internet; each
# with its reason), which are skipped by name and reported so. Needs node >= 20.14 with npm, and
# python3 with venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
HERE="$ROOT/scripts/client-suites"

# Pinned suites; bump deliberately (new sha256 from the downloaded archive).
AMQPLIB_VERSION=2.1.0 # the last amqplib whose npm package ships test/
AMQPLIB_SHA256=901f90f9f960bdf326562f8a59f6153e632938132eed085c9787d95b51259c8a
PY_AMQP_VERSION=5.4.2
PY_AMQP_SHA256=9362660c4a31150cf18e78cae2ce8aa1e929fc6c6739e69f6dd5dbea9c3edc82
KOMBU_VERSION=5.7.0 # needs amqp >= 5.4.2
KOMBU_SHA256=31e62fdfd2381caa3422f8e02b84a491d9a2180ddda74507b57f4cb1e1c2c2c9
# The Python suites' venv. pytest-rerunfailures is left out on purpose: upstream marks tests
# flaky(reruns=5), and a rerun would hide a broker that fails intermittently.
PY_REQUIREMENTS=(pytest==8.0.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4
    pytest-timeout==2.4.0 vine==5.1.0 "amqp==$PY_AMQP_VERSION")

NODE_TEST_TIMEOUT_MS=5000 # per amqplib test or hook (upstream runs them with 1000)
PY_TEST_TIMEOUT=30        # per pytest test, seconds (kombu's TTL tests sleep 4 s)
SUITE_TIMEOUT=300         # per suite (amqplib: per file), seconds: a hang fails, not blocks CI

CACHE="${CLIENT_SUITES_CACHE:-$ROOT/.cache/client-suites}"
WARREN_BIN="${WARREN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/warren}"
EXTERNAL_PORT="${CLIENT_SUITES_EXTERNAL_PORT:-}"
ALL_SUITES=(amqplib py-amqp kombu)
SUITES=("${@:-${ALL_SUITES[@]}}")

die() {
    echo "client-suites: $*" >&2
    exit 1
}

for s in "${SUITES[@]}"; do
    case " ${ALL_SUITES[*]} " in *" $s "*) ;; *) die "unknown suite '$s' (known: ${ALL_SUITES[*]})" ;; esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/client-suites.XXXXXX")"
WARREN_PID=""
SUITE_PID=""
KEEP_WORK=0
stop_warren() {
    [ -n "$WARREN_PID" ] || return 0
    local pid="$WARREN_PID" i
    WARREN_PID=""
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "client-suites: warren (pid $pid) still running 15 s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    if [ -n "$SUITE_PID" ]; then
        kill -TERM -- "-$SUITE_PID" 2>/dev/null || kill -TERM "$SUITE_PID" 2>/dev/null || true
        wait "$SUITE_PID" 2>/dev/null || true
    fi
    stop_warren || true
    rm -rf "$WORK/warren-data"
    if [ "$KEEP_WORK" = 1 ]; then
        echo "client-suites: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------------
needs_node=0
for s in "${SUITES[@]}"; do [ "$s" = amqplib ] && needs_node=1; done
if [ "$needs_node" = 1 ]; then
    command -v node >/dev/null && command -v npm >/dev/null ||
        die "amqplib's suite needs node (>= 20.14) and npm on PATH"
    node --help | grep -q -- '--test-force-exit' ||
        die "amqplib's suite needs node >= 20.14 (node --test --test-force-exit); found $(node --version)"
fi

# --- the pinned suites, fetched once into the cache ------------------------------------------
mkdir -p "$CACHE"
VENV="$CACHE/venv"
PY="$VENV/bin/python"

check_sha256() { # file want
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    [ "$got" = "$2" ] || die "$(basename "$1"): sha256 $got, pinned $2"
}

# unpack archive name-version: into $CACHE/name-version, atomically (a half-done fetch is redone)
unpack() { # archive dest
    local tmp="$2.partial"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar xzf "$1" -C "$tmp" --strip-components=1
    mv "$tmp" "$2"
}

python_venv() {
    local stamp="$VENV/.requirements" want="${PY_REQUIREMENTS[*]}"
    if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "client-suites: installing ${PY_REQUIREMENTS[*]} into ${VENV#"$ROOT"/}"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
    echo "$want" >"$stamp"
}

fetch_npm() { # name version sha256 -> $CACHE/name-version
    local dest="$CACHE/$1-$2"
    [ -d "$dest" ] && return 0
    echo "client-suites: fetching $1 $2 from npm into ${dest#"$ROOT"/}"
    mkdir -p "$WORK/fetch"
    (cd "$WORK/fetch" && npm pack --silent "$1@$2" >/dev/null)
    check_sha256 "$WORK/fetch/$1-$2.tgz" "$3"
    unpack "$WORK/fetch/$1-$2.tgz" "$dest"
}

fetch_sdist() { # name version sha256 -> $CACHE/name-version
    local dest="$CACHE/$1-$2"
    [ -d "$dest" ] && return 0
    echo "client-suites: fetching the $1 $2 sdist from PyPI into ${dest#"$ROOT"/}"
    mkdir -p "$WORK/fetch"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$WORK/fetch" "$1==$2"
    check_sha256 "$WORK/fetch/$1-$2.tar.gz" "$3"
    unpack "$WORK/fetch/$1-$2.tar.gz" "$dest"
}

for s in "${SUITES[@]}"; do
    case "$s" in
    amqplib) fetch_npm amqplib "$AMQPLIB_VERSION" "$AMQPLIB_SHA256" ;;
    py-amqp)
        python_venv
        fetch_sdist amqp "$PY_AMQP_VERSION" "$PY_AMQP_SHA256"
        ;;
    kombu)
        python_venv
        fetch_sdist kombu "$KOMBU_VERSION" "$KOMBU_SHA256"
        ;;
    esac
done

# --- the broker ------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() { # a port free on both 127.0.0.1 and ::1 (amqplib's tests also connect to [::1])
    python3 - <<'EOF'
import socket
for _ in range(50):
    with socket.socket() as s4:
        s4.bind(("127.0.0.1", 0))
        port = s4.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6) as s6:
                s6.bind(("::1", port))
        except OSError:
            continue
        print(port)
        break
else:
    raise SystemExit("no port free on both 127.0.0.1 and ::1")
EOF
}

if [ -n "$EXTERNAL_PORT" ]; then
    PORT="$EXTERNAL_PORT"
    port_open "$PORT" || die "nothing listens on 127.0.0.1:$PORT (CLIENT_SUITES_EXTERNAL_PORT)"
    BROKER="the broker on 127.0.0.1:$PORT"
else
    [ -x "$WARREN_BIN" ] || die "no broker binary at $WARREN_BIN (cargo build, or set WARREN_BIN)"
    PORT="$(free_port)"
    # "[::]" as the embedded default listener is: dual-stack, so amqplib's tests reach it over
    # both 127.0.0.1 and [::1] through the one listener.
    cat >"$WORK/warren.toml" <<EOF
[server]
listeners = ["[::]:$PORT"]
management_listeners = []
EOF
    "$WARREN_BIN" --config "$WORK/warren.toml" --data-dir "$WORK/warren-data" \
        >"$WORK/warren.log" 2>&1 &
    WARREN_PID=$!
    for ((i = 0; i < 300; i++)); do
        port_open "$PORT" && break
        kill -0 "$WARREN_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! port_open "$PORT"; then
        KEEP_WORK=1
        tail -n 20 "$WORK/warren.log" >&2 || true
        die "warren ($WARREN_BIN) did not start listening on 127.0.0.1:$PORT"
    fi
    BROKER="warren on 127.0.0.1:$PORT"
fi

# Upstream's tests assume a fresh broker, and kombu's test_PyAMQPPriority::
# test_publish_requeue_consume leaves its durable queue behind with its messages requeued, which
# break the next run. Warren starts from an empty data dir every time; on an external broker that
# queue is deleted first.
LEFTOVER_QUEUES=(priority_requeue_test)
if [ -n "$EXTERNAL_PORT" ] && [ -x "$PY" ]; then
    "$PY" - "$PORT" "${LEFTOVER_QUEUES[@]}" <<'EOF' || die "could not delete the queues the last run left"
import sys
import amqp
with amqp.Connection(f"127.0.0.1:{sys.argv[1]}") as conn:
    channel = conn.channel()
    for queue in sys.argv[2:]:
        channel.queue_delete(queue)
EOF
fi

# --- running the suites ----------------------------------------------------------------------
# The exclusions of one suite, as "id<TAB>reason" lines.
excluded() { awk -F '\t' -v s="$1" '!/^#/ && NF >= 3 && $1 == s { print $2 "\t" $3 }' "$HERE/excluded.tsv"; }

TOTAL_PASS=0 TOTAL_FAIL=0 TOTAL_SKIP=0 FAILED_SUITES=()

# in_suite dir log command...: runs the command in dir under `timeout` (exit 124 when it runs out),
# output to log. In the background and waited for, so that an INT or TERM to this script is acted
# on at once: cleanup ends the command's process group (timeout leads one).
in_suite() {
    local dir="$1" log="$2" rc=0
    shift 2
    (cd "$dir" && exec timeout -k 10 "$SUITE_TIMEOUT" "$@") >"$log" 2>&1 &
    SUITE_PID=$!
    wait "$SUITE_PID" || rc=$?
    SUITE_PID=""
    return "$rc"
}

# report name rc pass fail skip note detail-file
report() {
    local name="$1" rc="$2" pass="$3" fail="$4" skip="$5" note="$6" details="$7"
    TOTAL_PASS=$((TOTAL_PASS + pass)) TOTAL_FAIL=$((TOTAL_FAIL + fail)) TOTAL_SKIP=$((TOTAL_SKIP + skip))
    echo "$name: $pass passed, $fail failed, $skip skipped${note:+ ($note)}"
    excluded "${name%-*}" | while IFS=$'\t' read -r id _; do echo "    skipped by name: $id"; done
    if [ "$rc" != 0 ] || [ "$fail" != 0 ] || [ -n "$note" ]; then
        FAILED_SUITES+=("$name")
        KEEP_WORK=1
        if [ -s "$details" ]; then
            head -n 200 "$details" | sed 's/^/    | /'
        fi
    fi
}

run_amqplib() {
    local name="amqplib-$AMQPLIB_VERSION" note="" rc=0 frc file tap want got
    local pass=0 fail=0 skip=0
    : >"$WORK/amqplib.details"
    count() { sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$tap" | tail -n 1; }
    # One node --test per file, so that a failure is known by its file as excluded.tsv names it.
    for file in connect.test.js callback_api.test.js channel_api.test.js; do
        tap="$WORK/amqplib-${file%.test.js}.tap" frc=0
        in_suite "$CACHE/$name" "$tap" env URL="amqp://guest:guest@127.0.0.1:$PORT" \
            CLIENT_SUITES_PORT="$PORT" CLIENT_SUITES_TEST_TIMEOUT_MS="$NODE_TEST_TIMEOUT_MS" \
            CLIENT_SUITES_EXCLUDE="$(excluded amqplib)" \
            node --require "$HERE/node-preload.js" --test --test-force-exit --test-reporter=tap \
            --test-timeout=$(((SUITE_TIMEOUT - 20) * 1000)) "test/$file" || frc=$?
        [ "$rc" != 0 ] || rc="$frc"
        if [ "$frc" = 124 ]; then
            note="${note:+$note; }$file timed out after ${SUITE_TIMEOUT}s"
        elif [ -z "$(count pass)" ]; then
            note="${note:+$note; }no summary from node --test $file, exit $frc"
        fi
        pass=$((pass + $(count pass) + 0))
        fail=$((fail + $(count fail) + $(count cancelled) + 0))
        skip=$((skip + $(count skipped) + 0))
        python3 "$HERE/tap_failures.py" "$tap" "$file" >>"$WORK/amqplib.details"
    done
    want="$(excluded amqplib | wc -l)"
    got="$(cat "$WORK"/amqplib-*.tap | grep -c '# SKIP excluded: ' || true)"
    [ "$want" = "$got" ] || note="${note:+$note; }$want tests excluded by name but $got skipped: stale excluded.tsv?"
    report "$name" "$rc" "$pass" "$fail" "$skip" "$note" "$WORK/amqplib.details"
}

run_pytest() { # suite version tests...
    local suite="$1" name="$1-$2" dir rc=0 note="" xml="$WORK/$1.xml" log="$WORK/$1.log"
    shift 2
    case "$suite" in py-amqp) dir="$CACHE/amqp-$PY_AMQP_VERSION" ;; *) dir="$CACHE/$name" ;; esac
    in_suite "$dir" "$log" env RABBITMQ_HOST=127.0.0.1 RABBITMQ_5672_TCP="$PORT" \
        CLIENT_SUITES_EXCLUDE="$(excluded "$suite")" \
        PYTHONPATH="$HERE" PYTHONDONTWRITEBYTECODE=1 \
        "$PY" -m pytest -p no:cacheprovider -p pytest_exclude \
        -q -rfEs --tb=short --timeout="$PY_TEST_TIMEOUT" \
        -W ignore::pytest.PytestUnknownMarkWarning \
        --junitxml="$xml" -o junit_family=xunit2 "$@" || rc=$?
    local counts pass fail skip
    counts="$("$PY" - "$xml" <<'EOF' 2>/dev/null || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
t = f = s = 0
for ts in suites:
    t += int(ts.get("tests", 0))
    f += int(ts.get("failures", 0)) + int(ts.get("errors", 0))
    s += int(ts.get("skipped", 0))
print(t - f - s, f, s)
EOF
)"
    if [ -n "$counts" ]; then
        read -r pass fail skip <<<"$counts"
    else
        pass=0 fail=0 skip=0 note="no report from pytest, exit $rc"
    fi
    [ "$rc" = 124 ] && note="timed out after ${SUITE_TIMEOUT}s"
    # What failed: pytest's failure sections and short summary, else the end of its output.
    if grep -qE '^=+ (FAILURES|ERRORS) =+$' "$log"; then
        sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,$p' "$log" | grep -v '^SKIPPED ' >"$WORK/$suite.details"
    else
        tail -n 40 "$log" >"$WORK/$suite.details"
    fi
    report "$name" "$rc" "$pass" "$fail" "$skip" "$note" "$WORK/$suite.details"
}

echo "client-suites: against $BROKER"
for s in "${SUITES[@]}"; do
    case "$s" in
    amqplib) run_amqplib ;;
    py-amqp) run_pytest py-amqp "$PY_AMQP_VERSION" t/integration/test_rmq.py ;;
    kombu) run_pytest kombu "$KOMBU_VERSION" t/integration/test_py_amqp.py ;;
    esac
    if [ -n "$WARREN_PID" ] && ! kill -0 "$WARREN_PID" 2>/dev/null; then
        KEEP_WORK=1
        tail -n 30 "$WORK/warren.log" | sed 's/^/    | /' >&2
        die "warren exited during the $s suite (its log above)"
    fi
done

if [ -n "$WARREN_PID" ]; then
    if ! stop_warren; then FAILED_SUITES+=("warren shutdown"); fi
    if [ "${#FAILED_SUITES[@]}" -gt 0 ]; then
        if grep -q -v ' INFO ' "$WORK/warren.log"; then
            echo "    warren's warnings and errors (the last 30):"
            grep -v ' INFO ' "$WORK/warren.log" | tail -n 30 | sed 's/^/    | /'
        fi
    fi
fi

echo "client-suites: $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
if [ "${#FAILED_SUITES[@]}" -gt 0 ]; then
    echo "client-suites: FAILED: ${FAILED_SUITES[*]} (against $BROKER)" >&2
    exit 1
fi

#!/usr/bin/env bash
# The whole test suite: build the broker, run every Rust test in the workspace, then the Python
# interop tests (pika against the real binary), the dashboard's end-to-end test (headless
# Chromium), then the client libraries' own upstream suites (scripts/client-suites.sh). Run from
# anywhere: `bash scripts/test.sh`.
# Needs rust (cargo), python3 with the venv module, node >= 20.14 with npm, and access to PyPI and
# the npm registry; installs Debian's chromium with apt-get when /usr/bin/chromium is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

step() { printf '\n==> %s\n' "$*"; }

step "cargo build"
cargo build

step "cargo test --workspace"
cargo test --workspace

VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/tests/interop/requirements.txt"
step "python venv at .venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# Installs a requirements file into the venv, again only when it changed since the last
# successful install (one stamp per file).
install_requirements() {
    local requirements="$1" stamp="$VENV/.$2.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" > "$stamp"
    fi
}
install_requirements "$REQUIREMENTS" requirements

step "pytest tests/interop"
export WARREN_BIN="${WARREN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/warren}"
"$VENV/bin/python" -m pytest -q tests/interop

step "pytest tests/interop, queues durable and messages persistent by default"
WARREN_TEST_DURABLE=1 "$VENV/bin/python" -m pytest -q tests/interop

step "pytest tests/dashboard (headless Chromium through Playwright)"
if [ ! -x /usr/bin/chromium ]; then
    # Debian's Chromium; Playwright drives it as is (`playwright install` is never run).
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
install_requirements "$ROOT/tests/dashboard/requirements.txt" dashboard-requirements
"$VENV/bin/python" -m pytest -q tests/dashboard

step "the client libraries' own test suites (amqplib, py-amqp, kombu) against the real binary"
bash scripts/client-suites.sh

step "all tests passed"

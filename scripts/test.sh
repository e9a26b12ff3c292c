#!/usr/bin/env bash
# The whole test suite: build the broker, run every Rust test in the workspace, then the Python
# interop tests (pika against the real binary), then the client libraries' own upstream suites
# (scripts/client-suites.sh). Run from anywhere: `bash scripts/test.sh`.
# Needs rust (cargo), python3 with the venv module, node >= 20.14 with npm, and access to PyPI and
# the npm registry.
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
# Reinstall only when requirements.txt changed since the last successful install.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$WANT" > "$STAMP"
fi

step "pytest tests/interop"
export WARREN_BIN="${WARREN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/warren}"
"$VENV/bin/python" -m pytest -q tests/interop

step "pytest tests/interop, queues durable and messages persistent by default"
WARREN_TEST_DURABLE=1 "$VENV/bin/python" -m pytest -q tests/interop

step "the client libraries' own test suites (amqplib, py-amqp, kombu) against the real binary"
bash scripts/client-suites.sh

step "all tests passed"

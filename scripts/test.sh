#!/usr/bin/env bash
# The one command that runs keygate's whole test suite from a clean checkout:
#   1. cargo build (debug, whole workspace)   -> target/debug/keygate
#   2. cargo test --workspace                  (PostgreSQL/Redis tests use KEYGATE_TEST_* if set)
#   3. a Python venv at .venv with tests/python/requirements.txt, reinstalled only when that
#      file (or the interpreter) changed
#   4. pytest tests/python against the binary from step 1 (KEYGATE_BIN)
#   5. the web UI's browser tests (tests/ui: npm ci when needed, then node --test in headless Chromium)
# Extra arguments go to pytest, e.g. `scripts/test.sh -k vijil -x`.
# Exits non-zero as soon as any step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
REQS="$ROOT/tests/python/requirements.txt"
STAMP="$VENV/.requirements.sha256"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac

step() { printf '\n==> %s\n' "$*"; }

step "cargo build --workspace"
cargo build --workspace

step "cargo test --workspace"
cargo test --workspace

step "Python venv ($VENV)"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
want="$( { sha256sum "$REQS" | cut -d' ' -f1; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    echo "installing $REQS"
    rm -f "$STAMP"
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQS"
    echo "$want" > "$STAMP"
else
    echo "requirements unchanged; not reinstalling"
fi

step "pytest tests/python"
export KEYGATE_BIN="$target_dir/debug/keygate"
"$VENV/bin/python" -m pytest -q tests/python "$@"

# The web UI in headless Chromium (Debian's chromium, driven by playwright-core). Needs Node.js
# and /usr/bin/chromium (.ci/run installs it when missing). Screenshots: target/ui-screenshots/.
step "browser tests tests/ui"
UI_DIR="$ROOT/tests/ui"
if [[ ! -d "$UI_DIR/node_modules/playwright-core" ]] \
    || [[ "$UI_DIR/package-lock.json" -nt "$UI_DIR/node_modules/.package-lock.json" ]]; then
    (cd "$UI_DIR" && npm ci --no-audit --no-fund)
fi
export KEYGATE_MOCK_BIN="$target_dir/debug/keygate-mock"
(cd "$UI_DIR" && node --test --test-concurrency=1 ui.test.mjs)

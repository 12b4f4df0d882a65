#!/usr/bin/env bash
# Runs the Rust and Python suites N times under CPU contention and reports every test that ever
# failed (docs/testing.md, "Flaky tests"). A test that passes alone but fails here depends on
# timing: it waits a fixed time, or asserts a duration too close to what it measures.
#
#   scripts/flaky.sh                 5 runs of both suites, one busy process per core
#   scripts/flaky.sh -n 10           10 runs
#   scripts/flaky.sh --rust          the Rust suite only (--python: the Python suite only)
#   scripts/flaky.sh --no-stress     without the busy processes
#   scripts/flaky.sh -- -k venice    the rest goes to pytest
#
# The contention is `stress-ng --cpu <cores>` when it is installed, else one shell busy loop per
# core; both at the same priority as the tests, and both stopped when the script ends, however
# it ends. The PostgreSQL and Redis tests run when KEYGATE_TEST_DATABASE_URL and
# KEYGATE_TEST_REDIS_URL are set (as .ci/run sets them).
# Logs of every run: target/flaky/<run>-{rust,python}.log. Exit status 1 when any test failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

runs=5
rust=1
python=1
stress=1
pytest_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) runs="$2"; shift 2 ;;
        --rust) python=0; shift ;;
        --python) rust=0; shift ;;
        --no-stress) stress=0; shift ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "-n wants a positive number, got '$runs'" >&2
    exit 2
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
logs="$target_dir/flaky"
mkdir -p "$logs"
failures="$logs/failures.txt"
: > "$failures"

step() { printf '\n==> %s\n' "$*"; }

stressors=()
stop_stress() {
    for pid in "${stressors[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    stressors=()
}
trap stop_stress EXIT INT TERM

start_stress() {
    local cores
    cores="$(nproc)"
    if command -v stress-ng >/dev/null 2>&1; then
        setsid stress-ng --cpu "$cores" --quiet >/dev/null 2>&1 &
        stressors+=("$!")
        echo "contention: stress-ng --cpu $cores"
    else
        for _ in $(seq 1 "$cores"); do
            setsid bash -c 'while :; do :; done' >/dev/null 2>&1 &
            stressors+=("$!")
        done
        echo "contention: $cores busy loops"
    fi
}

# Builds before the contention starts: a build under it only takes longer and tests nothing.
step "building (debug: the workspace, its tests, keygate and keygate-mock)"
cargo build --workspace --all-targets
if [[ "$python" == 1 ]]; then
    step "Python venv (scripts/test.sh's)"
    VENV="$ROOT/.venv"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV"
        PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q \
            -r tests/python/requirements.txt
    fi
    export KEYGATE_BIN="$target_dir/debug/keygate"
fi

if [[ "$stress" == 1 ]]; then
    start_stress
fi

# Each failed test as "<suite> <binary or file> <test>", one a line, appended to $failures.
rust_failures() {  # rust_failures <log>
    awk '
        /^ *Running / { bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin) }
        /^ *Doc-tests / { bin = "doctests:" $2 }
        /^test .* \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); print "rust " bin " " $0 }
    ' "$1"
}

python_failures() {  # python_failures <log>
    grep -E '^(FAILED|ERROR) ' "$1" | sed -E 's/^(FAILED|ERROR) ([^ ]+).*/python \2/' || true
}

overall=0
for run in $(seq 1 "$runs"); do
    if [[ "$rust" == 1 ]]; then
        step "run $run/$runs: cargo test --workspace --no-fail-fast"
        log="$logs/$run-rust.log"
        started=$SECONDS
        if cargo test --workspace --no-fail-fast >"$log" 2>&1; then
            echo "passed in $((SECONDS - started)) s"
        else
            overall=1
            found="$(rust_failures "$log")"
            if [[ -z "$found" ]]; then
                found="rust (no test named: a build error or a crashed test binary; see $log)"
            fi
            echo "$found" | tee -a "$failures"
            echo "failed in $((SECONDS - started)) s (log: $log)"
        fi
    fi
    if [[ "$python" == 1 ]]; then
        step "run $run/$runs: pytest tests/python"
        log="$logs/$run-python.log"
        started=$SECONDS
        if "$ROOT/.venv/bin/python" -m pytest -q -rfE tests/python "${pytest_args[@]}" >"$log" 2>&1; then
            echo "passed in $((SECONDS - started)) s: $(tail -1 "$log")"
        else
            overall=1
            found="$(python_failures "$log")"
            if [[ -z "$found" ]]; then
                found="python (no test named; see $log)"
            fi
            echo "$found" | tee -a "$failures"
            echo "failed in $((SECONDS - started)) s (log: $log)"
        fi
    fi
done
stop_stress

step "summary: $runs run(s)$([[ "$stress" == 1 ]] && echo ' under CPU contention')"
if [[ -s "$failures" ]]; then
    echo "tests that failed at least once (times, test):"
    sort "$failures" | uniq -c | sort -rn
else
    echo "no test failed"
fi
exit "$overall"

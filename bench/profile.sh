#!/usr/bin/env bash
# Where keygate's time goes on the hot path (docs/benchmarks.md, "Where the time goes").
#
#   bench/profile.sh perf      [--no-build]   # perf record (cpu-clock) of keygate at saturation
#   bench/profile.sh callgrind [--no-build]   # valgrind --tool=callgrind over N requests
#   bench/profile.sh syscalls  [--no-build]   # threads, context switches, syscalls per request
#
# Same setup as bench/run.sh (embedded default, keygate pinned to CPU $GW_CORE, the mock and oha on
# $LOAD_CORE, the benchmark's body). Writes bench/results/profile-<tool>-<label>.txt:
#   perf:      self time per symbol and per component (sqlx/SQLite, hyper, reqwest, tokio, serde_json,
#              allocator, kernel…) over PROFILE_DURATION (10s) of non-streaming saturation
#              (PROFILE_CONNS, 64; PROFILE_BODY=stream for the streaming body);
#   callgrind: instructions, inclusive and self, per function over CALLGRIND_REQUESTS (3000)
#              non-streaming requests on 4 connections (repeatable whatever else the machine does).
#              CALLGRIND_KEEP=<file> keeps the raw callgrind output for callgrind_annotate.
# perf needs perf_event access (root, or kernel.perf_event_paranoid <= 1); the release binary has
# symbols but no frame pointers, so perf gives self time and callgrind gives the call tree.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOOL="${1:-perf}"
shift || true
BUILD=1
LABEL="$(date -u +%Y%m%d-%H%M%S)"
OUT="$BENCH_DIR/results"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --label) LABEL="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
DURATION="${PROFILE_DURATION:-10s}"
CONNS="${PROFILE_CONNS:-64}"
REQUESTS="${CALLGRIND_REQUESTS:-3000}"
PBODY="$BODY"
[[ "${PROFILE_BODY:-}" == stream ]] && PBODY="$STREAM_BODY"

if [[ "$BUILD" == 1 ]]; then
    (cd "$ROOT" && nice -n 10 cargo build --release -p keygate -p keygate-testkit --bin keygate --bin keygate-mock >&2)
fi
ensure_oha
WORK="$(mktemp -d /tmp/keygate-profile.XXXXXX)"
mkdir -p "$OUT"
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
MASTER_KEY="$(openssl rand -base64 32)"
REPORT="$OUT/profile-$TOOL-$LABEL.txt"

start_mock
case "$TOOL" in
perf)
    command -v perf >/dev/null 2>&1 || die "perf is not installed (Debian: linux-perf)"
    start_keygate "$WORK/kg" || die "keygate did not start"
    setup_keygate "$WORK/kg"
    mapfile -t H < <(KG_HDRS)
    hdrs=()
    for h in "${H[@]}"; do hdrs+=(-H "$h"); done
    # Warm up, then record while oha saturates keygate.
    on_core "$LOAD_CORE" "$OHA" --no-tui --output-format quiet -z 2s -c "$CONNS" -m POST -T application/json \
        -d "$PBODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" >/dev/null 2>&1 || true
    secs="${DURATION%s}"
    perf record -e cpu-clock -F 2999 -p "$KG_PID" -o "$WORK/perf.data" -- sleep "$secs" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.3
    on_core "$LOAD_CORE" "$OHA" --no-tui --output-format json -z "$DURATION" -c "$CONNS" -m POST \
        -T application/json -d "$PBODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" >"$WORK/oha.json" 2>/dev/null || true
    wait "$perf_pid" || true
    perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,sym --percent-limit 0.2 2>/dev/null \
        | grep -v '^#' | grep -v '^$' >"$WORK/perf.txt" || true
    perf report -i "$WORK/perf.data" --stdio --no-children --sort dso 2>/dev/null \
        | grep -v '^#' | grep -v '^$' >"$WORK/perf-dso.txt" || true
    "$PYTHON" - "$WORK/perf.txt" "$WORK/oha.json" "$WORK/perf-dso.txt" >"$REPORT" <<'EOF'
import json, re, sys
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if m:
        rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
try:
    o = json.load(open(sys.argv[2]))
    rps = o["summary"]["requestsPerSec"]
except Exception:
    rps = None
RULES = [
    ("kernel: network stack and syscalls", lambda d, k, s: k == "k" or d.startswith("[kernel")),
    ("SQLite (usage writes, refresh polls)", lambda d, k, s: s.startswith("sqlite3") or "libsqlite3" in s),
    ("sqlx (driver, Any, sqlite worker)", lambda d, k, s: "sqlx" in s),
    ("allocator (malloc/free/realloc)", lambda d, k, s: re.search(r"\b(_int_malloc|_int_free|malloc|free|realloc|cfree|__libc_malloc|__libc_free|_int_realloc|malloc_consolidate|tcache|unlink_chunk)\b", s) is not None),
    ("serde_json", lambda d, k, s: "serde_json" in s or "serde::" in s),
    ("hyper / h1 codec / http", lambda d, k, s: "hyper" in s or "httparse" in s or s.startswith("http::") or "<http::" in s),
    ("reqwest / connection pool", lambda d, k, s: "reqwest" in s or "hyper_util" in s),
    ("axum / tower", lambda d, k, s: "axum" in s or "tower" in s),
    ("tokio runtime, timers, channels", lambda d, k, s: "tokio" in s or "mio::" in s),
    ("tracing", lambda d, k, s: "tracing" in s),
    ("hashing (SipHash, HMAC, SHA-256, CRC32)", lambda d, k, s: "sip" in s.lower() or "sha2" in s or "hmac" in s or "crc32" in s),
    ("keygate code", lambda d, k, s: "keygate" in s),
    ("libc memcpy/memmove/memset/str*", lambda d, k, s: re.search(r"(__memcpy|__memmove|__memset|memcpy|memmove|memset|__strlen|__memcmp|memcmp|__memchr)", s) is not None),
    ("other libc / pthread / futex", lambda d, k, s: "libc" in d),
]
groups = {}
for pct, dso, kind, sym in rows:
    for name, rule in RULES:
        if rule(dso, kind, sym):
            break
    else:
        name = "other (core/std/alloc, inlined code)"
    groups[name] = groups.get(name, 0.0) + pct
print("perf record -e cpu-clock of keygate at saturation (self time; symbols >= 0.2%)")
if rps:
    print(f"throughput during the profile: {rps:,.0f} req/s")
print("\nBy binary (all samples):")
for line in open(sys.argv[3]):
    if line.strip():
        print("  " + line.strip())
print("\nBy component (sum of the listed symbols):")
for name, pct in sorted(groups.items(), key=lambda x: -x[1]):
    print(f"  {pct:6.2f}%  {name}")
print("\nTop symbols:")
for pct, dso, kind, sym in rows[:60]:
    print(f"  {pct:6.2f}%  [{kind}] {dso:22.22s} {sym[:140]}")
EOF
    ;;
callgrind)
    command -v valgrind >/dev/null 2>&1 || die "valgrind is not installed"
    KG_WRAP="valgrind --tool=callgrind --callgrind-out-file=$WORK/callgrind.out --instr-atstart=no" \
        KG_READY_TIMEOUT=180 start_keygate "$WORK/kg" || die "keygate did not start under callgrind"
    setup_keygate "$WORK/kg"
    mapfile -t H < <(KG_HDRS)
    hdrs=()
    for h in "${H[@]}"; do hdrs+=(-H "$h"); done
    # Warm-up outside the measurement, then count instructions over REQUESTS requests only.
    on_core "$LOAD_CORE" "$OHA" --no-tui --output-format quiet -n 200 -c 4 -m POST -T application/json \
        -d "$PBODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" >/dev/null 2>&1 || true
    callgrind_control -i on "$KG_PID" >/dev/null
    on_core "$LOAD_CORE" "$OHA" --no-tui --output-format json -n "$REQUESTS" -c 4 -m POST -T application/json \
        -d "$PBODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" >"$WORK/oha.json" 2>/dev/null || true
    sleep 1  # let the usage writer flush its last batch inside the measurement
    callgrind_control -i off "$KG_PID" >/dev/null
    stop_pid "$KG_PID"
    sleep 1
    out="$(ls "$WORK"/callgrind.out* | head -1)"
    [[ -n "${CALLGRIND_KEEP:-}" ]] && cp "$out" "$CALLGRIND_KEEP"
    {
        echo "valgrind --tool=callgrind: keygate over $REQUESTS non-streaming requests (4 connections)"
        "$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("answers:", d["statusCodeDistribution"])' "$WORK/oha.json" || true
        echo
        echo "== inclusive (per request = Ir / $REQUESTS) =="
        callgrind_annotate --inclusive=yes --threshold=99 "$out" 2>/dev/null | sed -n 1,120p
        echo
        echo "== self =="
        callgrind_annotate --inclusive=no --threshold=95 "$out" 2>/dev/null | sed -n 1,80p
    } >"$REPORT"
    ;;
syscalls)
    # Threads, context switches and system calls per request at a fixed rate (PROFILE_RATE, 2000).
    command -v strace >/dev/null 2>&1 || die "strace is not installed"
    RATE="${PROFILE_RATE:-2000}"
    start_keygate "$WORK/kg" || die "keygate did not start"
    setup_keygate "$WORK/kg"
    mapfile -t H < <(KG_HDRS)
    hdrs=()
    for h in "${H[@]}"; do hdrs+=(-H "$h"); done
    ctx() { cat /proc/"$KG_PID"/task/*/status | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { s += $2 } END { print s }'; }
    load() {  # load DURATION BODY -> answers
        on_core "$LOAD_CORE" "$OHA" --no-tui --output-format json -z "$1" -c 16 -q "$RATE" -m POST \
            -T application/json -d "$2" "${hdrs[@]}" "$KG_URL/v1/chat/completions" 2>/dev/null \
            | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(sum(d["statusCodeDistribution"].values()))'
    }
    {
        echo "keygate at $RATE req/s, 16 connections (embedded default)"
        echo "threads: $(ls /proc/"$KG_PID"/task | wc -l)"
        for kind in plain stream; do
            b="$BODY"; [[ "$kind" == stream ]] && b="$STREAM_BODY"
            c0="$(ctx)"; n="$(load 5s "$b")"; c1="$(ctx)"
            echo "$kind: context switches per request: $(( (c1 - c0) * 100 / n / 100 )).$(( (c1 - c0) * 100 / n % 100 )) ($n requests)"
            strace -c -f -p "$KG_PID" -o "$WORK/strace-$kind.txt" &
            st=$!
            sleep 0.5
            n="$(load 5s "$b")"
            kill -INT "$st"; wait "$st" 2>/dev/null || true
            echo "$kind: system calls over $n requests (strace -c -f; per request = calls / $n):"
            "$PYTHON" - "$WORK/strace-$kind.txt" "$n" <<'EOF'
import re, sys
n = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
    if m:
        rows.append((int(m.group(1)), m.group(3)))
rows.sort(reverse=True)
total = sum(c for c, _ in rows if _ != "total")
print(f"  total {total / n:.2f} per request")
for c, name in rows:
    if name != "total" and c / n >= 0.05:
        print(f"  {c / n:6.2f}  {name}")
EOF
        done
    } >"$REPORT"
    stop_pid "$KG_PID"
    ;;
*) die "usage: bench/profile.sh perf|callgrind|syscalls [--no-build]" ;;
esac
log "wrote $REPORT"
head -40 "$REPORT"

# Shared helpers of bench/run.sh and bench/peers.sh (sourced, not run).
# Every server started here listens on 127.0.0.1 and is stopped by `bench_cleanup` (EXIT trap).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
KEYGATE_BIN="${KEYGATE_BIN:-$TARGET_DIR/release/keygate}"
MOCK_BIN="${MOCK_BIN:-$TARGET_DIR/release/keygate-mock}"
OHA="${OHA:-oha}"
PYTHON="${PYTHON:-python3}"

# CPU pinning: the server under test on GW_CORE, the mock upstream and the load generator on
# LOAD_CORE. With one CPU, or without taskset, nothing is pinned (and the report says so).
GW_CORE="${GW_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"
if command -v taskset >/dev/null 2>&1 && [[ "$(nproc)" -ge 2 ]]; then
    PINNED=1
else
    PINNED=0
fi

BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}'
STREAM_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16,"stream":true}'

BENCH_PIDS=()

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

on_core() {  # on_core CORE|all cmd...
    local core="$1"; shift
    if [[ "$PINNED" == 1 && "$core" != all ]]; then
        taskset -c "$core" "$@"
    else
        "$@"
    fi
}

# spawn_on_core CORE|all OUT ERR cmd...: starts cmd in the background (exec'd, so SPAWNED_PID is
# the command's own pid, not a subshell's) and registers it for cleanup.
spawn_on_core() {
    local core="$1" out="$2" err="$3"
    shift 3
    if [[ "$PINNED" == 1 && "$core" != all ]]; then
        (exec taskset -c "$core" "$@") >"$out" 2>"$err" &
    else
        (exec "$@") >"$out" 2>"$err" &
    fi
    SPAWNED_PID=$!
    BENCH_PIDS+=("$SPAWNED_PID")
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${BENCH_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    BENCH_PIDS=()
}

stop_pid() {  # stop_pid PID: SIGTERM, then SIGKILL after 10 s
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

now_ns() { date +%s%N; }

# Waits until URL answers 200 (at most $2 seconds); prints the epoch ns of the first 200.
wait_http_ok() {
    "$PYTHON" "$BENCH_DIR/waitready.py" "$1" "${2:-30}"
}

# Start-up timing without the poller's own start-up in it: arm_waiter URL LIMIT FILE starts the
# poller and returns once it polls; after the spawn, `wait_armed FILE` prints the epoch ns of the
# first 200 (fails on time-out).
arm_waiter() {
    rm -f "$3" "$3.armed"
    "$PYTHON" "$BENCH_DIR/waitready.py" "$1" "$2" --armed "$3.armed" >"$3" &
    WAITER_PID=$!
    for _ in $(seq 1 500); do
        [[ -f "$3.armed" ]] && return 0
        sleep 0.01
    done
    return 1
}
wait_armed() {  # sets READY_NS (not in a $(...) subshell: the poller is this shell's child)
    wait "$WAITER_PID" || return 1
    READY_NS="$(cat "$1")"
}

# CPU time of a process and all its threads (live and exited), in ns: utime + stime.
cpu_ns() {
    local pid="$1" hz
    hz="$(getconf CLK_TCK)"
    awk -v hz="$hz" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000000000 / hz }' "/proc/$pid/stat" 2>/dev/null || echo 0
}

# On-CPU time of the live threads in ns (schedstat, ns resolution; for low request counts).
sched_ns() {
    local pid="$1"
    cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%d\n", s }'
}

# Busy time of one CPU (all processes), in ns, from /proc/stat (user+nice+system+irq+softirq+steal).
core_busy_ns() {
    local core="$1" hz
    [[ "$core" == all ]] && { echo 0; return; }
    hz="$(getconf CLK_TCK)"
    awk -v c="cpu$core" -v hz="$hz" '$1 == c { printf "%d\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1000000000 / hz }' /proc/stat
}

mem_kib() {  # mem_kib PID FIELD (VmHWM, VmRSS)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

ensure_oha() {
    if command -v "$OHA" >/dev/null 2>&1; then
        return 0
    fi
    if [[ -x "$HOME/.cargo/bin/oha" ]]; then
        OHA="$HOME/.cargo/bin/oha"
        return 0
    fi
    log "oha not found: cargo install oha --locked (a few minutes, once)"
    nice -n 10 cargo install oha --locked >&2
    OHA="$HOME/.cargo/bin/oha"
}

# The mock upstream on LOAD_CORE; sets MOCK_URL (http://127.0.0.1:PORT) and MOCK_PID.
start_mock() {
    local out="$WORK/mock.out" port
    port="$(free_port)"
    spawn_on_core "$LOAD_CORE" "$out" "$out.err" "$MOCK_BIN" --listen "127.0.0.1:$port" --no-record --threads 1 \
        --stream-chunks "${STREAM_CHUNKS:-3}" --chunk-delay-ms "${CHUNK_DELAY_MS:-0}"
    MOCK_PID="$SPAWNED_PID"
    for _ in $(seq 1 100); do
        if grep -q 'listening on' "$out" 2>/dev/null; then break; fi
        sleep 0.05
    done
    MOCK_URL="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$out" | head -1)"
    [[ -n "$MOCK_URL" ]] || die "the mock did not start: $(cat "$out")"
    MOCK_URL="${MOCK_URL%/}"
    log "mock upstream on $MOCK_URL (pid $MOCK_PID)"
}

oha_json_flag() {
    if "$OHA" --help 2>&1 | grep -q -- '--output-format'; then
        echo "--output-format json"
    else
        echo "-j"
    fi
}

# run_load NAME PID URL RATE CONNS DURATION BODY [HEADER...]
# RATE 0 = as fast as possible (saturation). Writes $RAW/NAME.json (oha) and $RAW/NAME.meta.json
# (CPU of PID during the run, requests, memory).
run_load() {
    local name="$1" pid="$2" url="$3" rate="$4" conns="$5" dur="$6" body="$7"
    shift 7
    local hdrs=() h
    for h in "$@"; do hdrs+=(-H "$h"); done
    local rate_args=()
    if [[ "$rate" != 0 ]]; then
        rate_args=(-q "$rate" --latency-correction)
    fi
    local core="$LOAD_CORE"
    [[ "${LOAD_ALL_CORES:-0}" == 1 ]] && core=all
    local c0 s0 c1 s1 t0 t1 b0 b1
    c0="$(cpu_ns "$pid")"; s0="$(sched_ns "$pid")"; b0="$(core_busy_ns "$GW_CORE")"; t0="$(now_ns)"
    # shellcheck disable=SC2046
    on_core "$core" "$OHA" --no-tui $(oha_json_flag) -z "$dur" -c "$conns" "${rate_args[@]}" \
        -m POST -T application/json -d "$body" "${hdrs[@]}" "$url" >"$RAW/$name.json" 2>"$RAW/$name.err" || true
    t1="$(now_ns)"; c1="$(cpu_ns "$pid")"; s1="$(sched_ns "$pid")"; b1="$(core_busy_ns "$GW_CORE")"
    printf '{"name":"%s","pid":%s,"rate":%s,"conns":%s,"duration":"%s","cpu_ns":%s,"sched_ns":%s,"wall_ns":%s,"server_core_busy_ns":%s,"vm_hwm_kib":%s,"vm_rss_kib":%s}\n' \
        "$name" "$pid" "$rate" "$conns" "$dur" "$((c1 - c0))" "$((s1 - s0))" "$((t1 - t0))" "$((b1 - b0))" \
        "$(mem_kib "$pid" VmHWM)" "$(mem_kib "$pid" VmRSS)" >"$RAW/$name.meta.json"
    "$PYTHON" "$BENCH_DIR/report.py" --line "$RAW/$name.json" "$RAW/$name.meta.json" >&2 || true
}

# run_ttfb NAME PID URL RATE COUNT [HEADER...]: streamed requests on one connection, paced.
run_ttfb() {
    local name="$1" pid="$2" url="$3" rate="$4" count="$5"
    shift 5
    local c0 s0 c1 s1 hdrs=() h
    for h in "$@"; do hdrs+=(-H "$h"); done
    c0="$(cpu_ns "$pid")"; s0="$(sched_ns "$pid")"
    on_core "$LOAD_CORE" "$PYTHON" "$BENCH_DIR/ttfb.py" --url "$url" --rate "$rate" --count "$count" \
        --body "$STREAM_BODY" "${hdrs[@]}" >"$RAW/$name.ttfb.json" 2>"$RAW/$name.err" || true
    c1="$(cpu_ns "$pid")"; s1="$(sched_ns "$pid")"
    printf '{"name":"%s","pid":%s,"rate":%s,"cpu_ns":%s,"sched_ns":%s}\n' "$name" "$pid" "$rate" \
        "$((c1 - c0))" "$((s1 - s0))" >"$RAW/$name.meta.json"
    "$PYTHON" "$BENCH_DIR/report.py" --line "$RAW/$name.ttfb.json" "$RAW/$name.meta.json" >&2 || true
}

# ---- keygate under test (needs WORK, MASTER_KEY, MOCK_URL) ------------------------------------

api() {  # api METHOD PATH JSON -> response body on stdout; fails on non-2xx
    curl -sS --fail-with-body -X "$1" "$KG_URL$2" -H "Authorization: Bearer $ADMIN_KEY" \
        -H 'content-type: application/json' ${3:+-d "$3"}
}

json_get() { "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); [d:=d[k] for k in sys.argv[1:]]; print(d)' "$@"; }

# start_keygate DATA_DIR [extra serve args...]: sets KG_URL, KG_PID, KG_STARTUP_MS; fails if not ready
# in KG_READY_TIMEOUT (60) s. KG_WRAP (e.g. "valgrind --tool=callgrind") runs keygate under a tool.
start_keygate() {
    local dir="$1"; shift
    local port t0
    port="$(free_port)"
    KG_URL="http://127.0.0.1:$port"
    mkdir -p "$dir"
    arm_waiter "$KG_URL/readyz" "${KG_READY_TIMEOUT:-60}" "$WORK/ready.ns" || die "the readiness poller did not start"
    t0="$(now_ns)"
    spawn_on_core "$GW_CORE" "$dir/stdout" "$dir/stderr" env KEYGATE_MASTER_KEY="$MASTER_KEY" \
        KEYGATE_LOG="${KEYGATE_LOG:-warn,keygate=info}" ${KG_WRAP:-} "$KEYGATE_BIN" serve --listen "127.0.0.1:$port" \
        --data-dir "$dir" --allow-private-upstreams "$@"
    KG_PID="$SPAWNED_PID"
    if ! wait_armed "$WORK/ready.ns"; then
        kill -0 "$KG_PID" 2>/dev/null && stop_pid "$KG_PID"
        return 1
    fi
    KG_STARTUP_MS=$(( (READY_NS - t0) / 1000000 ))
    KG_STARTUP_INTERNAL="$(sed -n 's/.*startup_ms[=:" ]*\([0-9][0-9]*\).*/\1/p' "$dir/stderr" | tail -1)"
    log "keygate ready on $KG_URL in $KG_STARTUP_MS ms (own log: ${KG_STARTUP_INTERNAL:-?} ms), pid $KG_PID"
}

# setup_keygate: provider key on the mock, virtual key `bench`, an INFERENCE key -> INF_KEY.
setup_keygate() {
    ADMIN_KEY="$(grep -o 'kg_adm_[A-Za-z0-9]\{38\}' "$1/stdout" | head -1)"
    [[ -n "$ADMIN_KEY" ]] || die "no ADMIN key printed by keygate: $(head -c 500 "$1/stdout")"
    api POST /api/v1/provider_keys "{\"name\":\"mock\",\"modelHub\":\"openai\",\"apiKey\":\"sk-bench\",\"baseUrl\":\"$MOCK_URL/v1\",\"rateLimitPerInterval\":100000000,\"rateLimitInterval\":60}" >/dev/null
    api POST /api/v1/virtual_keys '{"name":"bench","slug":"bench","providerKey":"mock"}' >/dev/null
    INF_KEY="$(api POST /api/v1/api_keys '{"apiKeyType":"INFERENCE","description":"bench"}' | json_get data apiKey)"
    [[ "$INF_KEY" == kg_inf_* ]] || die "no INFERENCE key"
    # One request each way proves the path before it is measured.
    curl -sS --fail-with-body "$KG_URL/v1/chat/completions" -H "Authorization: Bearer $INF_KEY" \
        -H 'x-keygate-virtual-key: bench' -H 'content-type: application/json' -d "$BODY" >/dev/null \
        || die "a gateway request failed"
}

KG_HDRS() { printf '%s\n' "Authorization: Bearer $INF_KEY" "x-keygate-virtual-key: bench"; }

machine_json() {
    "$PYTHON" - "$PINNED" "$GW_CORE" "$LOAD_CORE" "$OHA" <<'EOF'
import json, os, platform, subprocess, sys
def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except Exception:
    pass
mem = ""
try:
    mem = open("/proc/meminfo").readline().split(":")[1].strip()
except Exception:
    pass
print(json.dumps({
    "cpu": cpu, "cpus": os.cpu_count(), "memory": mem, "kernel": platform.release(),
    "pinned": sys.argv[1] == "1", "gateway_core": sys.argv[2], "load_core": sys.argv[3],
    "oha": sh(sys.argv[4], "--version"), "rustc": sh("rustc", "--version"),
    "load_average_at_start": sh("cat", "/proc/loadavg"),
}))
EOF
}

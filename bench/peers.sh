#!/usr/bin/env bash
# The same scenarios against keygate's peers, for the side-by-side table of docs/benchmarks.md:
#   - LiteLLM proxy (PyPI `litellm[proxy]`, one worker, a config routing `gpt-4o-mini` to the mock),
#   - Portkey's gateway (npm `@portkey-ai/gateway`, node, headers naming the mock as custom host),
# each installed into a temporary folder (or PEERS_DIR, kept and reused when given), pinned to CPU
# $GW_CORE with the mock upstream and oha on $LOAD_CORE, plus the direct baseline in the same run.
#
#   bench/peers.sh [--no-build] [--only litellm|portkey] [--out DIR] [--label NAME]
#
# The peers are slow: runs are shorter and rates lower than bench/run.sh's (PEER_DURATION, 10s;
# PEER_RATES, "50 500"; saturation with PEER_SAT_CONNS, 32). A peer that cannot be installed or
# started is recorded as not measured, with the reason. Writes DIR/peers-<label>.json and .md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD=1 ONLY=""
OUT="$BENCH_DIR/results"
LABEL="$(date -u +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --only) ONLY="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --label) LABEL="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
DURATION="${PEER_DURATION:-10s}"
RATES="${PEER_RATES:-50 500}"
SAT_CONNS="${PEER_SAT_CONNS:-32}"
FIXED_CONNS="${FIXED_CONNS:-16}"
TTFB_COUNT="${PEER_TTFB_COUNT:-200}"

if [[ "$BUILD" == 1 ]]; then
    log "building keygate-mock (release)"
    (cd "$ROOT" && nice -n 10 cargo build --release -p keygate-testkit --bin keygate-mock >&2)
fi
[[ -x "$MOCK_BIN" ]] || die "missing $MOCK_BIN"
ensure_oha

WORK="$(mktemp -d /tmp/keygate-peers.XXXXXX)"
PEERS_DIR="${PEERS_DIR:-$WORK/peers}"
RAW="$OUT/raw-peers-$LABEL"
FACTS="$WORK/facts"
mkdir -p "$OUT" "$RAW" "$FACTS" "$PEERS_DIR"
rm -f "$RAW"/*.json "$RAW"/*.err
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

fact() {
    "$PYTHON" - "$FACTS/$1.json" "$2" "$3" <<'EOF'
import json, sys
p, k, v = sys.argv[1:]
try:
    d = json.load(open(p))
except Exception:
    d = {}
d[k] = json.loads(v)
json.dump(d, open(p, "w"))
EOF
}
jstr() { "$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

tree_hwm_kib() {  # peak RSS of PID plus its children (each one's own peak, summed)
    local pid="$1" total=0 p
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
        total=$(( total + $(mem_kib "$p" VmHWM || echo 0) ))
    done
    echo "$total"
}

# start_peer NAME CMD...: starts on GW_CORE, waits for $PEER_READY_URL; sets PEER_PID, PEER_STARTUP_MS.
start_peer() {
    local name="$1"; shift
    local t0
    arm_waiter "$PEER_READY_URL" "${PEER_START_TIMEOUT:-120}" "$WORK/ready.ns" || die "the readiness poller did not start"
    t0="$(now_ns)"
    spawn_on_core "$GW_CORE" "$WORK/$name.log" "$WORK/$name.err" "$@"
    PEER_PID="$SPAWNED_PID"
    if ! wait_armed "$WORK/ready.ns"; then
        log "$name did not become ready: $(tail -3 "$WORK/$name.err")"
        stop_pid "$PEER_PID"
        return 1
    fi
    PEER_STARTUP_MS=$(( (READY_NS - t0) / 1000000 ))
    log "$name ready in $PEER_STARTUP_MS ms (pid $PEER_PID)"
}

peer_scenarios() {  # peer_scenarios TARGET PID URL [HEADER...]
    local target="$1" pid="$2" url="$3"; shift 3
    local r
    for r in $RATES; do
        run_load "${target}__fixed_$r" "$pid" "$url" "$r" "$FIXED_CONNS" "$DURATION" "$BODY" "$@"
    done
    run_load "${target}__sat" "$pid" "$url" 0 "$SAT_CONNS" "$DURATION" "$BODY" "$@"
    run_load "${target}__stream_fixed_50" "$pid" "$url" 50 "$FIXED_CONNS" "$DURATION" "$STREAM_BODY" "$@"
    run_ttfb "${target}__ttfb_50" "$pid" "$url" 50 "$TTFB_COUNT" "$@"
}

fact run machine "$(machine_json)"
fact run date "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
fact run commit "\"$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)\""
fact run duration "\"$DURATION\""
fact run body "$(jstr "$BODY")"
fact run title '"keygate benchmark: peers (LiteLLM proxy, Portkey gateway) vs direct to the mock upstream"'

start_mock
log "direct to the mock"
peer_scenarios direct "$MOCK_PID" "$MOCK_URL/v1/chat/completions"

if [[ -z "$ONLY" || "$ONLY" == litellm ]]; then
    log "LiteLLM proxy"
    venv="$PEERS_DIR/litellm-venv"
    ok=1
    if [[ ! -x "$venv/bin/litellm" ]]; then
        log "installing litellm[proxy] into $venv"
        { "$PYTHON" -m venv "$venv" && PIP_DISABLE_PIP_VERSION_CHECK=1 nice -n 10 "$venv/bin/pip" install -q 'litellm[proxy]'; } \
            >"$WORK/litellm-install.log" 2>&1 || ok=0
    fi
    if [[ "$ok" == 1 && -x "$venv/bin/litellm" ]]; then
        ver="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo '?')"
        fact litellm version "$(jstr "$ver")"
        port="$(free_port)"
        cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $MOCK_URL/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  set_verbose: false
general_settings:
  master_key: sk-litellm-bench
EOF
        PEER_READY_URL="http://127.0.0.1:$port/health/liveliness"
        if start_peer litellm env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
            "$venv/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers 1; then
            fact litellm startup_ms "$PEER_STARTUP_MS"
            fact litellm rss_idle_kib "$(mem_kib "$PEER_PID" VmRSS)"
            peer_scenarios litellm "$PEER_PID" "http://127.0.0.1:$port/v1/chat/completions" \
                "Authorization: Bearer sk-litellm-bench"
            fact litellm peak_rss_kib "$(tree_hwm_kib "$PEER_PID")"
            fact litellm note '"one worker, master key on, no database"'
            stop_pid "$PEER_PID"
        else
            fact litellm skipped "$(jstr "did not start: $(tail -1 "$WORK/litellm.err" | cut -c1-200)")"
        fi
    else
        fact litellm skipped "$(jstr "pip install 'litellm[proxy]' failed: $(tail -1 "$WORK/litellm-install.log" | cut -c1-200)")"
    fi
fi

if [[ -z "$ONLY" || "$ONLY" == portkey ]]; then
    log "Portkey gateway"
    dir="$PEERS_DIR/portkey"
    server="$dir/node_modules/@portkey-ai/gateway/build/start-server.js"
    if [[ ! -f "$server" ]]; then
        log "installing @portkey-ai/gateway into $dir"
        mkdir -p "$dir"
        [[ -f "$dir/package.json" ]] || echo '{"name":"keygate-bench-peers","private":true}' >"$dir/package.json"
        (cd "$dir" && nice -n 10 npm install --no-audit --no-fund @portkey-ai/gateway) >"$WORK/portkey-install.log" 2>&1 || true
    fi
    if [[ -f "$server" ]] && command -v node >/dev/null 2>&1; then
        ver="$(node -p "require('$dir/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || echo '?')"
        fact portkey version "$(jstr "$ver (node $(node --version))")"
        port="$(free_port)"
        PEER_READY_URL="http://127.0.0.1:$port/"
        if start_peer portkey env NODE_ENV=production node "$server" "--port=$port" --headless; then
            fact portkey startup_ms "$PEER_STARTUP_MS"
            fact portkey rss_idle_kib "$(mem_kib "$PEER_PID" VmRSS)"
            peer_scenarios portkey "$PEER_PID" "http://127.0.0.1:$port/v1/chat/completions" \
                "x-portkey-provider: openai" "x-portkey-custom-host: $MOCK_URL/v1" "Authorization: Bearer sk-bench"
            fact portkey peak_rss_kib "$(tree_hwm_kib "$PEER_PID")"
            stop_pid "$PEER_PID"
        else
            fact portkey skipped "$(jstr "did not start: $(tail -1 "$WORK/portkey.err" | cut -c1-200)")"
        fi
    else
        fact portkey skipped "$(jstr "npm install @portkey-ai/gateway failed or node is missing")"
    fi
fi

"$PYTHON" - "$FACTS" "$WORK/facts.json" <<'EOF'
import json, os, sys
d, out = sys.argv[1], sys.argv[2]
facts = {}
for fn in os.listdir(d):
    sec = json.load(open(os.path.join(d, fn)))
    if fn == "run.json":
        facts.update(sec)
    else:
        facts[fn[:-5]] = sec
json.dump(facts, open(out, "w"))
EOF
"$PYTHON" "$BENCH_DIR/report.py" --build "$RAW" --facts "$WORK/facts.json" --out "$OUT/peers-$LABEL"
cat "$OUT/peers-$LABEL.md"

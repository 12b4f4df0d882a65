#!/usr/bin/env bash
# keygate's benchmark harness (docs/benchmarks.md). One command:
#
#   bench/run.sh [--quick] [--no-build] [--skip-keys] [--skip-scaleout] [--out DIR] [--label NAME]
#
# Builds keygate and keygate-mock in release mode, installs the load generator oha when missing
# (`cargo install oha --locked`), then, with the server under test pinned to CPU $GW_CORE and the
# mock upstream + oha pinned to CPU $LOAD_CORE:
#   1. direct to the mock (the baseline) and through keygate (embedded default: SQLite, in-process
#      counters; auth, limits and metering on), each: fixed rates ($RATES req/s) and saturation,
#      non-streaming and streaming, and the time to first streamed byte (bench/ttfb.py);
#   2. saturation with everything sharing both CPUs (the "two cores" figure);
#   3. start-up to ready and memory empty, then again with 100,000 virtual keys and 100,000
#      platform keys loaded (inserted into the SQLite file while keygate is stopped);
#   4. scale-out mode (PostgreSQL store + Redis counters), when this build and machine have both
#      (otherwise recorded as not measured, with the reason).
# Writes DIR/keygate-<label>.json and .md (default DIR: bench/results) and the raw oha outputs
# under DIR/raw-<label>/. Every server listens on 127.0.0.1 only and is stopped on exit.
#
# Environment: DURATION (10s), RATES ("50 500 2000"), STREAM_RATES ("50 500"), SAT_CONNS (64),
# FIXED_CONNS (16), TTFB_COUNT (500), GW_CORE (0), LOAD_CORE (1), KEY_COUNT (100000),
# PG_URL (postgres://root@127.0.0.1:5432), REDIS_URL (redis://127.0.0.1:6379), CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD=1 SKIP_KEYS=0 SKIP_SCALEOUT=0 QUICK=0
OUT="$BENCH_DIR/results"
LABEL="$(date -u +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --skip-keys) SKIP_KEYS=1 ;;
        --skip-scaleout) SKIP_SCALEOUT=1 ;;
        --out) OUT="$2"; shift ;;
        --label) LABEL="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
if [[ "$QUICK" == 1 ]]; then
    DURATION="${DURATION:-4s}"; RATES="${RATES:-50 500}"; STREAM_RATES="${STREAM_RATES:-50}"; TTFB_COUNT="${TTFB_COUNT:-200}"
fi
DURATION="${DURATION:-10s}"
RATES="${RATES:-50 500 2000}"
STREAM_RATES="${STREAM_RATES:-50 500}"
SAT_CONNS="${SAT_CONNS:-64}"
FIXED_CONNS="${FIXED_CONNS:-16}"
TTFB_COUNT="${TTFB_COUNT:-500}"
KEY_COUNT="${KEY_COUNT:-100000}"
PG_URL="${PG_URL:-postgres://root@127.0.0.1:5432}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

if [[ "$BUILD" == 1 ]]; then
    log "building keygate and keygate-mock (release)"
    (cd "$ROOT" && nice -n 10 cargo build --release -p keygate -p keygate-testkit --bin keygate --bin keygate-mock >&2)
fi
[[ -x "$KEYGATE_BIN" && -x "$MOCK_BIN" ]] || die "missing $KEYGATE_BIN or $MOCK_BIN (build, or drop --no-build)"
ensure_oha

WORK="$(mktemp -d /tmp/keygate-bench.XXXXXX)"
RAW="$OUT/raw-$LABEL"
FACTS="$WORK/facts"
mkdir -p "$OUT" "$RAW" "$FACTS"
rm -f "$RAW"/*.json "$RAW"/*.err
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

fact() {  # fact SECTION KEY JSON-VALUE
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

# scenarios TARGET PID URL [HEADER...]: the fixed-rate, saturation and streaming runs.
scenarios() {
    local target="$1" pid="$2" url="$3"; shift 3
    local r
    for r in $RATES; do
        run_load "${target}__fixed_$r" "$pid" "$url" "$r" "$FIXED_CONNS" "$DURATION" "$BODY" "$@"
    done
    run_load "${target}__sat" "$pid" "$url" 0 "$SAT_CONNS" "$DURATION" "$BODY" "$@"
    for r in $STREAM_RATES; do
        run_load "${target}__stream_fixed_$r" "$pid" "$url" "$r" "$FIXED_CONNS" "$DURATION" "$STREAM_BODY" "$@"
    done
    run_load "${target}__stream_sat" "$pid" "$url" 0 "$SAT_CONNS" "$DURATION" "$STREAM_BODY" "$@"
    run_ttfb "${target}__ttfb_50" "$pid" "$url" 50 "$TTFB_COUNT" "$@"
}

MASTER_KEY="$(openssl rand -base64 32)"
fact run machine "$(machine_json)"
fact run date "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
fact run commit "\"$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')\""
fact run duration "\"$DURATION\""
fact run body "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$BODY")"
fact run title '"keygate benchmark: keygate vs direct to the mock upstream"'
[[ "$PINNED" == 1 ]] || fact run notes '["not pinned: fewer than 2 CPUs or no taskset; figures mix server and load generator"]'

start_mock
GW_PATH="/v1/chat/completions"

log "1/4 direct to the mock"
scenarios direct "$MOCK_PID" "$MOCK_URL$GW_PATH"
fact direct peak_rss_kib "$(mem_kib "$MOCK_PID" VmHWM)"

log "2/4 keygate, embedded default (SQLite, in-process counters)"
KG_DIR="$WORK/kg-embedded"
start_keygate "$KG_DIR" || die "keygate did not become ready: $(tail -5 "$KG_DIR/stderr")"
fact keygate startup_ms "$KG_STARTUP_MS"
[[ -n "$KG_STARTUP_INTERNAL" ]] && fact keygate startup_ms_internal "$KG_STARTUP_INTERNAL"
fact keygate rss_idle_kib "$(mem_kib "$KG_PID" VmRSS)"
setup_keygate "$KG_DIR"
mapfile -t H < <(KG_HDRS)
scenarios keygate "$KG_PID" "$KG_URL$GW_PATH" "${H[@]}"
fact keygate peak_rss_kib "$(mem_kib "$KG_PID" VmHWM)"
fact keygate usage_rows "$(sqlite3 "$KG_DIR/keygate.db" 'select count(*) from usage_records' 2>/dev/null || echo null)"
stop_pid "$KG_PID"

log "    saturation with keygate (2 worker threads), the mock and oha sharing both CPUs"
GW_CORE_SAVED="$GW_CORE"
GW_CORE=all
start_keygate "$KG_DIR-2c" || die "keygate did not restart"
setup_keygate "$KG_DIR-2c"
mapfile -t H < <(KG_HDRS)
LOAD_ALL_CORES=1 run_load "keygate__sat_2cores" "$KG_PID" "$KG_URL$GW_PATH" 0 "$SAT_CONNS" "$DURATION" "$BODY" "${H[@]}"
LOAD_ALL_CORES=1 run_load "direct__sat_2cores" "$MOCK_PID" "$MOCK_URL$GW_PATH" 0 "$SAT_CONNS" "$DURATION" "$BODY"
GW_CORE="$GW_CORE_SAVED"
stop_pid "$KG_PID"

if [[ "$SKIP_KEYS" == 0 ]]; then
    log "3/4 keygate with $KEY_COUNT virtual keys and $KEY_COUNT platform keys"
    KEYS_DIR="$KG_DIR-keys"
    cp -r "$KG_DIR-2c" "$KEYS_DIR"
    rm -f "$KEYS_DIR"/stdout "$KEYS_DIR"/stderr
    t0="$(now_ns)"
    sqlite3 "$KEYS_DIR/keygate.db" <<EOF
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $KEY_COUNT)
INSERT INTO platform_keys (id, workspace, key_type, org_admin, description, key_hash, last6, prev_key_hash,
    prev_valid_until, settings, expires_at, created_at, updated_at, last_used_at, created_by, rev, deleted_at)
SELECT p.id || '_b' || n.i, p.workspace, p.key_type, 0, 'bench ' || n.i, randomblob(32), p.last6, NULL, NULL,
    p.settings, NULL, p.created_at, p.updated_at, NULL, p.created_by, p.rev, NULL
FROM n, (SELECT * FROM platform_keys WHERE description = 'bench' LIMIT 1) AS p;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $KEY_COUNT)
INSERT INTO virtual_keys (id, workspace, slug, name, note, config, status, expires_at, created_at, updated_at,
    created_by, rev, deleted_at)
SELECT v.id || '_b' || n.i, v.workspace, 'bench-' || n.i, 'bench ' || n.i, v.note, v.config, v.status, NULL,
    v.created_at, v.updated_at, v.created_by, v.rev, NULL
FROM n, (SELECT * FROM virtual_keys WHERE slug = 'bench' LIMIT 1) AS v;
COMMIT;
EOF
    log "    inserted in $(( ($(now_ns) - t0) / 1000000 )) ms: $(sqlite3 "$KEYS_DIR/keygate.db" 'select count(*) from platform_keys') platform keys, $(sqlite3 "$KEYS_DIR/keygate.db" 'select count(*) from virtual_keys') virtual keys"
    start_keygate "$KEYS_DIR" || die "keygate with keys did not become ready: $(tail -5 "$KEYS_DIR/stderr")"
    fact keygate_200k_keys startup_ms "$KG_STARTUP_MS"
    [[ -n "$KG_STARTUP_INTERNAL" ]] && fact keygate_200k_keys startup_ms_internal "$KG_STARTUP_INTERNAL"
    sleep 1
    fact keygate_200k_keys rss_idle_kib "$(mem_kib "$KG_PID" VmRSS)"
    run_load "keygate_200k_keys__fixed_500" "$KG_PID" "$KG_URL$GW_PATH" 500 "$FIXED_CONNS" "$DURATION" "$BODY" "${H[@]}"
    run_load "keygate_200k_keys__sat" "$KG_PID" "$KG_URL$GW_PATH" 0 "$SAT_CONNS" "$DURATION" "$BODY" "${H[@]}"
    fact keygate_200k_keys peak_rss_kib "$(mem_kib "$KG_PID" VmHWM)"
    stop_pid "$KG_PID"
else
    fact keygate_200k_keys skipped '"--skip-keys"'
fi

if [[ "$SKIP_SCALEOUT" == 0 ]]; then
    log "4/4 scale-out: PostgreSQL store + Redis counters"
    reason=""
    DB="kgbench_$$_$RANDOM"
    if ! command -v psql >/dev/null 2>&1 || ! psql "$PG_URL/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
        reason="PostgreSQL does not answer at $PG_URL"
    elif ! command -v redis-cli >/dev/null 2>&1 || [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" != PONG ]]; then
        reason="Redis does not answer at $REDIS_URL"
    else
        psql "$PG_URL/postgres" -Atqc "create database $DB" >/dev/null
        SO_DIR="$WORK/kg-scaleout"
        if start_keygate "$SO_DIR" --database-url "$PG_URL/$DB" --redis-url "$REDIS_URL"; then
            fact scaleout startup_ms "$KG_STARTUP_MS"
            setup_keygate "$SO_DIR"
            mapfile -t H < <(KG_HDRS)
            for r in $RATES; do
                run_load "scaleout__fixed_$r" "$KG_PID" "$KG_URL$GW_PATH" "$r" "$FIXED_CONNS" "$DURATION" "$BODY" "${H[@]}"
            done
            run_load "scaleout__sat" "$KG_PID" "$KG_URL$GW_PATH" 0 "$SAT_CONNS" "$DURATION" "$BODY" "${H[@]}"
            fact scaleout peak_rss_kib "$(mem_kib "$KG_PID" VmHWM)"
            stop_pid "$KG_PID"
        else
            reason="keygate serve --redis-url did not start: $(grep -v '^\s*$' "$SO_DIR/stderr" | tail -1 | tr -d '"\\' | cut -c1-200)"
        fi
        psql "$PG_URL/postgres" -Atqc "drop database if exists $DB" >/dev/null 2>&1 || true
    fi
    if [[ -n "$reason" ]]; then
        log "    scale-out not measured: $reason"
        fact scaleout skipped "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$reason")"
    fi
else
    fact scaleout skipped '"--skip-scaleout"'
fi

# Merge the facts and write the report.
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
"$PYTHON" "$BENCH_DIR/report.py" --build "$RAW" --facts "$WORK/facts.json" --out "$OUT/keygate-$LABEL"
cat "$OUT/keygate-$LABEL.md"

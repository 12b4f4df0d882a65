#!/usr/bin/env bash
# ab-two-cores.sh BIN_A BIN_B ROUNDS [SECONDS]: the two-core saturation of bench/run.sh (the mock
# pinned to CPU 1 with one thread; keygate and oha unpinned, sharing both CPUs), alternating two
# builds. Prints req/s, keygate's CPU per request, both CPUs' idle share and keygate's context
# switches per request. Extra `keygate serve` flags or environment: KG_ENV_A / KG_ENV_B
# (e.g. "KEYGATE_SERVING_THREADS=1"). ONE_CORE=1: bench/run.sh's one-core saturation instead
# (keygate on CPU 0, the mock and oha on CPU 1).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
source bench/lib.sh
GW_CORE=0; LOAD_CORE=1
ensure_oha
SECS="${4:-8}"
WORK="$(mktemp -d /tmp/ab2c.XXXXXX)"
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
MASTER_KEY="$(openssl rand -base64 32)"
start_mock
idle_jiffies() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
total_jiffies() { awk '/^cpu /{s=0; for (i=2;i<=NF;i++) s+=$i; print s}' /proc/stat; }
ctxsw() { awk '/ctxt_switches/{s+=$2} END{print s}' /proc/"$1"/task/*/status 2>/dev/null; }
for r in $(seq 1 "$3"); do
  for which in A B; do
    if [[ $which == A ]]; then KEYGATE_BIN="$1"; envs="${KG_ENV_A:-}"; else KEYGATE_BIN="$2"; envs="${KG_ENV_B:-}"; fi
    rm -rf "$WORK/kg"
    if [[ "${ONE_CORE:-0}" == 1 ]]; then GW_CORE=0; oha_core=1; else GW_CORE=all; oha_core=all; fi
    # shellcheck disable=SC2086
    KG_WRAP="${envs:+env $envs}" start_keygate "$WORK/kg" >/dev/null 2>&1 || die "no start"
    setup_keygate "$WORK/kg"
    mapfile -t H < <(KG_HDRS); hdrs=(); for h in "${H[@]}"; do hdrs+=(-H "$h"); done
    c0="$(cpu_ns "$KG_PID")"; i0="$(idle_jiffies)"; t0="$(total_jiffies)"; x0="$(ctxsw "$KG_PID")"
    on_core "$oha_core" "$OHA" --no-tui --output-format json -z "${SECS}s" -c 64 -m POST -T application/json -d "$BODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" > "$WORK/oha.json" 2>/dev/null
    c1="$(cpu_ns "$KG_PID")"; i1="$(idle_jiffies)"; t1="$(total_jiffies)"; x1="$(ctxsw "$KG_PID")"
    python3 - "$WORK/oha.json" "$((c1 - c0))" "$((i1 - i0))" "$((t1 - t0))" "$((x1 - x0))" "$r" "$which" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); cpu, idle, total, ctx = map(int, sys.argv[2:6])
n = sum(d["statusCodeDistribution"].values())
print(f"round {sys.argv[6]} {sys.argv[7]} rps {d['summary']['requestsPerSec']:.0f} cpu_us_per_req {cpu / 1000 / n:.1f} "
      f"idle {100 * idle / total:.0f}% ctxsw_per_req {ctx / n:.2f} errors {len(d.get('errorDistribution', {}))}")
PY
    stop_pid "$KG_PID"
  done
done

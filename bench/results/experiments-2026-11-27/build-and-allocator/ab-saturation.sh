#!/usr/bin/env bash
# ab.sh BIN_A BIN_B ROUNDS: one-core saturation (keygate on CPU 0, mock + oha on CPU 1), 6 s each, alternating.
set -euo pipefail
cd /work/main
source bench/lib.sh
GW_CORE=0; LOAD_CORE=1
ensure_oha
WORK="$(mktemp -d /tmp/ab.XXXXXX)"
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
MASTER_KEY="$(openssl rand -base64 32)"
start_mock
for r in $(seq 1 "$3"); do
  for which in A B; do
    if [[ $which == A ]]; then KEYGATE_BIN="$1"; else KEYGATE_BIN="$2"; fi
    rm -rf "$WORK/kg"
    start_keygate "$WORK/kg" >/dev/null 2>&1 || die "no start"
    setup_keygate "$WORK/kg"
    mapfile -t H < <(KG_HDRS); hdrs=(); for h in "${H[@]}"; do hdrs+=(-H "$h"); done
    on_core "$LOAD_CORE" "$OHA" --no-tui --output-format json -z 6s -c 64 -m POST -T application/json -d "$BODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" > "$WORK/oha.json" 2>/dev/null
    rps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f" % d["summary"]["requestsPerSec"])' "$WORK/oha.json")
    echo "round $r $which rps $rps hwm $(grep VmHWM /proc/$KG_PID/status | awk '{print $2}') kB"
    stop_pid "$KG_PID"
  done
done

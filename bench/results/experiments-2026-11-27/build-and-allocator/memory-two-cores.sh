#!/usr/bin/env bash
# memexp.sh [extra keygate serve args...]: two-core saturation 6 s, then RSS breakdown.
set -euo pipefail
cd /work/main
source bench/lib.sh
GW_CORE=all
LOAD_CORE=all
WORK="$(mktemp -d /tmp/memexp.XXXXXX)"
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
MASTER_KEY="$(openssl rand -base64 32)"
ensure_oha
start_mock
start_keygate "$WORK/kg" "$@" >/dev/null 2>&1 || die "no start"
setup_keygate "$WORK/kg"
grep -E "VmRSS|RssAnon|RssFile" /proc/$KG_PID/status | tr -s ' ' | tr '\n' ' '; echo " <- ready"
mapfile -t H < <(KG_HDRS)
hdrs=(); for h in "${H[@]}"; do hdrs+=(-H "$h"); done
( for i in $(seq 1 70); do grep VmRSS /proc/$KG_PID/status | awk "{printf \"%d \", \$2/1024}"; sleep 0.1; done; echo ) &
"$OHA" --no-tui --output-format json -z 6s -c 64 -m POST -T application/json -d "$BODY" "${hdrs[@]}" "$KG_URL/v1/chat/completions" > "$WORK/oha.json" 2>/dev/null
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("rps %.0f" % d["summary"]["requestsPerSec"])' "$WORK/oha.json"
grep -E "VmHWM|VmRSS|RssAnon|RssFile|Threads" /proc/$KG_PID/status | tr -s ' ' | tr '\n' ' '; echo
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6; if(name=="") name="[anon]"} /^Rss:/{rss[name]+=$2} END{for(n in rss) if (rss[n]>300) printf "%8d kB %s\n", rss[n], n}' /proc/$KG_PID/smaps | sort -rn | head -12

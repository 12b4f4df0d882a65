#!/usr/bin/env bash
# abkeys.sh BIN_A BIN_B ROUNDS: start-up to ready with 100k + 100k keys, alternating (keygate on CPU 0).
set -euo pipefail
cd /work/main
source bench/lib.sh
GW_CORE=0; LOAD_CORE=1; KEY_COUNT=100000
WORK="$(mktemp -d /tmp/abk.XXXXXX)"
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
MASTER_KEY="$(openssl rand -base64 32)"
start_mock
KEYGATE_BIN="$1" start_keygate "$WORK/kg" >/dev/null 2>&1 || die "no start"
setup_keygate "$WORK/kg"
stop_pid "$KG_PID"
sqlite3 "$WORK/kg/keygate.db" <<SQL
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
SELECT v.id || '_b' || n.i, v.workspace, 'bench-' || n.i, 'bench ' || n.i, v.note, json_set(v.config, '$.defaultModel', 'model-' || n.i), v.status, NULL,
    v.created_at, v.updated_at, v.created_by, v.rev, NULL
FROM n, (SELECT * FROM virtual_keys WHERE slug = 'bench' LIMIT 1) AS v;
COMMIT;
SQL
for r in $(seq 1 "$3"); do
  for which in A B; do
    if [[ $which == A ]]; then KEYGATE_BIN="$1"; else KEYGATE_BIN="$2"; fi
    rm -f "$WORK/kg/stdout" "$WORK/kg/stderr"
    start_keygate "$WORK/kg" >/dev/null 2>&1 || die "no start"
    sleep 1
    echo "round $r $which ready ${KG_STARTUP_MS} ms (own ${KG_STARTUP_INTERNAL:-?}) rss $(grep VmRSS /proc/$KG_PID/status | awk '{print $2}') hwm $(grep VmHWM /proc/$KG_PID/status | awk '{print $2}') kB"
    stop_pid "$KG_PID"
  done
done

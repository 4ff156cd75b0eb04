#!/usr/bin/env bash
# Times a targeted grant job end to end on a fresh couponsd, with every
# projection running: upload a CSV of N shoppers (HTTP), wait for the job
# to finish (couponsd grants status), check the counts and the batch.
#
#   scripts/grants.sh [N]        default N = 1000000; stock = N, limit 1
#
# Builds couponsd, starts it on a free port with a fresh data dir (real Redis
# when `redis-cli ping` answers, else the embedded one), stops it and deletes
# its Redis keys (SCAN + DEL of its own prefix, never FLUSHALL) at the end.
#
# Environment:
#   GRANTS_EMBEDDED=1     use the embedded Redis even when a real one answers
#   GRANTS_REDIS_URL      real Redis (default redis://127.0.0.1:6379/15)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/service.sh

n=${1:-1000000}
svc_init "${GRANTS_EMBEDDED:-0}" "${GRANTS_REDIS_URL:-redis://127.0.0.1:6379/15}" grants
env+=(COUPONS_GRANT_TEMP_DIR="$work")
svc_start "$work/couponsd.log"
base="http://127.0.0.1:$port"
admin=$(env "${env[@]}" "$work/couponsd" token --sub ops --role admin)
batch=$(curl -fsS -X POST "$base/v1/batches" -H "Authorization: Bearer $admin" -d '{"name":"grant bench","kind":"direct",
  "issuer":"platform","amount_off":500,"scope":{"kind":"all"},"total_stock":'"$n"',"per_user_limit":1,
  "claim_starts_at":"2026-01-01T00:00:00Z","claim_ends_at":"2030-01-01T00:00:00Z","valid_days":30,"audience":"targeted"}' |
  sed -E 's/.*"id":"([^"]+)".*/\1/')
seq -f 'shopper-%08g' 1 "$n" >"$work/list.csv"
echo "back end: $backend; $n shoppers, stock $n, every projection running"
start=$(date +%s.%N)
job=$(curl -fsS -X POST "$base/v1/batches/$batch/grants" -H "Authorization: Bearer $admin" -H 'Content-Type: text/csv' \
  --data-binary @"$work/list.csv" | sed -E 's/.*"job_id":"([^"]+)".*/\1/')
uploaded=$(date +%s.%N)
env "${env[@]}" COUPONS_URL="$base" "$work/couponsd" grants status "$job" --interval 1s | tr '\r' '\n' | tail -1
end=$(date +%s.%N)
final=$(curl -fsS "$base/v1/grant-jobs/$job" -H "Authorization: Bearer $admin")
granted=$(echo "$final" | sed -E 's/.*"granted":([0-9]+).*/\1/')
remaining=$(curl -fsS "$base/v1/batches/$batch" -H "Authorization: Bearer $admin" | sed -E 's/.*"remaining":([0-9]+).*/\1/')
awk -v s="$start" -v u="$uploaded" -v e="$end" -v g="$granted" -v r="$remaining" -v n="$n" 'BEGIN {
  printf "upload and split: %.1f s; job: %.1f s wall; %d granted (%.0f grants/s); remaining stock %d\n", u-s, e-s, g, g/(e-s), r
  if (g != n || r != 0) { print "COUNTS WRONG"; exit 1 }
}'

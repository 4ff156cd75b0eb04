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

n=${1:-1000000}
redis_url=${GRANTS_REDIS_URL:-redis://127.0.0.1:6379/15}
work=$(mktemp -d)
rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
secret=$(rand 24)
go build -o "$work/couponsd" ./cmd/couponsd

port=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port found" >&2; exit 1; }
env=(COUPONS_ADDR="127.0.0.1:$port" COUPONS_DATA_DIR="$work/data" COUPONS_JWT_SECRET="$secret" COUPONS_LOG_LEVEL=warn
     COUPONS_GRANT_TEMP_DIR="$work")
prefix=
if [ "${GRANTS_EMBEDDED:-0}" != 1 ] && command -v redis-cli >/dev/null &&
   [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ]; then
  prefix="grants:$(rand 6):"
  env+=(COUPONS_REDIS_URL="$redis_url" COUPONS_REDIS_PREFIX="$prefix")
  backend="real Redis $redis_url"
else
  backend="embedded Redis (miniredis)"
fi

pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ -n "$prefix" ]; then
    redis-cli -u "$redis_url" --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

env "${env[@]}" "$work/couponsd" >"$work/couponsd.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "couponsd exited:" >&2; cat "$work/couponsd.log" >&2; exit 1; }
  sleep 0.1
done
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

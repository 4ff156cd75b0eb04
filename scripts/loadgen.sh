#!/usr/bin/env bash
# Runs a flash-sale load against a fresh couponsd and prints the summary.
#
#   scripts/loadgen.sh [loadgen flags...]      e.g. scripts/loadgen.sh --users 20000 --stock 10000 --duration 30s
#
# Builds couponsd and cmd/loadgen, starts the service on a free port with a
# fresh data dir (real Redis when `redis-cli ping` answers, else the embedded
# one), runs the load (defaults: 10,000 shoppers, stock 5,000, limit 1, 256
# connections, 20 s), checks the invariants, stops the service and deletes
# its Redis keys (SCAN + DEL of its own prefix, never FLUSHALL).
#
# Environment:
#   LOADGEN_EMBEDDED=1          use the embedded Redis even when a real one answers
#   LOADGEN_REDIS_URL           real Redis (default redis://127.0.0.1:6379/15)
#   LOADGEN_OUT                 where result.json, result.png and couponsd.log go (default ./loadgen-out)
#   COUPONS_CLAIMS_PER_MINUTE   the service's per-shopper claim rate limit (default 0 here: off,
#                               so the raw claim path is measured; 10 in production)
# The exit status is the load generator's: 1 when an invariant broke.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${LOADGEN_OUT:-loadgen-out}
redis_url=${LOADGEN_REDIS_URL:-redis://127.0.0.1:6379/15}
mkdir -p "$out"
work=$(mktemp -d)
rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
secret=$(rand 24)

echo "building couponsd and loadgen..."
go build -o "$work/couponsd" ./cmd/couponsd
go build -o "$work/loadgen" ./cmd/loadgen

port=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port found" >&2; exit 1; }

env=(COUPONS_ADDR="127.0.0.1:$port" COUPONS_DATA_DIR="$work/data" COUPONS_JWT_SECRET="$secret"
     COUPONS_CLAIMS_PER_MINUTE="${COUPONS_CLAIMS_PER_MINUTE:-0}" COUPONS_LOG_LEVEL=warn)
prefix=
if [ "${LOADGEN_EMBEDDED:-0}" != 1 ] && command -v redis-cli >/dev/null &&
   [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ]; then
  prefix="loadgen:$(rand 6):"
  env+=(COUPONS_REDIS_URL="$redis_url" COUPONS_REDIS_PREFIX="$prefix")
  echo "back end: real Redis $redis_url, key prefix $prefix"
else
  echo "back end: embedded Redis (miniredis)"
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

env "${env[@]}" "$work/couponsd" >"$out/couponsd.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "couponsd exited:" >&2; cat "$out/couponsd.log" >&2; exit 1; }
  sleep 0.1
done
echo "couponsd (pid $pid) on 127.0.0.1:$port; load generator starts now"

status=0
"$work/loadgen" --url "http://127.0.0.1:$port" --secret "$secret" --server-pid "$pid" \
  --out "$out/result.json" --plot "$out/result.png" "$@" || status=$?
echo "service log: $out/couponsd.log"
exit "$status"

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

. scripts/lib/service.sh

out=${LOADGEN_OUT:-loadgen-out}
mkdir -p "$out"
echo "building couponsd and loadgen..."
svc_init "${LOADGEN_EMBEDDED:-0}" "${LOADGEN_REDIS_URL:-redis://127.0.0.1:6379/15}" loadgen
go build -o "$work/loadgen" ./cmd/loadgen
env+=(COUPONS_CLAIMS_PER_MINUTE="${COUPONS_CLAIMS_PER_MINUTE:-0}")
echo "back end: $backend"
svc_start "$out/couponsd.log"
echo "couponsd (pid $pid) on 127.0.0.1:$port; load generator starts now"

status=0
"$work/loadgen" --url "http://127.0.0.1:$port" --secret "$secret" --server-pid "$pid" \
  --out "$out/result.json" --plot "$out/result.png" "$@" || status=$?
echo "service log: $out/couponsd.log"
exit "$status"

# Sourced by scripts/loadgen.sh and scripts/grants.sh: one fresh couponsd
# for a measurement, and everything it leaves behind removed on exit.
#
#   svc_init EMBEDDED REDIS_URL PREFIX_TAG   work dir, secret, built binary,
#                                            free port, env; real Redis when
#                                            it answers and EMBEDDED != 1
#   svc_start LOG                            start it, wait for /healthz
#
# Sets: work, secret, port, env (array), prefix ("" when embedded), backend,
# redis_url, pid. The EXIT trap stops the service, deletes its Redis keys
# (SCAN + DEL of its own prefix, never FLUSHALL) and the work dir.

rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

svc_init() {
  local embedded=$1 tag=$3
  redis_url=$2
  work=$(mktemp -d)
  secret=$(rand 24)
  pid=
  prefix=
  trap svc_cleanup EXIT
  go build -o "$work/couponsd" ./cmd/couponsd
  port=
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "no free port found" >&2; exit 1; }
  env=(COUPONS_ADDR="127.0.0.1:$port" COUPONS_DATA_DIR="$work/data" COUPONS_JWT_SECRET="$secret" COUPONS_LOG_LEVEL=warn)
  if [ "$embedded" != 1 ] && command -v redis-cli >/dev/null &&
     [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ]; then
    prefix="$tag:$(rand 6):"
    env+=(COUPONS_REDIS_URL="$redis_url" COUPONS_REDIS_PREFIX="$prefix")
    backend="real Redis $redis_url, key prefix $prefix"
  else
    backend="embedded Redis (miniredis)"
  fi
}

svc_cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ -n "$prefix" ]; then
    redis-cli -u "$redis_url" --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null || true
  fi
  rm -rf "$work"
}

svc_start() {
  local log=$1
  env "${env[@]}" "$work/couponsd" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "couponsd exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "couponsd did not answer /healthz" >&2
  exit 1
}

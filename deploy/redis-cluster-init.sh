#!/bin/sh
# Forms the Redis Cluster of compose.scaled.yaml: 3 masters + 3 replicas
# (--cluster-replicas 1). Run once by the redis-cluster-init service; a no-op
# when the cluster is already formed (e.g. on the next `docker compose up`).
#
# REDIS_NODES lists the nodes as host[:port] (default port 6379), masters
# first. redis-cli --cluster create wants IP addresses (CLUSTER MEET takes
# no host names), so host names are resolved here.
set -eu

NODES="${REDIS_NODES:-redis-1 redis-2 redis-3 redis-4 redis-5 redis-6}"

host() { echo "${1%%:*}"; }
port() { case "$1" in *:*) echo "${1##*:}" ;; *) echo 6379 ;; esac; }
cli() { n=$1; shift; redis-cli -h "$(host "$n")" -p "$(port "$n")" "$@"; }

for n in $NODES; do
  until cli "$n" ping 2>/dev/null | grep -q PONG; do
    echo "waiting for $n"
    sleep 1
  done
done

first=${NODES%% *}
if cli "$first" cluster info | grep -q '^cluster_state:ok'; then
  echo "cluster already formed"
  exit 0
fi
if [ "$(cli "$first" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" != "1" ]; then
  echo "$first knows other nodes but the cluster is not ok: check it by hand (redis-cli --cluster check)" >&2
  exit 1
fi

addrs=""
for n in $NODES; do
  h=$(host "$n")
  case "$h" in
    *[!0-9.]*) ip=$(getent ahostsv4 "$h" | awk '{print $1; exit}') ;;
    *) ip="$h" ;; # already an IPv4 address
  esac
  [ -n "$ip" ] || { echo "cannot resolve $h" >&2; exit 1; }
  addrs="$addrs $ip:$(port "$n")"
done
echo "creating the cluster on$addrs"
# shellcheck disable=SC2086
redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes

for n in $NODES; do
  until cli "$n" cluster info | grep -q '^cluster_state:ok'; do
    echo "waiting for $n to see the cluster ok"
    sleep 1
  done
done
echo "cluster ok"

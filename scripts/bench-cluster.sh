#!/usr/bin/env bash
# Scale-out check for docs/CAPACITY.md: three gateway instances share a three-master Redis
# Cluster (created here with redis-cli --cluster create). Each gateway verifies an ES256 token,
# checks revocation in the cluster, applies a default and a route rate limit in the cluster,
# and asks a Rego policy. Bounded wrk load runs on all three at once. Reports requests served,
# Redis commands per request (INFO commandstats, summed over the masters, measured run only)
# and Redis CPU µs per request and per command (INFO used_cpu_user + used_cpu_sys).
#
# Usage: scripts/bench-cluster.sh [seconds, default 10]
# Loopback only; every load run is bounded in time. Gateways on core 0, Redis, wrk and the
# upstream on core 1: the figures are per-request costs, not a throughput claim.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_start nginx-light wrk openssl redis-server redis-tools
UP_PORT=18641 GW_PORTS=(18642 18643 18644) REDIS_PORTS=(18645 18646 18647)

start_upstream "$UP_PORT"
for port in "${REDIS_PORTS[@]}"; do
  mkdir -p "$WORK/redis-$port"
  taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$WORK/redis-$port/nodes.conf" --dir "$WORK/redis-$port" >/dev/null &
  PIDS+=($!)
done
for port in "${REDIS_PORTS[@]}"; do
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
for port in "${REDIS_PORTS[@]}"; do
  until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.05; done
done
printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]}" | sed 's/,$//' > "$WORK/redis-url"

es256_key_and_jwks "$WORK/jwt.pem" bench > "$WORK/jwks.json"
TOKEN=$("$BIN" token --key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m --kid bench)
printf 'package bench\n\nallow := true\n' > "$WORK/allow.rego"
GW_PIDS=()
for port in "${GW_PORTS[@]}"; do
  mkdir -p "$WORK/gw-$port"
  cat > "$WORK/gw-$port/portcullis.yaml" <<YAML
listen: { address: 127.0.0.1:$port }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
identity:
  jwt:
    - { name: bench, issuer: https://idp.bench, audiences: [bench], jwks_file: $WORK/jwks.json, algorithms: [ES256], max_lifetime: 2h }
  revocation:
    store: redis
    redis: { url: "\${file:../redis-url}", timeout: 200ms, cluster: true }
policy: { engine: rego, rego: { files: [$WORK/allow.rego], query: data.bench.allow } }
rate_limit:
  store: redis
  redis: { url: "\${file:../redis-url}", timeout: 200ms, cluster: true }
  adaptive: { enabled: true, block_score: 101 }
  default: { limit: 1000000000, window: 1s, key: principal_or_ip }
routes:
  - match: { prefix: /api/ }
    upstream: backend
    rate_limit: { limit: 1000000000, window: 1s, key: principal }
YAML
  (cd "$WORK/gw-$port" && exec taskset -c 0 "$BIN" run --config portcullis.yaml 2>gateway.err) &
  GW_PIDS+=($!)
  PIDS+=($!)
done
for port in "${GW_PORTS[@]}"; do wait_for_port "$port"; done

by_command() { # "name calls usec" per command type, summed over the masters (INFO left out)
  for port in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$port" info commandstats | tr -d '\r'
  done | awk -F'[_:=,]' '/^cmdstat_/ && $2 != "info" {s[$2] += $4; u[$2] += $6} END {for (c in s) print c, s[c], u[c]}' | sort
}
redis_cpu() { # total CPU seconds of the masters
  for port in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$port" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {print s}'
  done | awk '{s += $1} END {printf "%.6f", s}'
}
load() { # PHASE-SECONDS: wrk on every gateway at once; prints the total requests
  local pids=() port
  for port in "${GW_PORTS[@]}"; do
    taskset -c 1 wrk -t1 -c16 -d"$1s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/items" > "$WORK/wrk-$port.out" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$WORK"/wrk-*.out | awk '/requests in/ {s += $1} END {print s + 0}'
}

load 2 >/dev/null
by_command > "$WORK/commands.before"; U0=$(redis_cpu)
REQUESTS=$(load "$DURATION")
by_command > "$WORK/commands.after"; U1=$(redis_cpu)
# Per command type over the measured run: "name calls".
join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 "$WORK/commands.before" "$WORK/commands.after" |
  awk '$4 > $2 {print $1, $4 - $2, $5 - $3}' > "$WORK/commands.run"
C0=0 C1=$(awk '{s += $2} END {print s + 0}' "$WORK/commands.run")
NON2XX=$(cat "$WORK"/wrk-*.out | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
CMDS=$((C1 - C0))
awk -v r="$REQUESTS" -v c="$CMDS" -v u0="$U0" -v u1="$U1" -v d="$DURATION" -v bad="$NON2XX" 'BEGIN {
  cpu = (u1 - u0) * 1000000
  printf "\n3 gateways, 3-master Redis Cluster, %s s: %d requests (%.0f/s), %d not 2xx\n", d, r, r / d, bad
  printf "Redis commands per request: %.2f\n", c / r
  printf "Redis CPU per request: %.1f us; per command: %.1f us\n", cpu / r, cpu / c
  printf "Redis CPU busy: %.0f%% of one core, summed over the masters\n", cpu / (d * 10000)
}'
echo "commands per request by type, and Redis's own time per call (INFO commandstats usec;"
echo "a script's time includes the commands it runs, which are also counted on their own):"
awk -v r="$REQUESTS" '{printf "  %-18s %6.2f per request %8.2f us per call\n", $1, $2 / r, $3 / $2}' "$WORK/commands.run"
echo "keys per node:"
for port in "${REDIS_PORTS[@]}"; do
  printf '  %s: %s keys\n' "$port" "$(redis-cli -p "$port" dbsize)"
done

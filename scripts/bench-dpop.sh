#!/usr/bin/env bash
# DPoP benchmark (RFC 9449 proofs at the gateway): the same JWT route with a DPoP-bound token
# and a fresh proof on every request, against a Bearer token, in one run. Proofs (and the
# one-use Bearer tokens of the uncached run) are minted ahead of time, each used once, and
# streamed to wrk line by line. Two gateways on core 0: proof ids remembered in memory, and
# in a shared redis-server (SET NX PX). wrk, the upstream and Redis share core 1.
#
# Reports, per route: requests/s, p50/p99 and gateway CPU µs per request, then
# - what a proof costs: DPoP minus Bearer (the token itself verified once and cached);
# - what one token verification costs in the same run: a new token on every request minus one
#   cached token. The target is DPoP - Bearer <= that + 5 µs;
# - Redis: requests/s and CPU against the memory store, and Redis commands per request read
#   from INFO commandstats (target: at most one round trip more than Bearer).
#
# Usage: scripts/bench-dpop.sh [seconds per run, default 10]
# Called by scripts/bench.sh with its own duration. Loopback only; every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
# Upper bound of the request rate of any run here: enough proofs and tokens for it.
RATE_BOUND="${BENCH_DPOP_RATE_BOUND:-30000}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_start nginx-light wrk openssl redis-server

UP_PORT=18621 MEM_PORT=18622 REDIS_GW_PORT=18623 REDIS_PORT=18624
HOST=bench.dpop
URL_PATH=/dpop/items

# The issuer's ES256 key (a JWKS file for the gateways) and the client's DPoP key.
es256_key_and_jwks "$WORK/jwt.pem" bench > "$WORK/jwks.json"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$WORK/client.pem"
MINT=(--key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m --kid bench)
BOUND=$("$BIN" token "${MINT[@]}" --cnf-jkt "$WORK/client.pem")
BEARER=$("$BIN" token "${MINT[@]}")

# Each line used once: warm-up and measured runs read different files. The memory and Redis
# gateways keep separate replay state, so both read the same proofs.
WARM_COUNT=$((RATE_BOUND * 2)) MEASURED_COUNT=$((RATE_BOUND * DURATION))
PROOF=(--key "$WORK/client.pem" --method GET --url "http://$HOST$URL_PATH" --token "$BOUND")
"$BIN" dpop proof "${PROOF[@]}" --count "$WARM_COUNT" > "$WORK/proofs.warmup"
"$BIN" dpop proof "${PROOF[@]}" --count "$MEASURED_COUNT" > "$WORK/proofs.measured"
"$BIN" token "${MINT[@]}" --count "$WARM_COUNT" > "$WORK/tokens.warmup"
"$BIN" token "${MINT[@]}" --count "$MEASURED_COUNT" > "$WORK/tokens.measured"
# wrk streams STREAM.<phase> one line per request; HEADER_PREFIX goes before the line. When
# the stream runs dry the last line repeats, is refused as a replay and shows as non-2xx.
cat > "$WORK/stream.lua" <<'LUA'
local f = assert(io.open(os.getenv("STREAM") .. "." .. os.getenv("BENCH_PHASE"), "r"))
local name, prefix = os.getenv("HEADER_NAME"), os.getenv("HEADER_PREFIX")
local extra_name, extra_value = os.getenv("EXTRA_NAME"), os.getenv("EXTRA_VALUE")
local last = ""
request = function()
  last = f:read("*l") or last
  local headers = { [name] = prefix .. last, ["Host"] = os.getenv("HOST") }
  if extra_name ~= "" then headers[extra_name] = extra_value end
  return wrk.format("GET", os.getenv("URL_PATH"), headers)
end
LUA
export HOST URL_PATH

start_upstream "$UP_PORT"
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
printf 'redis://127.0.0.1:%s/' "$REDIS_PORT" > "$WORK/redis-url"
for store in memory redis; do
  port=$MEM_PORT
  [ "$store" = redis ] && port=$REDIS_GW_PORT
  mkdir -p "$WORK/$store"
  cat > "$WORK/$store/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$port }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
identity:
  jwt:
    - { name: bench, issuer: https://idp.bench, audiences: [bench], jwks_file: ../jwks.json, algorithms: [ES256], max_lifetime: 2h }
  dpop: { max_age: 10m, replay_store: $store }
rate_limit:
  store: $store
  redis: { url: "\${file:../redis-url}", timeout: 50ms }
policy:
  engine: rego
  rego: { files: [../allow.rego], query: data.bench.allow }
routes:
  - match: { prefix: /dpop/ }
    upstream: backend
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
done
printf 'package bench\n\nallow := true\n' > "$WORK/allow.rego"
taskset -c 0 "$BIN" run --config "$WORK/memory/portcullis.yaml" 2>"$WORK/memory.err" &
MEM_PID=$!
PIDS+=($MEM_PID)
taskset -c 0 "$BIN" run --config "$WORK/redis/portcullis.yaml" 2>"$WORK/redis.err" &
REDIS_GW_PID=$!
PIDS+=($REDIS_GW_PID)
wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$MEM_PORT/"
wait_for "http://127.0.0.1:$REDIS_GW_PORT/"

# Both gateways accept the bound token with a proof and refuse it without one, and refuse a
# replayed proof, before anything is measured.
for port in $MEM_PORT $REDIS_GW_PORT; do
  proof=$("$BIN" dpop proof "${PROOF[@]}")
  call() { curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "$@" "http://127.0.0.1:$port$URL_PATH"; }
  [ "$(call -H "authorization: DPoP $BOUND" -H "dpop: $proof")" = 200 ] \
    || { echo "bench: port $port refused a valid DPoP request" >&2; exit 1; }
  [ "$(call -H "authorization: DPoP $BOUND" -H "dpop: $proof")" = 401 ] \
    || { echo "bench: port $port accepted a replayed proof" >&2; exit 1; }
  [ "$(call -H "authorization: Bearer $BOUND")" = 401 ] \
    || { echo "bench: port $port accepted a DPoP-bound token as Bearer" >&2; exit 1; }
  [ "$(call -H "authorization: Bearer $BEARER")" = 200 ] \
    || { echo "bench: port $port refused a valid Bearer token" >&2; exit 1; }
done

redis_calls() { # total commands Redis has run, INFO's own left out
  redis-cli -p "$REDIS_PORT" info commandstats \
    | awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { n += $3 } END { print n + 0 }'
}
per_request() { # Redis commands per request over the last measured run
  ratio "$(cat "$WORK/measured.counter")" "$(cat "$WORK/measured.requests")"
}
bearer() { # PORT PID
  measure "http://127.0.0.1:$1$URL_PATH" "$2" -H "Host: $HOST" -H "authorization: Bearer $BEARER"
}
dpop() { # PORT PID
  STREAM="$WORK/proofs" HEADER_NAME=DPoP HEADER_PREFIX="" EXTRA_NAME=Authorization EXTRA_VALUE="DPoP $BOUND" \
    measure "http://127.0.0.1:$1$URL_PATH" "$2" -s "$WORK/stream.lua"
}
fresh_tokens() { # PORT PID
  STREAM="$WORK/tokens" HEADER_NAME=Authorization HEADER_PREFIX="Bearer " EXTRA_NAME="" EXTRA_VALUE="" \
    measure "http://127.0.0.1:$1$URL_PATH" "$2" -s "$WORK/stream.lua"
}

read -r B_RPS B_P50 B_P99 B_CPU < <(bearer "$MEM_PORT" "$MEM_PID")
read -r D_RPS D_P50 D_P99 D_CPU < <(dpop "$MEM_PORT" "$MEM_PID")
read -r F_RPS F_P50 F_P99 F_CPU < <(fresh_tokens "$MEM_PORT" "$MEM_PID")
MEASURE_COUNTER=redis_calls
read -r RB_RPS RB_P50 RB_P99 RB_CPU < <(bearer "$REDIS_GW_PORT" "$REDIS_GW_PID")
RB_CMDS=$(per_request)
read -r RD_RPS RD_P50 RD_P99 RD_CPU < <(dpop "$REDIS_GW_PORT" "$REDIS_GW_PID")
RD_CMDS=$(per_request)

sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
echo
echo "DPoP (${DURATION}s per run, $CONNS connections; gateway on core 0, wrk, nginx and Redis on core 1)"
printf '%-36s %10s %9s %9s %12s %10s\n' run 'req/s' 'p50 µs' 'p99 µs' 'CPU µs/req' 'Redis/req'
printf '%-36s %10s %9s %9s %12s %10s\n' "Bearer, cached token (memory)" "$B_RPS" "$B_P50" "$B_P99" "$B_CPU" -
printf '%-36s %10s %9s %9s %12s %10s\n' "DPoP, fresh proof (memory)" "$D_RPS" "$D_P50" "$D_P99" "$D_CPU" -
printf '%-36s %10s %9s %9s %12s %10s\n' "Bearer, new token each (memory)" "$F_RPS" "$F_P50" "$F_P99" "$F_CPU" -
printf '%-36s %10s %9s %9s %12s %10s\n' "Bearer, cached token (redis)" "$RB_RPS" "$RB_P50" "$RB_P99" "$RB_CPU" "$RB_CMDS"
printf '%-36s %10s %9s %9s %12s %10s\n' "DPoP, fresh proof (redis)" "$RD_RPS" "$RD_P50" "$RD_P99" "$RD_CPU" "$RD_CMDS"
PROOF_COST=$(sub "$D_CPU" "$B_CPU")
VERIFY_COST=$(sub "$F_CPU" "$B_CPU")
echo
echo "proof cost (DPoP - Bearer):                   $PROOF_COST µs CPU per request"
echo "one token verification (new token - cached):  $VERIFY_COST µs (parse and claims included)"
echo "beyond one verification (target <= 5 µs):     $(sub "$PROOF_COST" "$VERIFY_COST") µs"
echo "redis store vs memory, DPoP:                  $(ratio "$RD_RPS" "$D_RPS")x req/s, $(ratio "$RD_CPU" "$D_CPU")x CPU"
echo "Redis commands per request, DPoP - Bearer:    $(sub "$RD_CMDS" "$RB_CMDS") (target <= 1)"

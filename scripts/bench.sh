#!/usr/bin/env bash
# Whole-gateway benchmark: Portcullis (plain proxy route, no auth) and nginx (proxy_pass with
# upstream keep-alive, one worker) in front of the same upstream, in one run. Each proxy is
# pinned to core 0; wrk and the upstream share core 1. Reports requests/s, p50/p99 latency and
# proxy CPU time per request, and Portcullis's figures as ratios of nginx's (same machine, same
# minute, so the ratios mean more than the absolute numbers). Also: idle RSS, RSS with 1,000
# open keep-alive connections, and how long `portcullis demo` takes to become ready. Over TLS
# (the same ECDSA P-256 certificate for both, TLS 1.3): keep-alive throughput, new full
# handshakes per second (a new connection per request, no resumption) with CPU per
# handshake, and resumed handshakes (session tickets) per second, Portcullis against nginx.
# Ends with scripts/bench-dpop.sh (DPoP proofs against Bearer, memory and Redis replay stores)
# and scripts/bench-protocols.sh (WebSocket echo and gRPC unary, gateway against direct).
#
# Usage: scripts/bench.sh [seconds per run, default 10]
# Loopback only; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_start nginx-light wrk haproxy openssl redis-server

UP_PORT=18601 NGINX_PORT=18602 PC_PORT=18603 DEMO_PORT=18604 DEMO_ADMIN=18605 HAPROXY_PORT=18606
SYNC_PORT=18607 ASYNC_PORT=18608 FULL_PORT=18618 RL_MEM_PORT=18609 RL_REDIS_PORT=18610 REDIS_PORT=18611
VAL_PORT=18612 TLS_PC_PORT=18613 TLS_NGINX_PORT=18614 WATCH_DET_PORT=18615 WATCH_ALL_PORT=18616
NOLOG_PORT=18617
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# An ES256 key for the authenticated runs: JWKS for Portcullis, SPKI PEM for HAProxy, and
# 100,000 distinct valid tokens minted by `portcullis token` (they cycle through the
# gateway's default 16,384-entry token cache, so nearly every request is a cache miss).
es256_key_and_jwks "$WORK/jwt.pem" bench > "$WORK/jwks.json"
openssl ec -in "$WORK/jwt.pem" -pubout -out "$WORK/jwt.pub.pem" 2>/dev/null
"$BIN" token --key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m --kid bench --count 100000 > "$WORK/tokens.txt"
ONE_TOKEN=$(head -1 "$WORK/tokens.txt")
cat > "$WORK/cycle.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
-- The measured run starts halfway down the list, past every token the warm-up used, so no
-- measured request finds its token in the cache from the warm-up.
local i = 0
if os.getenv("BENCH_PHASE") == "measured" then i = math.floor(#tokens / 2) end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/jwt/items", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

# TLS: a local CA and an ECDSA P-256 server certificate for 127.0.0.1, shared by both proxies.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key" 2>/dev/null
openssl req -x509 -new -key "$WORK/ca.key" -subj /CN=bench-ca -days 2 -out "$WORK/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$WORK/tls.key"
openssl req -new -key "$WORK/tls.key" -subj /CN=127.0.0.1 -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$WORK/tls.ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/tls.ext" -out "$WORK/tls.pem" 2>/dev/null

start_upstream "$UP_PORT"

# The nginx proxy under test: one worker on core 0, keep-alive to the upstream.
cat > "$WORK/proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
taskset -c 0 "$NGINX" -c "$WORK/proxy.conf" -p "$WORK" &
PIDS+=($!)

# The same nginx proxy over TLS 1.3 (tickets on, as Portcullis has them).
cat > "$WORK/tls-proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/tls-proxy.pid;
error_log $WORK/tls-proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$TLS_NGINX_PORT ssl http2;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:tls:10m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
taskset -c 0 "$NGINX" -c "$WORK/tls-proxy.conf" -p "$WORK" &
PIDS+=($!)
mkdir -p "$WORK/tls"
cat > "$WORK/tls/portcullis.yaml" <<CONF
listen:
  address: 127.0.0.1:$TLS_PC_PORT
  tls: { cert: ../tls.pem, key: ../tls.key }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
routes:
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF

cat > "$WORK/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$PC_PORT }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
identity:
  jwt:
    - name: bench
      issuer: https://idp.bench
      audiences: [bench]
      jwks_file: jwks.json
      algorithms: [ES256]
      max_lifetime: 2h
policy:
  engine: rego
  rego: { files: [allow.rego], query: data.bench.allow }
routes:
  - match: { prefix: /jwt/ }
    upstream: backend
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
printf 'package bench\n\nallow := true\n' > "$WORK/allow.rego"

# The full pipeline with the demo's Rego policy and a decision log, sync against async.
cp examples/policies/authz.rego examples/policies/data.json "$WORK/"
# "none": the same without a decision log, so the record's cost is a difference of two runs.
for mode in sync async none; do
  port=$SYNC_PORT
  [ "$mode" = async ] && port=$ASYNC_PORT
  [ "$mode" = none ] && port=$NOLOG_PORT
  log="  decision_log: { path: decisions.log, durability: $mode }"
  [ "$mode" = none ] && log=""
  mkdir -p "$WORK/$mode"
  cat > "$WORK/$mode/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$port }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
identity:
  jwt:
    - { name: bench, issuer: https://idp.bench, audiences: [bench], jwks_file: ../jwks.json, algorithms: [ES256], max_lifetime: 2h }
policy:
  engine: rego
  rego: { files: [../authz.rego], data: [../data.json], query: data.api.authz.allow }
$log
routes:
  - match: { path: "/jwt/items/{id}" }
    upstream: backend
    resource: { type: items, id: "{id}" }
CONF
done

# HAProxy checking the same tokens: signature (jwt_verify), alg, iss, aud and exp.
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  log stderr format raw local0 emerg
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str https://idp.bench }
  http-request deny deny_status 401 unless { var(txn.aud) -m str bench }
  http-request set-var(txn.now) date
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$WORK/jwt.pub.pem") -m int 1 }
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$UP_PORT
CONF
taskset -c 0 "$HAPROXY" -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HA_PID=$!
PIDS+=($HA_PID)
# Rate limiting on every request (a limit no run reaches): memory store against Redis.
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
printf 'redis://127.0.0.1:%s/' "$REDIS_PORT" > "$WORK/redis-url"
for store in memory redis; do
  port=$RL_MEM_PORT
  [ "$store" = redis ] && port=$RL_REDIS_PORT
  mkdir -p "$WORK/rl-$store"
  cat > "$WORK/rl-$store/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$port }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
rate_limit:
  store: $store
  redis: { url: "\${file:../redis-url}", timeout: 50ms }
  adaptive: { enabled: true, block_score: 101 }
  default: { limit: 1000000000, window: 1s, key: ip }
routes:
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
done
# Monitoring that acts: the memory-store gateway above with every detector on, then with
# traces too (sampled at 0.1, exported to the upstream, which refuses the POST: the spans are
# still built, encoded and sent, which is the cost measured).
for watch in det all; do
  port=$WATCH_DET_PORT
  traces=""
  if [ "$watch" = all ]; then
    port=$WATCH_ALL_PORT
    traces=", traces: { endpoint: \"http://127.0.0.1:$UP_PORT/v1/traces\", sample_ratio: 0.1 }"
  fi
  mkdir -p "$WORK/watch-$watch"
  sed -e "s/127.0.0.1:$RL_MEM_PORT/127.0.0.1:$port/" \
    -e "s|^monitoring: { events: { sink: file, path: events.log } }|monitoring: { events: { sink: file, path: events.log }, detection: { exfiltration: {}, error_spike: {}, enumeration: {}, privilege_escalation: {} }$traces }|" \
    "$WORK/rl-memory/portcullis.yaml" > "$WORK/watch-$watch/portcullis.yaml"
done
# Contract enforcement: GET (parameters only) against POST of a 1 KB JSON body checked
# against a 20-property schema (the criterion bench's document and body).
mkdir -p "$WORK/val"
cp crates/portcullis/benches/data/twenty-properties.json crates/portcullis/benches/data/twenty-properties-body.json "$WORK/val/"
cat > "$WORK/val/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$VAL_PORT }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
validation: { openapi: twenty-properties.json }
routes:
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
# The full pipeline of issue #16: JWT from a JWKS file, an adaptive memory rate limit, a
# two-rule Rego policy, OpenAPI validation (the same document and body as above), a sync
# decision log and events to a file, all on one route.
full_pipeline "$WORK/full" "$FULL_PORT" "$UP_PORT" ../jwks.json https://idp.bench bench
cat > "$WORK/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
taskset -c 0 "$BIN" run --config "$WORK/tls/portcullis.yaml" 2>"$WORK/tls.err" &
TLS_PC_PID=$!
PIDS+=($TLS_PC_PID)
taskset -c 0 "$BIN" run --config "$WORK/val/portcullis.yaml" 2>"$WORK/val.err" &
VAL_PID=$!
PIDS+=($VAL_PID)
taskset -c 0 "$BIN" run --config "$WORK/rl-memory/portcullis.yaml" 2>"$WORK/rl-memory.err" &
RL_MEM_PID=$!
PIDS+=($RL_MEM_PID)
taskset -c 0 "$BIN" run --config "$WORK/rl-redis/portcullis.yaml" 2>"$WORK/rl-redis.err" &
RL_REDIS_PID=$!
PIDS+=($RL_REDIS_PID)
taskset -c 0 "$BIN" run --config "$WORK/watch-det/portcullis.yaml" 2>"$WORK/watch-det.err" &
WATCH_DET_PID=$!
PIDS+=($WATCH_DET_PID)
taskset -c 0 "$BIN" run --config "$WORK/watch-all/portcullis.yaml" 2>"$WORK/watch-all.err" &
WATCH_ALL_PID=$!
PIDS+=($WATCH_ALL_PID)
taskset -c 0 "$BIN" run --config "$WORK/full/portcullis.yaml" 2>"$WORK/full.err" &
FULL_PID=$!
PIDS+=($FULL_PID)
taskset -c 0 "$BIN" run --config "$WORK/portcullis.yaml" 2>"$WORK/portcullis.err" &
PC_PID=$!
PIDS+=($PC_PID)
taskset -c 0 "$BIN" run --config "$WORK/sync/portcullis.yaml" 2>"$WORK/sync.err" &
SYNC_PID=$!
PIDS+=($SYNC_PID)
taskset -c 0 "$BIN" run --config "$WORK/async/portcullis.yaml" 2>"$WORK/async.err" &
ASYNC_PID=$!
PIDS+=($ASYNC_PID)
taskset -c 0 "$BIN" run --config "$WORK/none/portcullis.yaml" 2>"$WORK/none.err" &
NOLOG_PID=$!
PIDS+=($NOLOG_PID)

wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$NGINX_PORT/"
wait_for "http://127.0.0.1:$PC_PORT/"
wait_for "http://127.0.0.1:$RL_MEM_PORT/"
wait_for "http://127.0.0.1:$RL_REDIS_PORT/"
wait_for "http://127.0.0.1:$WATCH_DET_PORT/"
wait_for "http://127.0.0.1:$WATCH_ALL_PORT/"
wait_for "http://127.0.0.1:$VAL_PORT/items?limit=10"
for port in $TLS_PC_PORT $TLS_NGINX_PORT; do
  for _ in $(seq 1 200); do
    curl -fsS --cacert "$WORK/ca.pem" -o /dev/null "https://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.05
  done
  curl -fsS --cacert "$WORK/ca.pem" -o /dev/null "https://127.0.0.1:$port/" \
    || { echo "bench: https on port $port never answered" >&2; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' --data-binary "@$WORK/val/twenty-properties-body.json" "http://127.0.0.1:$VAL_PORT/items")
[ "$code" = 200 ] || { echo "bench: the validating gateway refused the conforming body ($code)" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"is_admin":true}' "http://127.0.0.1:$VAL_PORT/items")
[ "$code" = 400 ] || { echo "bench: the validating gateway accepted a non-conforming body ($code)" >&2; exit 1; }
for port in $SYNC_PORT $ASYNC_PORT $NOLOG_PORT; do
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/jwt/items/2")" != 000 ] && break
    sleep 0.05
  done
done
for port in $PC_PORT $HAPROXY_PORT; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $ONE_TOKEN" "http://127.0.0.1:$port/jwt/items")
  [ "$code" = 200 ] || { echo "bench: port $port refused a valid token ($code)" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer ${ONE_TOKEN}x" "http://127.0.0.1:$port/jwt/items")
  [ "$code" = 401 ] || [ "$code" = 403 ] || { echo "bench: port $port accepted a bad token ($code)" >&2; exit 1; }
done
# The full pipeline: a scoped token passes every check; a body off the schema and a missing
# token are refused.
"$BIN" token --key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m --kid bench --scope "items:read items:write" > "$WORK/scoped.txt"
SCOPED=(-H "authorization: Bearer $(cat "$WORK/scoped.txt")")
wait_for_port "$FULL_PORT"
FULL_IDLE_RSS=$(rss_kib "$FULL_PID")
FULL_IDLE_ANON=$(anon_kib "$FULL_PID")
code=$(curl -s -o /dev/null -w '%{http_code}' "${SCOPED[@]}" "http://127.0.0.1:$FULL_PORT/items?limit=10")
[ "$code" = 200 ] || { echo "bench: the full pipeline refused a scoped GET ($code)" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "${SCOPED[@]}" -H 'content-type: application/json' --data-binary "@$WORK/val/twenty-properties-body.json" "http://127.0.0.1:$FULL_PORT/items")
[ "$code" = 200 ] || { echo "bench: the full pipeline refused a scoped, conforming POST ($code)" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "${SCOPED[@]}" -H 'content-type: application/json' -d '{"is_admin":true}' "http://127.0.0.1:$FULL_PORT/items")
[ "$code" = 400 ] || { echo "bench: the full pipeline accepted a non-conforming body ($code)" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FULL_PORT/items?limit=10")
[ "$code" = 401 ] || { echo "bench: the full pipeline answered $code without a token" >&2; exit 1; }
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)
TLS_NGINX_WORKER=$(pgrep -P "$(cat "$WORK/tls-proxy.pid")" | head -1)

IDLE_RSS=$(rss_kib "$PC_PID")

read -r N_RPS N_P50 N_P99 N_CPU < <(measure "http://127.0.0.1:$NGINX_PORT/api/items" "$NGINX_WORKER")
read -r P_RPS P_P50 P_P99 P_CPU < <(measure "http://127.0.0.1:$PC_PORT/api/items" "$PC_PID")
AUTH=(-H "authorization: Bearer $ONE_TOKEN")
read -r A_RPS A_P50 A_P99 A_CPU < <(measure "http://127.0.0.1:$PC_PORT/jwt/items" "$PC_PID" "${AUTH[@]}")
export TOKENS="$WORK/tokens.txt"
read -r C_RPS C_P50 C_P99 C_CPU < <(measure "http://127.0.0.1:$PC_PORT/jwt/items" "$PC_PID" -s "$WORK/cycle.lua")
read -r H_RPS H_P50 H_P99 H_CPU < <(measure "http://127.0.0.1:$HAPROXY_PORT/jwt/items" "$HA_PID" -s "$WORK/cycle.lua")
read -r H1_RPS H1_P50 H1_P99 H1_CPU < <(measure "http://127.0.0.1:$HAPROXY_PORT/jwt/items" "$HA_PID" "${AUTH[@]}")
# The scoped token, so the demo policy allows the GETs (every one decided and recorded).
read -r S_RPS S_P50 S_P99 S_CPU < <(measure "http://127.0.0.1:$SYNC_PORT/jwt/items/2" "$SYNC_PID" "${SCOPED[@]}")
read -r Y_RPS Y_P50 Y_P99 Y_CPU < <(measure "http://127.0.0.1:$ASYNC_PORT/jwt/items/2" "$ASYNC_PID" "${SCOPED[@]}")
read -r O_RPS O_P50 O_P99 O_CPU < <(measure "http://127.0.0.1:$NOLOG_PORT/jwt/items/2" "$NOLOG_PID" "${SCOPED[@]}")
SYNC_RECORDS=$(wc -l < "$WORK/sync/decisions.log")
UAH=(-H "user-agent: portcullis-bench/1.0")
read -r M_RPS M_P50 M_P99 M_CPU < <(measure "http://127.0.0.1:$RL_MEM_PORT/api/items" "$RL_MEM_PID" "${UAH[@]}")
evalsha_calls() { redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_evalsha:/ {print $3}'; }
MEASURE_COUNTER=evalsha_calls measure "http://127.0.0.1:$RL_REDIS_PORT/api/items" "$RL_REDIS_PID" "${UAH[@]}" > "$WORK/rl-redis.measured"
read -r R_RPS R_P50 R_P99 R_CPU < "$WORK/rl-redis.measured"
R_TRIPS=$(awk -v c="$(cat "$WORK/measured.counter")" -v r="$(cat "$WORK/measured.requests")" 'BEGIN { printf "%.2f", c / r }')
read -r WD_RPS WD_P50 WD_P99 WD_CPU < <(measure "http://127.0.0.1:$WATCH_DET_PORT/api/items" "$WATCH_DET_PID" "${UAH[@]}")
read -r WA_RPS WA_P50 WA_P99 WA_CPU < <(measure "http://127.0.0.1:$WATCH_ALL_PORT/api/items" "$WATCH_ALL_PID" "${UAH[@]}")
read -r VG_RPS VG_P50 VG_P99 VG_CPU < <(measure "http://127.0.0.1:$VAL_PORT/items?limit=10" "$VAL_PID")
export BODY="$WORK/val/twenty-properties-body.json"
read -r VP_RPS VP_P50 VP_P99 VP_CPU < <(measure "http://127.0.0.1:$VAL_PORT/items" "$VAL_PID" -s "$WORK/post.lua")
# The full pipeline, GET and the same POST.
read -r F_RPS F_P50 F_P99 F_CPU < <(measure "http://127.0.0.1:$FULL_PORT/items?limit=10" "$FULL_PID" "${SCOPED[@]}")
read -r FP_RPS FP_P50 FP_P99 FP_CPU < <(measure "http://127.0.0.1:$FULL_PORT/items" "$FULL_PID" -s "$WORK/post.lua" "${SCOPED[@]}")
# The same POST through the plain route: what moving 1 KB through the proxy costs by itself.
read -r PP_RPS PP_P50 PP_P99 PP_CPU < <(measure "http://127.0.0.1:$PC_PORT/items" "$PC_PID" -s "$WORK/post.lua")
# And through nginx: what the same POST costs a proxy that reads nothing.
read -r NP_RPS NP_P50 NP_P99 NP_CPU < <(measure "http://127.0.0.1:$NGINX_PORT/items" "$NGINX_WORKER" -s "$WORK/post.lua")

# TLS: keep-alive throughput, then a new connection (a full TLS 1.3 handshake: wrk never
# resumes) for every request.
read -r TN_RPS TN_P50 TN_P99 TN_CPU < <(measure "https://127.0.0.1:$TLS_NGINX_PORT/api/items" "$TLS_NGINX_WORKER")
read -r TP_RPS TP_P50 TP_P99 TP_CPU < <(measure "https://127.0.0.1:$TLS_PC_PORT/api/items" "$TLS_PC_PID")
CLOSE=(-H "Connection: close")
read -r HN_RPS HN_P50 HN_P99 HN_CPU < <(measure "https://127.0.0.1:$TLS_NGINX_PORT/api/items" "$TLS_NGINX_WORKER" "${CLOSE[@]}")
read -r HP_RPS HP_P50 HP_P99 HP_CPU < <(measure "https://127.0.0.1:$TLS_PC_PORT/api/items" "$TLS_PC_PID" "${CLOSE[@]}")
# Resumed handshakes (session tickets), one client at a time: openssl s_time -reuse.
resumed() { # PORT -> connections per second
  taskset -c 1 openssl s_time -connect "127.0.0.1:$1" -CAfile "$WORK/ca.pem" -reuse -time "$DURATION" 2>/dev/null \
    | awk '/connections in [0-9.]+ real seconds/ { printf "%.0f", $1 / $4 }'
}
full() { # PORT -> connections per second, no reuse
  taskset -c 1 openssl s_time -connect "127.0.0.1:$1" -CAfile "$WORK/ca.pem" -new -time "$DURATION" 2>/dev/null \
    | awk '/connections in [0-9.]+ real seconds/ { printf "%.0f", $1 / $4 }'
}
RN=$(resumed "$TLS_NGINX_PORT"); RP=$(resumed "$TLS_PC_PORT")
FN=$(full "$TLS_NGINX_PORT"); FP=$(full "$TLS_PC_PORT")

# RSS with 1,000 open keep-alive connections, each having made one request (with the given
# request head lines), on the plain gateway and on the full pipeline.
held_rss() { # PORT PID PATH [HEADER]
  python3 - "$@" <<'PY'
import asyncio, sys
port, pid, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
extra = "".join(h + "\r\n" for h in sys.argv[4:])
head = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head)
    await w.drain()
    await asyncio.wait_for(r.readuntil(b"}"), 10)
    return w
async def main():
    writers = []
    for _ in range(10):
        writers += await asyncio.gather(*(one() for _ in range(100)))
    rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
    print(rss)
    for w in writers:
        w.close()
asyncio.run(main())
PY
}
HELD_RSS=$(held_rss "$PC_PORT" "$PC_PID" /api/items)
FULL_HELD_RSS=$(held_rss "$FULL_PORT" "$FULL_PID" "/items?limit=10" "authorization: Bearer $(cat "$WORK/scoped.txt")")

# Demo readiness: from exec to a 200 on /readyz.
START=$(date +%s%N)
"$BIN" demo --listen "127.0.0.1:$DEMO_PORT" --admin "127.0.0.1:$DEMO_ADMIN" >/dev/null 2>&1 &
DEMO_PID=$!
PIDS+=($DEMO_PID)
until curl -fsS -o /dev/null "http://127.0.0.1:$DEMO_ADMIN/readyz" 2>/dev/null; do
  [ $(( ($(date +%s%N) - START) / 1000000 )) -lt 10000 ] || { echo "demo never ready" >&2; break; }
  sleep 0.01
done
DEMO_MS=$(( ($(date +%s%N) - START) / 1000000 ))

printf '\n%-22s %12s %10s %10s %14s\n' "plain proxy ($CONNS conns)" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-22s %12s %10s %10s %14s\n' "nginx" "$N_RPS" "$N_P50" "$N_P99" "$N_CPU"
printf '%-22s %12s %10s %10s %14s\n' "portcullis" "$P_RPS" "$P_P50" "$P_P99" "$P_CPU"
printf '%-22s %12s %10s %10s %14s\n' "portcullis / nginx" "$(ratio "$P_RPS" "$N_RPS")" "$(ratio "$P_P50" "$N_P50")" "$(ratio "$P_P99" "$N_P99")" "$(ratio "$P_CPU" "$N_CPU")"
printf '\n%-34s %12s %10s %10s %14s\n' "authenticated, ES256" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "portcullis, one token" "$A_RPS" "$A_P50" "$A_P99" "$A_CPU"
printf '%-34s %12s %10s %10s %14s\n' "haproxy jwt_verify, one token" "$H1_RPS" "$H1_P50" "$H1_P99" "$H1_CPU"
printf '%-34s %12s %10s %10s %14s\n' "portcullis, 100,000 tokens cycling" "$C_RPS" "$C_P50" "$C_P99" "$C_CPU"
printf '%-34s %12s %10s %10s %14s\n' "haproxy, 100,000 tokens cycling" "$H_RPS" "$H_P50" "$H_P99" "$H_CPU"
printf 'portcullis authenticated / its own plain proxy: %s (target >= 0.90)\n' "$(ratio "$A_RPS" "$P_RPS")"
printf 'portcullis / haproxy, 100,000 tokens cycling: %s (target >= 1.5)\n' "$(ratio "$C_RPS" "$H_RPS")"
printf '\n%-34s %12s %10s %10s %14s\n' "JWT + Rego + decision log" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "durability: sync" "$S_RPS" "$S_P50" "$S_P99" "$S_CPU"
printf '%-34s %12s %10s %10s %14s\n' "durability: async" "$Y_RPS" "$Y_P50" "$Y_P99" "$Y_CPU"
printf '%-34s %12s %10s %10s %14s\n' "no decision log" "$O_RPS" "$O_P50" "$O_P99" "$O_CPU"
printf 'sync / async: %s (target >= 0.80); %s decision records fsynced in the sync runs\n' "$(ratio "$S_RPS" "$Y_RPS")" "$SYNC_RECORDS"
printf 'decision record, CPU µs per request: sync +%s, async +%s (target <= 2)\n' \
  "$(awk -v a="$S_CPU" -v b="$O_CPU" 'BEGIN { printf "%.1f", a - b }')" "$(awk -v a="$Y_CPU" -v b="$O_CPU" 'BEGIN { printf "%.1f", a - b }')"
printf '\n%-34s %12s %10s %10s %14s\n' "rate limit on every request" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "memory store" "$M_RPS" "$M_P50" "$M_P99" "$M_CPU"
printf '%-34s %12s %10s %10s %14s\n' "redis store" "$R_RPS" "$R_P50" "$R_P99" "$R_CPU"
printf 'redis / memory: %s (target >= 0.90); memory store vs plain proxy: %s\n' "$(ratio "$R_RPS" "$M_RPS")" "$(ratio "$M_RPS" "$P_RPS")"
printf 'redis store: %s script calls (round trips) per request; scripts/bench-cluster.sh counts revocation and two limits\n' "$R_TRIPS"
printf '\n%-34s %12s %10s %10s %14s\n' "monitoring (memory store as above)" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "detection and traces off" "$M_RPS" "$M_P50" "$M_P99" "$M_CPU"
printf '%-34s %12s %10s %10s %14s\n' "every detector on" "$WD_RPS" "$WD_P50" "$WD_P99" "$WD_CPU"
printf '%-34s %12s %10s %10s %14s\n' "detectors + traces at 0.1" "$WA_RPS" "$WA_P50" "$WA_P99" "$WA_CPU"
printf 'CPU per request vs off: detectors %s, detectors + traces %s\n' "$(ratio "$WD_CPU" "$M_CPU")" "$(ratio "$WA_CPU" "$M_CPU")"
printf '\n%-34s %12s %10s %10s %14s\n' "OpenAPI validation" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "GET, query parameter" "$VG_RPS" "$VG_P50" "$VG_P99" "$VG_CPU"
printf '%-34s %12s %10s %10s %14s\n' "POST, 1 KB body, 20 properties" "$VP_RPS" "$VP_P50" "$VP_P99" "$VP_CPU"
printf '%-34s %12s %10s %10s %14s\n' "POST, same body, plain route" "$PP_RPS" "$PP_P50" "$PP_P99" "$PP_CPU"
printf 'POST / GET: %s (target >= 0.85); plain route POST / GET: %s; validated POST / plain POST: %s, +%s CPU µs per request\n' \
  "$(ratio "$VP_RPS" "$VG_RPS")" "$(ratio "$PP_RPS" "$P_RPS")" "$(ratio "$VP_RPS" "$PP_RPS")" "$(awk -v a="$VP_CPU" -v b="$PP_CPU" 'BEGIN { printf "%.1f", a - b }')"
printf '%-34s %12s %10s %10s %14s\n' "POST, same body, nginx" "$NP_RPS" "$NP_P50" "$NP_P99" "$NP_CPU"
printf 'GET with validation vs plain proxy: %s; nginx POST / GET: %s\n' "$(ratio "$VG_RPS" "$P_RPS")" "$(ratio "$NP_RPS" "$N_RPS")"
printf '\n%-34s %12s %10s %10s %14s\n' "TLS 1.3, ECDSA P-256" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "nginx, keep-alive" "$TN_RPS" "$TN_P50" "$TN_P99" "$TN_CPU"
printf '%-34s %12s %10s %10s %14s\n' "portcullis, keep-alive" "$TP_RPS" "$TP_P50" "$TP_P99" "$TP_CPU"
printf '%-34s %12s %10s %10s %14s\n' "nginx, new handshake each" "$HN_RPS" "$HN_P50" "$HN_P99" "$HN_CPU"
printf '%-34s %12s %10s %10s %14s\n' "portcullis, new handshake each" "$HP_RPS" "$HP_P50" "$HP_P99" "$HP_CPU"
printf 'TLS keep-alive portcullis / nginx: %s (target >= 0.90); new handshakes/s: %s (target >= 0.90), CPU µs per handshake + request %s vs %s\n' \
  "$(ratio "$TP_RPS" "$TN_RPS")" "$(ratio "$HP_RPS" "$HN_RPS")" "$HP_CPU" "$HN_CPU"
printf 'openssl s_time, one client: full handshakes/s nginx %s, portcullis %s (%s); resumed (tickets) nginx %s, portcullis %s (%s)\n' \
  "$FN" "$FP" "$(ratio "$FP" "$FN")" "$RN" "$RP" "$(ratio "$RP" "$RN")"
printf '\n%-34s %12s %10s %10s %14s\n' "full pipeline (one route)" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-34s %12s %10s %10s %14s\n' "GET, query parameter" "$F_RPS" "$F_P50" "$F_P99" "$F_CPU"
printf '%-34s %12s %10s %10s %14s\n' "POST, 1 KB body, 20 properties" "$FP_RPS" "$FP_P50" "$FP_P99" "$FP_CPU"
printf '\nportcullis RSS: plain gateway idle %d KiB, with 1000 keep-alive connections %d KiB; full pipeline idle %d KiB, with 1000 %d KiB\n' \
  "$IDLE_RSS" "$HELD_RSS" "$FULL_IDLE_RSS" "$FULL_HELD_RSS"
printf 'portcullis demo ready in %d ms (target < 1000)\n' "$DEMO_MS"

# Every target of the speed issue, as measured above, in one table.
target() { # NAME VALUE OP BOUND: prints the row, "met" when VALUE OP BOUND holds
  awk -v n="$1" -v v="$2" -v op="$3" -v b="$4" 'BEGIN {
    ok = (op == "<=") ? (v + 0 <= b + 0) : (v + 0 >= b + 0)
    printf "%-58s %9s %3s %-7s %s\n", n, v, op, b, ok ? "met" : "MISSED" }'
}
diff_of() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
printf '\n%-58s %9s %3s %-7s %s\n' "target (issue 16)" measured "" bound ""
target "plain proxy: requests/s vs nginx" "$(ratio "$P_RPS" "$N_RPS")" ">=" 1.0
target "plain proxy: CPU µs/request vs nginx" "$(ratio "$P_CPU" "$N_CPU")" "<=" 1.0
target "plain proxy: p99 vs nginx" "$(ratio "$P_P99" "$N_P99")" "<=" 1.5
target "full pipeline GET: CPU µs/request vs nginx GET" "$(ratio "$F_CPU" "$N_CPU")" "<=" 2.0
target "full pipeline GET: requests/s vs nginx GET" "$(ratio "$F_RPS" "$N_RPS")" ">=" 0.5
target "full pipeline POST: CPU µs/request vs nginx, same POST" "$(ratio "$FP_CPU" "$NP_CPU")" "<=" 2.2
target "decision record, sync: CPU µs/request added" "$(diff_of "$S_CPU" "$O_CPU")" "<=" 2
target "decision record, async: CPU µs/request added" "$(diff_of "$Y_CPU" "$O_CPU")" "<=" 2
target "screen + rate limit (memory, adaptive): CPU µs added" "$(diff_of "$M_CPU" "$P_CPU")" "<=" 2
target "rate limit: redis store requests/s vs memory store" "$(ratio "$R_RPS" "$M_RPS")" ">=" 0.9
target "100,000 tokens through a 16,384 cache: vs haproxy" "$(ratio "$C_RPS" "$H_RPS")" ">=" 1.5
target "full pipeline RSS idle, MiB" "$(mib "$FULL_IDLE_RSS")" "<=" 20
printf '%-58s %9s   (of it private: heap and stacks; the rest is the binary'"'"'s shared code pages)\n' "" "$(mib "$FULL_IDLE_ANON")"
target "full pipeline RSS, 1000 keep-alive connections, MiB" "$(mib "$FULL_HELD_RSS")" "<=" 64
echo "(flat RSS over a 10-minute soak: scripts/soak.sh; allocations and instructions per request: scripts/callgrind.sh)"

# DPoP: its own gateways and ports, after everything above has finished with core 0.
cleanup
trap - EXIT
scripts/bench-dpop.sh "$DURATION"
scripts/bench-protocols.sh "$DURATION"

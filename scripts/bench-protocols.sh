#!/usr/bin/env bash
# WebSocket and gRPC through the gateway against the same traffic sent straight to the
# upstream, in one run. Upstreams (a tokio-tungstenite echo, a tonic unary echo) and the load
# client share core 1; the gateway has core 0. The gateway's route asks for an ES256 token
# (verified at the handshake for WebSocket, on every call for gRPC: cached after the first) and
# a Rego decision. Reports messages or calls per second, p50/p99 and the gateway's CPU µs per
# message or call, and the ratios gateway / direct.
#
# Usage: scripts/bench-protocols.sh [seconds per run, default 10]
# Called by scripts/bench.sh with its own duration. Loopback only; every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WS_CONNS="${BENCH_WS_CONNECTIONS:-32}" WS_BYTES="${BENCH_WS_BYTES:-256}" GRPC_CONCURRENCY="${BENCH_GRPC_CONCURRENCY:-64}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_start openssl
cargo build --release --locked -p portcullis-gateway --example protocol_load >&2
LOAD="$CARGO_TARGET_DIR/release/examples/protocol_load"
GW_PORT=18631

# The echo servers on core 1; each prints its address.
for kind in ws-server grpc-server; do
  taskset -c 1 "$LOAD" "$kind" > "$WORK/$kind.addr" &
  PIDS+=($!)
done
address() { # KIND
  for _ in $(seq 1 200); do
    grep -q listening "$WORK/$1.addr" 2>/dev/null && break
    sleep 0.05
  done
  awk '/listening/ {print $2}' "$WORK/$1.addr"
}
WS_UP=$(address ws-server)
GRPC_UP=$(address grpc-server)

es256_key_and_jwks "$WORK/jwt.pem" bench > "$WORK/jwks.json"
TOKEN=$("$BIN" token --key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m --kid bench)
printf 'package bench\n\nallow := true\n' > "$WORK/allow.rego"
cat > "$WORK/gateway.yaml" <<YAML
listen: { address: 127.0.0.1:$GW_PORT }
admin: { address: 127.0.0.1:0 }
monitoring: { events: { sink: file, path: $WORK/events.log } }
upstreams:
  ws: { url: "http://$WS_UP", timeout: 5s }
  rpc: { url: "http://$GRPC_UP", timeout: 5s, protocol: grpc }
identity:
  jwt:
    - { name: bench, issuer: https://idp.bench, audiences: [bench], jwks_file: $WORK/jwks.json, algorithms: [ES256], max_lifetime: 2h }
policy: { engine: rego, rego: { files: [$WORK/allow.rego], query: data.bench.allow } }
limits: { websocket: { idle_timeout: 60s } }
routes:
  - { match: { path: /ws, methods: [GET] }, upstream: ws, websocket: true }
  - { match: { prefix: /bench.Echo/ }, upstream: rpc }
YAML
taskset -c 0 "$BIN" run --config "$WORK/gateway.yaml" 2>"$WORK/gateway.err" &
GW_PID=$!
PIDS+=($GW_PID)
wait_for_port "$GW_PORT"

# One run: a 2 s warm-up, then the measured run with the gateway's CPU time around it.
# Prints "per_second p50_us p99_us cpu_us_per_message".
run() { # LOAD-ARGS...: KIND URL CONCURRENCY then the rest after the duration
  local kind=$1 url=$2 conc=$3
  shift 3
  taskset -c 1 "$LOAD" "$kind" "$url" "$conc" 2 "$@" >/dev/null
  local before after out
  before=$(cpu_ticks "$GW_PID")
  out=$(taskset -c 1 "$LOAD" "$kind" "$url" "$conc" "$DURATION" "$@")
  after=$(cpu_ticks "$GW_PID")
  [ -n "$out" ] || { echo "bench: the $kind load on $url failed" >&2; exit 1; }
  echo "$out" | awk -v ticks=$((after - before)) -v hz="$TICK" \
    '{ printf "%s %s %s %.2f\n", $1, $2, $3, (ticks / hz) * 1000000 / $4 }'
}

read -r WD_RATE WD_P50 WD_P99 _ <<<"$(run ws "ws://$WS_UP/ws" "$WS_CONNS" "$WS_BYTES")"
read -r WG_RATE WG_P50 WG_P99 WG_CPU <<<"$(run ws "ws://127.0.0.1:$GW_PORT/ws" "$WS_CONNS" "$WS_BYTES" "$TOKEN")"
read -r GD_RATE GD_P50 GD_P99 _ <<<"$(run grpc "http://$GRPC_UP" "$GRPC_CONCURRENCY")"
read -r GG_RATE GG_P50 GG_P99 GG_CPU <<<"$(run grpc "http://127.0.0.1:$GW_PORT" "$GRPC_CONCURRENCY" "$TOKEN")"

printf '\n%-40s %12s %10s %10s %16s\n' "WebSocket echo ($WS_CONNS conns, $WS_BYTES B)" "messages/s" "p50 µs" "p99 µs" "gateway CPU µs/msg"
printf '%-40s %12s %10s %10s %16s\n' "direct to the upstream" "$WD_RATE" "$WD_P50" "$WD_P99" "-"
printf '%-40s %12s %10s %10s %16s\n' "through portcullis" "$WG_RATE" "$WG_P50" "$WG_P99" "$WG_CPU"
printf '%-40s %12s %10s %10s\n' "portcullis / direct" "$(ratio "$WG_RATE" "$WD_RATE")" "$(ratio "$WG_P50" "$WD_P50")" "$(ratio "$WG_P99" "$WD_P99")"
printf '\n%-40s %12s %10s %10s %16s\n' "gRPC unary ($GRPC_CONCURRENCY in flight, 4 conns)" "calls/s" "p50 µs" "p99 µs" "gateway CPU µs/call"
printf '%-40s %12s %10s %10s %16s\n' "direct to the upstream" "$GD_RATE" "$GD_P50" "$GD_P99" "-"
printf '%-40s %12s %10s %10s %16s\n' "through portcullis (JWT + Rego)" "$GG_RATE" "$GG_P50" "$GG_P99" "$GG_CPU"
printf '%-40s %12s %10s %10s\n' "portcullis / direct" "$(ratio "$GG_RATE" "$GD_RATE")" "$(ratio "$GG_P50" "$GD_P50")" "$(ratio "$GG_P99" "$GD_P99")"

#!/usr/bin/env bash
# Instructions and heap allocations per request, counted by callgrind (stable on a noisy
# machine, unlike time): the gateway binary under valgrind serves N requests on one keep-alive
# connection, on the plain proxy route, on the authenticated route (ES256 JWT + Rego policy)
# and through the full pipeline (JWT, adaptive memory rate limit, two-rule Rego policy,
# OpenAPI validation of the query, sync decision log), and the same runs with one request give
# the start-up cost to subtract. Allocations are the calls callgrind counts into the global
# allocator's entry points (mimalloc's mi_malloc_aligned and mi_zalloc_aligned: every Rust
# heap allocation, on every thread; mi_realloc_aligned counted apart), so no counting
# allocator has to be compiled in.
#
# Usage: scripts/callgrind.sh BINARY [BINARY ...]   (N=${N:-400} requests per run)
# MONITORING='...' adds keys under `monitoring:` (one flow-mapping fragment), e.g.
#   MONITORING='detection: { error_spike: {}, enumeration: {} }, traces: { endpoint: "http://127.0.0.1:18701/v1/traces", sample_ratio: 0.1 }'
# (the trace endpoint above is the script's own upstream, which refuses the POST: the spans
# are still built, encoded and sent, which is the cost to measure).
# Loopback only; every run is bounded by N.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
N="${N:-400}"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
UP_PORT=18701 GW_PORT=18702
# The upstream: Python's file server, speaking HTTP/1.1 so the gateway keeps its connection
# (a new upstream connection per request would be most of what is counted).
(cd "$WORK" && exec python3 -c '
import http.server, sys
http.server.SimpleHTTPRequestHandler.protocol_version = "HTTP/1.1"
http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
' "$UP_PORT" >/dev/null 2>&1) &
echo ok > "$WORK/index.html"
echo '{"id":1,"name":"hammer"}' > "$WORK/items"
BIN1=$1
es256_key_and_jwks "$WORK/jwt.pem" k > "$WORK/jwks.json"
TOKEN=$("$BIN1" token --key "$WORK/jwt.pem" --iss https://idp.cg --aud cg --sub alice --ttl 60m --kid k)
printf 'package cg\n\nallow := true\n' > "$WORK/allow.rego"
cat > "$WORK/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$GW_PORT }
monitoring: { events: { sink: file, path: events.log }${MONITORING:+, $MONITORING} }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
identity:
  jwt:
    - { name: cg, issuer: https://idp.cg, audiences: [cg], jwks_file: jwks.json, algorithms: [ES256], max_lifetime: 2h }
policy:
  engine: rego
  rego: { files: [allow.rego], query: data.cg.allow }
routes:
  - match: { prefix: /jwt/ }
    upstream: backend
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
SCOPED=$("$BIN1" token --key "$WORK/jwt.pem" --iss https://idp.cg --aud cg --sub alice --ttl 60m --kid k --scope "items:read items:write")
FULL_MONITORING="${MONITORING:-}" FULL_VALIDATION="unknown_operations: log" \
  full_pipeline "$WORK/full" "$GW_PORT" "$UP_PORT" ../jwks.json https://idp.cg cg

# counts BINARY CONFIG READY_PATH PATH COUNT [curl args]: prints "instructions allocations
# reallocations" of the whole run
counts() {
  local bin=$1 config=$2 ready=$3 path=$4 count=$5; shift 5
  local out="$WORK/cg.out"
  valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" "$bin" run --config "$WORK/$config" 2>/dev/null &
  local pid=$!
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$@" "http://127.0.0.1:$GW_PORT$ready" 2>/dev/null && break
    sleep 0.2
  done
  local urls=()
  for _ in $(seq 1 "$count"); do urls+=("http://127.0.0.1:$GW_PORT$path"); done
  curl -sS "$@" "${urls[@]}" >/dev/null
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '
    /^summary:/ { ir = $2 }
    /^cfn=/ { callee = substr($0, 5) }
    /^calls=/ {
      split(substr($0, 7), c, " ")
      if (callee == "mi_malloc_aligned" || callee == "mi_zalloc_aligned") allocs += c[1]
      else if (callee == "mi_realloc_aligned") reallocs += c[1]
    }
    END { printf "%d %d %d\n", ir, allocs, reallocs }' "$out"
}

# per_request BINARY CONFIG READY_PATH PATH [curl args]: "Ir allocs reallocs" per request, the
# run with one request (start-up, readiness probes) subtracted from the run with N + 1
per_request() {
  local bin=$1 config=$2 ready=$3 path=$4; shift 4
  local b_ir b_al b_re ir al re
  read -r b_ir b_al b_re < <(counts "$bin" "$config" "$ready" "$path" 1 "$@")
  read -r ir al re < <(counts "$bin" "$config" "$ready" "$path" "$((N + 1))" "$@")
  awk -v n="$N" -v a="$((ir - b_ir))" -v b="$((al - b_al))" -v c="$((re - b_re))" \
    'BEGIN { printf "%d %.1f %.1f\n", a / n, b / n, c / n }'
}

printf '%-44s %-20s %12s %10s %10s\n' binary route "Ir/req" "allocs/req" "reallocs"
for bin in "$@"; do
  for run in plain jwt full; do
    case $run in
      plain) args=(portcullis.yaml /index.html /index.html) ;;
      jwt) args=(portcullis.yaml /index.html /jwt/index.html -H "authorization: Bearer $TOKEN") ;;
      full) args=(full/portcullis.yaml "/items?limit=10" "/items?limit=10" -H "authorization: Bearer $SCOPED") ;;
    esac
    read -r ir al re < <(per_request "$bin" "${args[@]}")
    case $run in
      plain) label="plain proxy" ;;
      jwt) label="ES256 JWT + Rego" ;;
      full) label="full pipeline GET" ;;
    esac
    printf '%-44s %-20s %12d %10s %10s\n' "$bin" "$label" "$ir" "$al" "$re"
  done
done

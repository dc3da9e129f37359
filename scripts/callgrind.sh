#!/usr/bin/env bash
# Instructions per request, counted by callgrind (stable on a noisy machine, unlike time):
# the gateway binary under valgrind serves N requests on one keep-alive connection, once on
# the plain proxy route and once on the authenticated route (ES256 JWT + Rego policy), and
# the same runs with no request give the start-up cost to subtract.
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
python3 -m http.server "$UP_PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
echo ok > "$WORK/index.html"
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

# total_instructions BINARY PATH COUNT [curl args]
total_instructions() {
  local bin=$1 path=$2 count=$3; shift 3
  local out="$WORK/cg.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run --config "$WORK/portcullis.yaml" 2>/dev/null &
  local pid=$!
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/index.html" 2>/dev/null && break
    sleep 0.2
  done
  if [ "$count" -gt 0 ]; then
    local urls=()
    for _ in $(seq 1 "$count"); do urls+=("http://127.0.0.1:$GW_PORT$path"); done
    curl -sS "$@" "${urls[@]}" >/dev/null
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$out"
}

printf '%-40s %14s %14s\n' binary "plain Ir/req" "jwt+rego Ir/req"
for bin in "$@"; do
  base=$(total_instructions "$bin" /index.html 1)
  plain=$(total_instructions "$bin" /index.html "$((N + 1))")
  jwt=$(total_instructions "$bin" /jwt/index.html "$((N + 1))" -H "authorization: Bearer $TOKEN")
  printf '%-40s %14d %14d\n' "$bin" "$(( (plain - base) / N ))" "$(( (jwt - base) / N ))"
done

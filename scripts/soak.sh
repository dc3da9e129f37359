#!/usr/bin/env bash
# Memory soak: the full pipeline (JWT from a JWKS file, adaptive memory rate limit, a two-rule
# Rego policy, OpenAPI validation, sync decision log, events to a file) under bounded wrk load
# for SECONDS, GETs and 1 KB POSTs alternating, each with one of 100,000 distinct tokens
# cycling through the 16,384-entry token cache. The gateway's RSS is sampled every 10 s.
#
# "Flat" (issue #16): the highest RSS of the second half of the run is within 5% of the RSS
# at one fifth of the run (once caches and pools have reached their working size), and the
# second half's least-squares slope is printed in KiB per minute.
#
# Usage: scripts/soak.sh [seconds, default 600]
# Loopback only; the load is bounded by SECONDS. Gateway on core 0, wrk and upstream on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL="${1:-600}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_start nginx-light wrk openssl
UP_PORT=18631 GW_PORT=18632

es256_key_and_jwks "$WORK/jwt.pem" bench > "$WORK/jwks.json"
"$BIN" token --key "$WORK/jwt.pem" --iss https://idp.bench --aud bench --sub alice --ttl 60m \
  --kid bench --scope "items:read items:write" --count 100000 > "$WORK/tokens.txt"
cp crates/portcullis/benches/data/twenty-properties-body.json "$WORK/"
full_pipeline "$WORK" "$GW_PORT" "$UP_PORT" jwks.json https://idp.bench bench
cat > "$WORK/soak.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local f = assert(io.open(os.getenv("BODY"), "rb"))
local body = f:read("*a")
f:close()
local i = 0
request = function()
  i = i % #tokens + 1
  local auth = "Bearer " .. tokens[i]
  if i % 2 == 0 then
    return wrk.format("POST", "/items", { ["Authorization"] = auth, ["Content-Type"] = "application/json" }, body)
  end
  return wrk.format("GET", "/items?limit=10", { ["Authorization"] = auth })
end
LUA

start_upstream "$UP_PORT"
taskset -c 0 "$BIN" run --config "$WORK/portcullis.yaml" 2>"$WORK/gateway.err" &
GW_PID=$!
PIDS+=($GW_PID)
wait_for_port "$GW_PORT"
wait_for "http://127.0.0.1:$UP_PORT/"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $(head -1 "$WORK/tokens.txt")" "http://127.0.0.1:$GW_PORT/items?limit=10")
[ "$code" = 200 ] || { echo "soak: the gateway refused a scoped GET ($code)" >&2; exit 1; }

echo "soak: ${SECONDS_TOTAL}s of load; idle RSS $(rss_kib "$GW_PID") KiB"
TOKENS="$WORK/tokens.txt" BODY="$WORK/twenty-properties-body.json" \
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECONDS_TOTAL}s" -s "$WORK/soak.lua" "http://127.0.0.1:$GW_PORT/" > "$WORK/wrk.out" &
WRK_PID=$!
START=$(date +%s)
: > "$WORK/rss.samples"
while kill -0 "$WRK_PID" 2>/dev/null; do
  sleep 10 # a sampling period, not a synchronisation
  kill -0 "$WRK_PID" 2>/dev/null || break
  echo "$(( $(date +%s) - START )) $(rss_kib "$GW_PID")" | tee -a "$WORK/rss.samples"
done
wait "$WRK_PID"
grep -E "requests in|Non-2xx" "$WORK/wrk.out" || true
awk -v total="$SECONDS_TOTAL" '
  { t[NR] = $1; r[NR] = $2 }
  END {
    if (NR < 4) { print "soak: too few samples"; exit 1 }
    warm = r[1]
    for (i = 1; i <= NR; i++) if (t[i] <= total / 5) warm = r[i]
    max = 0; n = 0; sx = 0; sy = 0; sxx = 0; sxy = 0
    for (i = 1; i <= NR; i++) if (t[i] > total / 2) {
      if (r[i] > max) max = r[i]
      n++; sx += t[i]; sy += r[i]; sxx += t[i] * t[i]; sxy += t[i] * r[i]
    }
    slope = (n > 1 && n * sxx - sx * sx != 0) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) * 60 : 0
    printf "soak: RSS at one fifth %d KiB, highest in the second half %d KiB (%.3fx, target <= 1.05: %s), second-half slope %.1f KiB/min, last %d KiB\n",
      warm, max, max / warm, (max <= warm * 1.05) ? "met" : "MISSED", slope, r[NR]
  }' "$WORK/rss.samples"

#!/usr/bin/env bash
# Whole-gateway benchmark: Portcullis (plain proxy route, no auth) and nginx (proxy_pass with
# upstream keep-alive, one worker) in front of the same upstream, in one run. Each proxy is
# pinned to core 0; wrk and the upstream share core 1. Reports requests/s, p50/p99 latency and
# proxy CPU time per request, and Portcullis's figures as ratios of nginx's (same machine, same
# minute, so the ratios mean more than the absolute numbers). Also: idle RSS, RSS with 1,000
# open keep-alive connections, and how long `portcullis demo` takes to become ready.
#
# Usage: scripts/bench.sh [seconds per run, default 10]
# Loopback only; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${BENCH_CONNECTIONS:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"

scripts/install-deps.sh nginx-light wrk >/dev/null
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --locked -p portcullis-gateway >&2
BIN="$CARGO_TARGET_DIR/release/portcullis"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UP_PORT=18601 NGINX_PORT=18602 PC_PORT=18603 DEMO_PORT=18604 DEMO_ADMIN=18605

# The upstream: nginx answering a small JSON body from memory, one worker on core 1.
cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{"id":1,"name":"hammer"}'; }
  }
}
CONF
taskset -c 1 "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)

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

cat > "$WORK/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$PC_PORT }
monitoring: { events: { sink: file, path: events.log } }
upstreams:
  backend: { url: "http://127.0.0.1:$UP_PORT", timeout: 10s }
routes:
  - match: { prefix: / }
    upstream: backend
    auth: none
CONF
taskset -c 0 "$BIN" run --config "$WORK/portcullis.yaml" 2>"$WORK/portcullis.err" &
PC_PID=$!
PIDS+=($PC_PID)

wait_for() { # URL
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: $1 never answered" >&2
  exit 1
}
wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$NGINX_PORT/"
wait_for "http://127.0.0.1:$PC_PORT/"
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

IDLE_RSS=$(rss_kib "$PC_PID")

# One measured run: prints "rps p50_us p99_us cpu_us_per_request".
measure() { # URL PID
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "$1" >/dev/null # warm-up
  local before after out
  before=$(cpu_ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$1")
  after=$(cpu_ticks "$2")
  echo "$out" | awk -v ticks=$((after - before)) -v hz="$TICK" '
    function us(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
      return v
    }
    /^ +50%/ { p50 = us($2) }
    /^ +99%/ { p99 = us($2) }
    /requests in/ { total = $1 }
    /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.0f %.0f %.2f\n", rps, p50, p99, (ticks / hz) * 1000000 / total }'
}

read -r N_RPS N_P50 N_P99 N_CPU < <(measure "http://127.0.0.1:$NGINX_PORT/api/items" "$NGINX_WORKER")
read -r P_RPS P_P50 P_P99 P_CPU < <(measure "http://127.0.0.1:$PC_PORT/api/items" "$PC_PID")

# RSS with 1,000 open keep-alive connections, each having made one request.
HELD_RSS=$(python3 - "$PC_PORT" "$PC_PID" <<'PY'
import asyncio, sys
port, pid = int(sys.argv[1]), sys.argv[2]
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /api/items HTTP/1.1\r\nHost: bench\r\n\r\n")
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
)

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

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
printf '\n%-22s %12s %10s %10s %14s\n' "plain proxy ($CONNS conns)" "requests/s" "p50 µs" "p99 µs" "CPU µs/req"
printf '%-22s %12s %10s %10s %14s\n' "nginx" "$N_RPS" "$N_P50" "$N_P99" "$N_CPU"
printf '%-22s %12s %10s %10s %14s\n' "portcullis" "$P_RPS" "$P_P50" "$P_P99" "$P_CPU"
printf '%-22s %12s %10s %10s %14s\n' "portcullis / nginx" "$(ratio "$P_RPS" "$N_RPS")" "$(ratio "$P_P50" "$N_P50")" "$(ratio "$P_P99" "$N_P99")" "$(ratio "$P_CPU" "$N_CPU")"
printf '\nportcullis RSS: idle %d KiB, with 1000 keep-alive connections %d KiB\n' "$IDLE_RSS" "$HELD_RSS"
printf 'portcullis demo ready in %d ms\n' "$DEMO_MS"
echo "targets: throughput >= 0.90x nginx, CPU/request <= 1.20x nginx, idle RSS <= 20 MiB, 1000-conn RSS <= 64 MiB, demo < 1000 ms"

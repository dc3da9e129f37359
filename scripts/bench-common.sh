# Helpers shared by the benchmark scripts (sourced from the repository root, not run). The
# caller sets DURATION; bench_start sets up everything else the load helpers need.

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TICK=$(getconf CLK_TCK)
CONNS="${BENCH_CONNECTIONS:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"

# Installs the given packages when missing, builds the release gateway (BIN) and makes WORK
# and PIDS, both cleaned up on exit.
bench_start() { # PACKAGE...
  scripts/install-deps.sh "$@" >/dev/null
  cargo build --release --locked -p portcullis-gateway >&2
  BIN="$CARGO_TARGET_DIR/release/portcullis"
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# A new ES256 key in PEM (PKCS#8) at KEY_FILE, and its public JWKS (one key, `kid` KID) on
# stdout.
es256_key_and_jwks() { # KEY_FILE KID
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$1"
  openssl ec -in "$1" -pubout -outform DER 2>/dev/null | KID="$2" python3 -c '
import base64, json, os, sys
point = sys.stdin.buffer.read()[-65:]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": os.environ["KID"], "alg": "ES256",
                            "use": "sig", "x": b64(point[1:33]), "y": b64(point[33:])}]}))'
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# The private part of the RSS (heap, stacks; not the binary's shared, clean code pages).
anon_kib() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

# The upstream: nginx answering a small JSON body from memory, one worker on core 1.
start_upstream() { # PORT
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
    listen 127.0.0.1:$1;
    location / { default_type application/json; return 200 '{"id":1,"name":"hammer"}'; }
  }
}
CONF
  taskset -c 1 "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" &
  PIDS+=($!)
}

wait_for() { # URL
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: $1 never answered" >&2
  exit 1
}

wait_for_port() { # PORT: until something accepts on 127.0.0.1:PORT (a listener that answers
  # every unauthenticated request with 401 cannot be awaited with wait_for)
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  exit 1
}

# One measured run: prints "rps p50_us p99_us cpu_us_per_request". Extra wrk arguments
# (a header, a script) follow the URL and PID. wrk sees BENCH_PHASE=warmup during the 2 s
# warm-up and BENCH_PHASE=measured during the run, so a script can stream different requests
# in each. Answers that are not 2xx/3xx are reported on stderr: the figures would not be
# those of the route under test. The measured run's request count is left in
# $WORK/measured.requests; when MEASURE_COUNTER names a command printing a number, its growth
# over the measured run alone is left in $WORK/measured.counter.
measure() { # URL PID [wrk args...]
  local url=$1 pid=$2
  shift 2
  BENCH_PHASE=warmup taskset -c 1 wrk -t1 -c"$CONNS" -d2s "$@" "$url" >/dev/null
  local before after out counted=0
  [ -n "${MEASURE_COUNTER:-}" ] && counted=$($MEASURE_COUNTER)
  before=$(cpu_ticks "$pid")
  out=$(BENCH_PHASE=measured taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  [ -n "${MEASURE_COUNTER:-}" ] && echo $(($($MEASURE_COUNTER) - counted)) > "$WORK/measured.counter"
  echo "$out" | awk '/requests in/ {print $1}' > "$WORK/measured.requests"
  if echo "$out" | grep -q 'Non-2xx or 3xx'; then
    echo "bench: $url: $(echo "$out" | grep 'Non-2xx or 3xx' | tr -s ' ') of $(echo "$out" | awk '/requests in/ {print $1}')" >&2
  fi
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

# The full pipeline of the speed issue, written into DIR: a two-rule Rego policy, the
# 20-property OpenAPI document, and DIR/portcullis.yaml listening on 127.0.0.1:PORT in front
# of 127.0.0.1:UPSTREAM_PORT: JWT (issuer ISS, audience AUD, keys from the JWKS file JWKS,
# as a path from DIR), an adaptive memory rate limit, the policy, OpenAPI validation, a sync
# decision log and events to a file. FULL_MONITORING adds keys under `monitoring:` and
# FULL_VALIDATION under `validation:` (flow-mapping fragments).
full_pipeline() { # DIR PORT UPSTREAM_PORT JWKS ISS AUD
  local dir=$1 port=$2 upstream=$3 jwks=$4 iss=$5 aud=$6
  mkdir -p "$dir"
  cp "$(dirname "${BASH_SOURCE[0]}")/../crates/portcullis/benches/data/twenty-properties.json" "$dir/"
  cat > "$dir/full.rego" <<'REGO'
package bench.full

import rego.v1

default allow := false

allow if {
	input.request.method == "GET"
	"items:read" in input.user.scopes
}

allow if {
	input.request.method == "POST"
	"items:write" in input.user.scopes
}
REGO
  cat > "$dir/portcullis.yaml" <<CONF
listen: { address: 127.0.0.1:$port }
monitoring: { events: { sink: file, path: events.log }${FULL_MONITORING:+, $FULL_MONITORING} }
upstreams:
  backend: { url: "http://127.0.0.1:$upstream", timeout: 10s }
identity:
  jwt:
    - { name: bench, issuer: "$iss", audiences: [$aud], jwks_file: $jwks, algorithms: [ES256], max_lifetime: 2h }
policy:
  engine: rego
  rego: { files: [full.rego], query: data.bench.full.allow }
  decision_log: { path: decisions.log, durability: sync }
rate_limit:
  store: memory
  adaptive: { enabled: true, block_score: 101 }
  default: { limit: 1000000000, window: 1s, key: principal_or_ip }
validation: { openapi: twenty-properties.json${FULL_VALIDATION:+, $FULL_VALIDATION} }
routes:
  - match: { prefix: / }
    upstream: backend
CONF
}

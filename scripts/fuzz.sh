#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, with seed corpora taken from the case
# files, and prints executions and crashes per target. Not part of the test command.
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz; installs
# cargo-fuzz when missing. Crashes land in fuzz/artifacts/<target>/: turn each into a case in
# tests/cases/ before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(normalize_path jwt_parse json_guard framing_split openapi_load)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}/fuzz"

# Seeds: the inputs the case files already name.
python3 - <<'PY'
import json, os, re, base64
root = "fuzz/corpus"
def seed(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
for i, line in enumerate(open("tests/cases/normalize/paths.yaml")):
    m = re.search(r'path: ("[^"]*"|[^,}]+)', line)
    if m:
        seed("normalize_path", f"case{i}", m.group(1).strip().strip('"').split("?")[0])
b64 = lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
for i, header in enumerate([{"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, {"alg": "none"},
                            {"alg": "HS256"}, {"alg": "ES256", "crit": ["x"]}, {"alg": "ES256", "jwk": {}}]):
    seed("jwt_parse", f"token{i}", f"{b64(header)}.{b64({'sub': 'a', 'exp': 1, 'aud': ['x']})}.AAAA")
for i, line in enumerate(open("tests/cases/validation/requests.yaml")):
    m = re.search(r"body: '(.*)'\s*$", line)
    if m:
        seed("json_guard", f"body{i}", m.group(1))
seed("json_guard", "dup", '{"a":1,"a":2}')
for i, raw in enumerate([
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        b"POST /c HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\r\n\r\n",
        b"GET /a#x HTTP/1.1\r\nX A: 1\r\n folded\r\n\r\n"]):
    seed("framing_split", f"raw{i}", bytes([i * 37 % 256]) + raw)
for path in ["tests/cases/validation/api.yaml", "examples/openapi/items.yaml"]:
    seed("openapi_load", os.path.basename(path), open(path, "rb").read())
PY

cd fuzz
printf '\n%-16s %14s %10s\n' target executions crashes
for target in "${TARGETS[@]}"; do
  log=$(mktemp)
  # -max_len keeps inputs in the range the gateway's own bounds allow anyway.
  cargo +nightly fuzz run "$target" --sanitizer none "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || true
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(ls "artifacts/$target" 2>/dev/null | wc -l)
  printf '%-16s %14s %10s\n' "$target" "${runs:-?}" "$crashes"
  if grep -q "panicked\|ERROR: libFuzzer" "$log"; then
    grep -m5 "panicked\|ERROR: libFuzzer" "$log" >&2
  fi
  rm -f "$log"
done

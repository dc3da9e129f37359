#!/usr/bin/env bash
# Installs the system packages the test suite needs, when they are missing. Safe to rerun.
# Usage: scripts/install-deps.sh [extra-package ...]
set -euo pipefail

missing=()
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

# Real peers the tests talk to; extra packages come from the arguments.
need curl curl
need redis-server redis-server
need node nodejs
need npm npm
need python3 python3
need chromium chromium
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

# npm packages of the test peers, pinned by tests/peers/package-lock.json.
peers="$(dirname "$0")/../tests/peers"
if [ ! -d "$peers/node_modules/oidc-provider" ] || [ ! -d "$peers/node_modules/playwright-core" ] || [ "$peers/package-lock.json" -nt "$peers/node_modules/.package-lock.json" ]; then
  echo "installing test peers (npm ci in tests/peers)" >&2
  (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# Python packages of the test peers (the real OPA engine, the schemathesis fuzzer), pinned by requirements.txt and
# installed beside them, not into the system.
if [ ! -d "$peers/python/opa_bindings" ] || [ ! -d "$peers/python/schemathesis" ] || [ "$peers/requirements.txt" -nt "$peers/python" ]; then
  echo "installing test peers (pip into tests/peers/python)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
    --target "$peers/python" --upgrade -r "$peers/requirements.txt"
  touch "$peers/python"
fi

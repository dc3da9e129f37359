#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, unit and
# integration tests. This is the command the README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/install-deps.sh
cargo fmt --all --check
# No module may import another that imports it back.
scripts/import-cycles.py crates/portcullis/src
scripts/import-cycles.py crates/gateway/src
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace

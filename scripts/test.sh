#!/usr/bin/env bash
# Every test: formatting, lints, and the Rust test suites (unit, integration over loopback
# sockets, property tests, doc tests). Fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== Node package (napi build, tsc --strict, vitest)"
bash scripts/test-node.sh

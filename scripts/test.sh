#!/usr/bin/env bash
# Every test: formatting, lints, and the Rust test suites (unit, integration over loopback
# sockets, property tests, doc tests). Fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
# Every cargo feature on (alknet-endpoint's `iroh`), so the iroh tests run; the endpoint is also
# linted without it, since the feature gates code.
echo "== cargo clippy --all-targets --all-features -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo clippy -p alknet-endpoint --all-targets -D warnings (no features)"
cargo clippy -p alknet-endpoint --all-targets -- -D warnings
echo "== cargo test --all-features"
cargo test --workspace --all-features
echo "== Node package (napi build, tsc --strict, vitest)"
bash scripts/test-node.sh

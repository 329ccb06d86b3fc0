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
# The SSH interop tests drive OpenSSH's client and server and curl; install them where missing
# (CI runs as root). Installing openssh-server starts no daemon here: the test runs its own sshd.
if ! { command -v ssh && command -v curl && [ -x /usr/sbin/sshd ]; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== apt-get install openssh-client openssh-server curl (for the SSH interop tests)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client openssh-server curl >/dev/null
fi
echo "== cargo test --all-features"
cargo test --workspace --all-features
echo "== Node package (napi build, tsc --strict, vitest)"
bash scripts/test-node.sh

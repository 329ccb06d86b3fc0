#!/usr/bin/env bash
# The Node.js package: install (from the lock file), build the native binding (debug) and the
# TypeScript layer (strict) and the browser client bundle, type-check the tests, build the Rust
# interop example, then the vitest suite over real loopback sockets (including `npm pack` installed
# into a scratch project, and the browser client in Debian's Chromium, installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== npm install"
if [ -f package-lock.json ]; then
  # The registry mirror this project's machines reach lacks the other platforms' optional
  # binaries of @napi-rs/cli's tools, so the lock file cannot list them and `npm ci` refuses it;
  # `npm install` then installs the same locked versions.
  npm ci --no-audit --no-fund || {
    echo "npm ci refused the lock file; installing the locked versions with npm install" >&2
    npm install --no-audit --no-fund
  }
else
  npm install --no-audit --no-fund
fi
echo "== chromium (the browser of __test__/browser.test.ts)"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "chromium is not installed and this is not root: apt-get install -y chromium (the browser tests skip without it, and fail under CI=true)" >&2
  fi
fi
echo "== napi build --platform"
npx napi build --platform --manifest-path crates/alknet-napi/Cargo.toml --package-json-path package.json --output-dir .
echo "== tsc -p tsconfig.json (strict)"
npx tsc -p tsconfig.json
echo "== the browser client bundle (esbuild → dist/client.browser.mjs)"
node scripts/build-client.mjs
echo "== published types: no any, TSDoc on every export"
node scripts/check-dts.mjs
echo "== tsc -p tsconfig.test.json (the tests, strict, no emit)"
npx tsc -p tsconfig.test.json
echo "== cargo build --example interop (the Rust node of __test__/interop.test.ts)"
cargo build -q -p alknet-node --example interop
echo "== cargo build --example relay (the loopback iroh relay of __test__/iroh.test.ts)"
cargo build -q -p alknet-endpoint --features relay --example relay
echo "== vitest run"
npx vitest run

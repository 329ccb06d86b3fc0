#!/usr/bin/env bash
# npm run demo: install, build the native binding and the TypeScript layer, then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/@napi-rs/cli ] || npm install --no-audit --no-fund
echo "building the native binding (the first time takes a few minutes)…"
npx napi build --platform --manifest-path crates/alknet-napi/Cargo.toml --package-json-path package.json --output-dir . >/dev/null
npx tsc -p tsconfig.json
exec node examples/demo.mjs

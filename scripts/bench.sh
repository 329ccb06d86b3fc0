#!/usr/bin/env bash
# `npm run bench`: the Rust benches (endpoint, call protocol, NATS fan-out, idle memory, tunnels), then the
# Node package's benchmark
# (@alkdev/alknet JS→JS vs @grpc/grpc-js vs ws) against a release build of the binding.
# ALKNET_BENCH_NODE_ONLY=1 skips the Rust benches; ALKNET_BENCH_QUICK=1 makes every part short.
set -euo pipefail
cd "$(dirname "$0")/.."

# The NATS rows (the Rust fan-out and the Node package's nats.js columns) start a real nats-server.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install nats-server"
    apt-get install -y -q nats-server >/dev/null
  else
    echo "the NATS rows need nats-server (Debian: nats-server); they are skipped without it"
  fi
fi

if [ "${ALKNET_BENCH_NODE_ONLY:-}" != 1 ]; then
  echo "== cargo bench -p alknet-endpoint --features relay --bench endpoint (quinn and iroh)"
  cargo bench -p alknet-endpoint --features relay --bench endpoint
  echo "== cargo run --release -p alknet-call-bench"
  cargo run -q --release -p alknet-call-bench
  echo "== cargo run --release -p alknet-node --example nats_fanout (pub/sub through a NATS backplane)"
  cargo run -q --release -p alknet-node --example nats_fanout
  echo "== cargo run --release -p alknet --example idle_rss (an idle node's memory, per idle connection)"
  cargo build -q --release -p alknet --bin alknet --example idle_rss
  cargo run -q --release -p alknet --example idle_rss
  echo "== cargo run --release -p alknet-node --example tunnel_bench (SOCKS5: ssh -D vs alknet SSH and the native tunnel)"
  if ! command -v curl >/dev/null || ! command -v ssh >/dev/null || [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -q curl openssh-client openssh-server >/dev/null
    else
      echo "tunnel_bench needs curl, ssh and /usr/sbin/sshd (Debian: curl openssh-client openssh-server)"
      exit 1
    fi
  fi
  cargo run -q --release -p alknet-node --example tunnel_bench ${ALKNET_BENCH_QUICK:+64}
fi

if [ ! -d node_modules/@napi-rs/cli ] || [ ! -d node_modules/@grpc/grpc-js ] || [ ! -d node_modules/ws ]; then
  echo "== npm install"
  npm install --no-audit --no-fund
fi
echo "== napi build --platform --release"
npx napi build --platform --release --manifest-path crates/alknet-napi/Cargo.toml --package-json-path package.json --output-dir .
echo "== tsc -p tsconfig.json"
npx tsc -p tsconfig.json
echo "== node --expose-gc bench/node-bench.mjs"
node --expose-gc bench/node-bench.mjs

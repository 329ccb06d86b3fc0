#!/usr/bin/env bash
# Checks that the workspace (the engine, the CLI and the Node addon) compiles for Windows.
# package.json lists x86_64-pc-windows-msvc as a napi target; this machine has no MSVC, so it
# type-checks for x86_64-pc-windows-gnu instead, which has the same `cfg(windows)` code paths.
# Needs rustup's Windows std (downloaded by `rustup target add`) and MinGW's gcc, which ring's
# build script compiles with; napi's build script wants a libnode.dll only to link, which
# `cargo check` never does, so an empty one stands in.
# Not part of `npm test`: the Windows std comes from outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
  else
    echo "check-windows: needs x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64)" >&2
    exit 1
  fi
fi
stand_in=$(mktemp -d)
trap 'rm -rf "$stand_in"' EXIT
touch "$stand_in/libnode.dll"
LIBNODE_PATH="$stand_in" cargo check --workspace --target "$target"
echo "check-windows: the workspace compiles for $target"

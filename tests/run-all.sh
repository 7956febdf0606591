#!/usr/bin/env bash
# Runs every test sylkgw has, on a Debian machine with a Rust toolchain, installing with apt-get
# whatever the tests need and the machine lacks. `.ci/run` calls exactly this.
#
# Steps: formatting, build (debug binaries are what the behavioural tests start), clippy with
# warnings as errors, then `cargo test` for the whole workspace: unit tests, capture replays,
# fuzz corpora, and the behavioural suite against both binaries over real sockets on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo build"
cargo build --workspace --all-targets --locked
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

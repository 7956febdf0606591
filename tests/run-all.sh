#!/usr/bin/env bash
# Runs every test sylkgw has, on a Debian machine with a Rust toolchain, installing with apt-get
# whatever the tests need and the machine lacks. `.ci/run` calls exactly this.
#
# Steps: formatting, build (debug binaries are what the behavioural tests start), clippy with
# warnings as errors, then `cargo test` for the whole workspace: unit tests, capture replays,
# fuzz corpora, the behavioural suite against both binaries over real sockets on loopback, and
# the end-to-end tests against real SIP peers (kamailio, sipp, baresip) and the web phone in headless
# Chromium, each in its own network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
# End-to-end tests (tests/tests/e2e_*.rs): real SIP peers inside private network namespaces
# (root, `unshare -n`, `ip link set lo up`). Root's sbin dirs are not always in PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have kamailio || missing+=(kamailio)
have sipp || missing+=(sip-tester)
# Calls with media (tests/tests/e2e_calls.rs): baresip as a far end that plays and records audio.
# baresip-core holds the binary and every module used (g711, aufile, sndfile, alsa with its null
# PCM, ctrl_tcp); the `baresip` package only adds GUI/video recommends.
have baresip || missing+=(baresip-core)
# RFC 3263 (tests/tests/e2e_dns.rs): dnsmasq publishes NAPTR/SRV records inside the namespace;
# dnsmasq-base is Debian's dnsmasq binary without the system service (the test starts its own).
have dnsmasq || missing+=(dnsmasq-base)
have ip || missing+=(iproute2)
have unshare || missing+=(util-linux)
# The built-in web phone's tests (tests/tests/web_phone.rs) drive headless Chromium.
[ -x /usr/lib/chromium/chromium ] || have chromium || missing+=(chromium)
# The storage tests (core/storage) start a real PostgreSQL server: initdb and postgres from
# Debian's package, run as its `postgres` user, on a Unix socket in a temporary directory.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# Metrics (tests/tests/e2e_metrics.rs): `promtool check metrics` and a real Prometheus scraping.
have promtool || missing+=(prometheus)
# Reverse proxies in front of the gateway (tests/tests/e2e_proxies.rs): HAProxy and nginx.
have haproxy || missing+=(haproxy)
have nginx || missing+=(nginx-light)
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
cargo test --workspace --locked --no-fail-fast

#!/bin/bash
# Idle footprint of the gateway binaries (issue #14): VmRSS, its anonymous and file-backed parts,
# threads and open fds of a freshly started, idle process, for sylkgw-mio, sylkgw --threads 1 and
# sylkgw --threads 2, ROUNDS times each (alternating).
#
#   bash tests/idle-footprint.sh [BIN_DIR] [ROUNDS]      # BIN_DIR default target/release, ROUNDS 3
#   TOP=15 bash tests/idle-footprint.sh ...              # also the 15 largest mappings by Rss
#
# Each process runs in its own network namespace (only `lo`), with a temporary data directory,
# and is stopped by its PID. Needs root (or unprivileged user namespaces) and `unshare`.
set -euo pipefail
BIN_DIR=${1:-target/release}
ROUNDS=${2:-3}
BIN_DIR=$(cd "$BIN_DIR" && pwd)
echo "# $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), binaries in $BIN_DIR"
printf '%-20s %9s %9s %9s %8s %5s\n' target "VmRSS KiB" "anon KiB" "file KiB" threads fds
for _ in $(seq "$ROUNDS"); do
    for target in "sylkgw-mio" "sylkgw --threads 1" "sylkgw --threads 2"; do
        read -r bin extra <<<"$target"
        dir=$(mktemp -d)
        unshare -n bash -s "$BIN_DIR/$bin" "$dir" "$target" ${extra:+$extra} <<'EOF'
set -u
bin=$1 dir=$2 name=$3; shift 3
ip link set lo up
"$bin" --listen 127.0.0.1:10888 --sip-listen 127.0.0.1:5080 --data-dir "$dir" "$@" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/log" && break; sleep 0.05; done
sleep 1 # idle
field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
printf '%-20s %9s %9s %9s %8s %5s\n' "$name" "$(field VmRSS)" "$(field RssAnon)" "$(field RssFile)" \
    "$(field Threads)" "$(ls "/proc/$pid/fd" | wc -l)"
if [ -n "${TOP:-}" ]; then
    awk '/^[0-9a-f]+-[0-9a-f]+ /{ m = $2 " " ($6 == "" ? "[anon]" : $6) } /^Rss:/{ if ($2 > 0) print "    " $2 " KiB " m }' \
        "/proc/$pid/smaps" | sort -rn | head -"$TOP"
fi
kill "$pid"
wait "$pid" || true
EOF
        rm -rf "$dir"
    done
done

#!/usr/bin/env bash
# Runs a fuzzing campaign on the stable toolchain: every target (or the ones named) for RUNS
# executions each, JOBS targets at a time, and prints how many executions each ran and whether it
# found a crash. New inputs go to $WORK/corpus/<target> (the committed seeds in corpus/<target>
# are read, never written); crashes land in $WORK/artifacts/<target>/.
#
#   fuzz/campaign.sh                      # all targets, 10M executions each
#   RUNS=1000000 JOBS=2 fuzz/campaign.sh sip_message gateway_ops
#
# Builds with `cargo fuzz build --release --sanitizer none` (the core is safe Rust; the sanitizer
# would only halve the speed). Needs `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
JOBS=${JOBS:-1}
WORK=${WORK:-/tmp/sylkgw-fuzz}
TARGET_DIR=${TARGET_DIR:-$WORK/target}
mkdir -p "$WORK"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^sylkgw-fuzz$')

RUSTC_BOOTSTRAP=1 cargo fuzz build --release --sanitizer none --target-dir "$TARGET_DIR"
bin_dir=$(dirname "$(find "$TARGET_DIR" -path '*/release/sip_message' -type f | head -1)")

run_one() {
    local t=$1 log="$WORK/$1.log"
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    local status=ok
    "$bin_dir/$t" "$WORK/corpus/$t" "corpus/$t" -runs="$RUNS" -print_final_stats=1 \
        -artifact_prefix="$WORK/artifacts/$t/" >"$log" 2>&1 || status=CRASH
    local execs secs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/.*DONE.*exec\/s: \([0-9]*\).*/\1/p' "$log" | tail -1)
    printf '%-16s %-6s executions=%s exec/s=%s log=%s\n' "$t" "$status" "${execs:-?}" "${secs:-?}" "$log"
}

running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

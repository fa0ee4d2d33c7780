#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ with libFuzzer, on the stable toolchain:
# the targets are built with LLVM's SanitizerCoverage passes (the flags cargo-fuzz passes,
# without its sanitizer, which needs nightly) and run each for SECONDS (default 20), starting
# from the committed corpus in fuzz/corpus/TARGET. New inputs are written to a scratch copy of
# the corpus, not to the repository; a crash leaves its input in fuzz/artifacts/TARGET/ and
# fails the run. Prints executions per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   MERGE=1 scripts/fuzz.sh 600 frame_pipeline   # then fold what was found into fuzz/corpus
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_pipeline vxlan_receive lacp control_request topology netlink_reply socket_stream vhost_descriptors)
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation off build scripts and proc macros.
cargo build --release --manifest-path fuzz/Cargo.toml --target "$triple" --bins
# cargo puts the binaries under CARGO_TARGET_DIR when it is set.
bin=${CARGO_TARGET_DIR:-fuzz/target}/$triple/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "$work/$t"
  cp -r "fuzz/corpus/$t/." "$work/$t/" 2>/dev/null || true
  log="$work/$t.log"
  set +e
  "$bin/$t" "$work/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=70000 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz $t: ${runs:-?} executions in ${seconds}s, exit $rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 || tail -30 "$log"
  fi
  if [ "${MERGE:-0}" = 1 ]; then
    "$bin/$t" -merge=1 "fuzz/corpus/$t" "$work/$t" >/dev/null 2>&1 || true
  fi
done
exit $status

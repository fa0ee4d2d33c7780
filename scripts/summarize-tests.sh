#!/usr/bin/env bash
# Passes `cargo test` output through unchanged and ends it with one line of totals over every
# test binary, e.g. `tests: 812 passed, 0 failed, 9 ignored (41 test binaries)`.
# Usage: cargo test --workspace --no-fail-fast 2>&1 | scripts/summarize-tests.sh
# Exits 0; the exit status that matters is cargo's (use `set -o pipefail`).
exec awk '
  { print; fflush() }
  /^test result:/ {
    binaries++
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^passed;?$/) p += $(i-1)
      if ($i ~ /^failed;?$/) f += $(i-1)
      if ($i ~ /^ignored;?$/) g += $(i-1)
    }
  }
  END { printf "tests: %d passed, %d failed, %d ignored (%d test binaries)\n", p, f, g, binaries }
'

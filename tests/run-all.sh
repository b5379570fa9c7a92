#!/usr/bin/env bash
# The whole test suite: build (warnings as errors) and run every meson test.
# Usage: bash tests/run-all.sh [BUILD_DIR]   (default: build)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$top"
bash pipelines/install-deps.sh
if [ ! -d "$build" ]; then
  meson setup "$build" -Dwerror=true
fi
ninja -C "$build"
status=0
meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?
# One plain summary line for CI log readers.
awk '/^Ok:/{ok=$2} /^Expected Fail:/{xf=$3} /^Fail:/{f=$2} /^Unexpected Pass:/{up=$3} /^Skipped:/{s=$2} /^Timeout:/{t=$2}
     END{printf "%d passed, %d failed, %d skipped\n", ok+xf, f+up+t, s}' \
  "$build/meson-logs/testlog.txt"
exit $status

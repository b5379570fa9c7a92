#!/usr/bin/env bash
# The one device check of the CUDA backend (docs/CUDA.md), in two halves:
#
#   tests/bench/gpu-check.sh prepare   # here, on the build machine (no GPU needed)
#   tests/bench/gpu-check.sh run       # on the GPU machine, from the checkout root
#
# `prepare` builds (or reuses) a CUDA build, and stages into .device/gpu-check
# (git-ignored) the test and benchmark binaries, the shared libraries the GPU
# machine lacks (GLib, json-glib, libjpeg62: see shared/docs/GPU-MACHINE.md),
# and the HF peer script from ../shared/tools. Then, from the session with
# the device tool:
#
#   run(command="bash tests/bench/gpu-check.sh run", carry=[".device/gpu-check"], timeout_s=480)
#
# `run` takes about 4-6 minutes on an H200: device selection, test-cuda
# (fixture checks on the GPU, vision and LLaMA, CUDA vs CPU), bench-cuda
# (ViT-L size, CUDA vs CPU agreement and timings; then the 7B-shape LLaMA
# on CUDA with LLM_LAYERS layers: a 611-position prefill and decode ms per
# token, per layer and scaled to 32 layers), the HF transformers peer, and
# a table printed last. Logs go to $OUT/gpu-check when $OUT is set.
#
# Environment: BUILD (default build-cuda) for prepare; CARRY_BLAS=1 to stage
# OpenBLAS too (if the GPU machine's is missing); RUNS (default 20);
# LLM_LAYERS (default 4; 0 skips the LLaMA benchmark).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
stage=.device/gpu-check

prepare () {
  cd "$here" || exit 1
  local build=${BUILD:-build-cuda}
  if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dcuda=enabled -Dwerror=true || exit 1
  fi
  grep -q 'AVQ_HAVE_CUDA 1' "$build/avq-build-config.h" ||
    { echo "gpu-check: $build is not a CUDA build (AVQ_HAVE_CUDA 0)"; exit 1; }
  ninja -C "$build" tests/test-cuda tests/test-device tests/bench/bench-cuda lib/cli/avq || exit 1
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/lib-all"
  for b in tests/test-cuda tests/test-device tests/bench/bench-cuda lib/cli/avq; do
    cp "$build/$b" "$stage/bin/" && strip --strip-debug "$stage/bin/$(basename "$b")"
  done
  # Libraries the binaries load, minus what every Linux or the CUDA toolkit
  # on the GPU machine has (glibc, the GCC runtime, CUDA's own libraries).
  local skip='^(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux|libcuda|libcudart|libcublas|libcublasLt)\.'
  if [ "${CARRY_BLAS:-0}" != 1 ]; then
    skip="${skip%)*}|libopenblas|libgfortran|libquadmath)\\."
  fi
  ldd "$stage"/bin/* | awk '/=> \// { print $1, $3 }' | sort -u |
    while read -r soname path; do
      if ! echo "$soname" | grep -Eq "$skip"; then
        cp -L "$path" "$stage/lib-all/$soname"
      fi
    done
  if [ -f ../shared/tools/hf_peer_bench.py ]; then
    cp ../shared/tools/hf_peer_bench.py "$stage/"
  else
    echo "gpu-check: ../shared/tools/hf_peer_bench.py not found; the peer figures will be missing"
  fi
  git rev-parse HEAD > "$stage/commit" 2>/dev/null
  git status --short > "$stage/worktree-status" 2>/dev/null
  du -sh "$stage"
  echo "gpu-check: staged; now run it on the device with carry [\"$stage\"]"
}

# Runs a step with a time limit; its output is shown and logged.
step () {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  tail -n 60 "$logs/$name.log"
  echo "=== $name: exit $rc in $((SECONDS - t0)) s"
  echo "$name $rc $((SECONDS - t0))" >> "$logs/steps"
}

run () {
  cd "$here" || exit 1
  [ -d "$stage/bin" ] || { echo "gpu-check: $stage missing: prepare here and carry it"; exit 1; }
  logs=${OUT:-/tmp}/gpu-check
  mkdir -p "$logs"
  : > "$logs/steps"
  # Only the staged libraries the machine lacks, and only for our binaries
  # (python and nvidia-smi keep the system's newer ones).
  local libdir known
  libdir=$(mktemp -d /tmp/gpu-check-lib.XXXXXX)
  known=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null)
  for f in "$stage"/lib-all/*; do
    so=$(basename "$f")
    echo "$known" | grep -q "^[[:space:]]*$so " || ln -s "$PWD/$f" "$libdir/$so"
  done
  echo "staged libraries used: $(ls "$libdir" | tr '\n' ' ')"
  ourlib="$libdir:/usr/local/cuda/lib64"
  export AVQ_TEST_DATA_DIR="$PWD/tests/data"
  export AVQ_CLI="$PWD/$stage/bin/avq"
  unset AVQ_DEVICE
  echo "commit $(cat "$stage/commit" 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | head -5
  if LD_LIBRARY_PATH=$ourlib ldd "$stage"/bin/* | grep -q 'not found'; then
    echo "gpu-check: missing libraries (stage them, e.g. CARRY_BLAS=1):"
    LD_LIBRARY_PATH=$ourlib ldd "$stage"/bin/* | grep 'not found' | sort -u
    exit 1
  fi

  step test-device 60 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/test-device" --verbose
  step test-cuda 150 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/test-cuda" --verbose
  step bench-cuda 260 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/bench-cuda" --runs "${RUNS:-20}" --cpu-runs 1 --llm-layers "${LLM_LAYERS:-4}"
  local py=python3
  [ -x /opt/torch/.venv/bin/python3 ] && py=/opt/torch/.venv/bin/python3
  if [ -f "$stage/hf_peer_bench.py" ]; then
    step hf-peer 150 "$py" "$stage/hf_peer_bench.py" sdpa
  fi

  echo "=== summary"
  cat "$logs/steps"
  "$py" - "$logs" <<'EOF'
import json, os, sys
logs = sys.argv[1]
rows = []
for name in ("bench-cuda", "hf-peer"):
    path = os.path.join(logs, name + ".log")
    if not os.path.exists(path):
        continue
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        fig = d.pop("figure", "?")
        val = d.pop("median_ms", d.pop("ms", None))
        rest = ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("min_ms", "max_ms"))
        rows.append((name, fig, "" if val is None else f"{val:.3f}", rest))
print(f"{'source':<11} {'figure':<34} {'median ms':>10}  notes")
for r in rows:
    print(f"{r[0]:<11} {r[1]:<34} {r[2]:>10}  {r[3]}")
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run"; exit 2 ;;
esac

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
# `run` takes about 5-6 minutes on an H200: device selection, test-cuda
# (fixture checks on the GPU, vision and LLaMA, CUDA vs CPU, batches and
# graph replay), check-cuda-llm (the decoder at the 7B shape with 2 random
# layers against the CPU decoder), the device copy bandwidth (the decode floor), bench-cuda
# (ViT-L size at batch 1 and 8, CUDA vs CPU agreement and timings),
# bench-cuda-llm (the 7B LLaMA with LLM_LAYERS layers of random weights
# made on the device: prefill, decode ms per token at batch 1 and 8, whole
# answers), the HF transformers peer, compute-sanitizer memcheck over
# test-cuda, and a table printed last. Logs go to $OUT/gpu-check when $OUT
# is set.
#
# Environment: BUILD (default build-cuda) for prepare; CARRY_BLAS=1 to stage
# OpenBLAS too (if the GPU machine's is missing); RUNS (default 20);
# LLM_LAYERS (default 32; 0 skips the LLaMA benchmark); MEMCHECK=0 skips
# compute-sanitizer.
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
  local bins="tests/test-cuda tests/test-device tests/bench/bench-cuda
    tests/bench/bench-cuda-llm tests/bench/bench-cuda-bandwidth
    tests/bench/check-cuda-llm lib/cli/avq"
  # shellcheck disable=SC2086
  ninja -C "$build" $bins || exit 1
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/lib-all"
  for b in $bins; do
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
  # The decoder at the real 7B shape (2 random layers) against the CPU one.
  step check-7b 120 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/check-cuda-llm" --layers 2 --prompt 611 --steps 4
  step bandwidth 30 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/bench-cuda-bandwidth"
  step bench-cuda 150 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/bench-cuda" --runs "${RUNS:-20}" --cpu-runs 1
  if [ "${LLM_LAYERS:-32}" != 0 ]; then
    step bench-cuda-llm 120 env LD_LIBRARY_PATH="$ourlib" "$stage/bin/bench-cuda-llm" --runs "${RUNS:-20}" --layers "${LLM_LAYERS:-32}"
  fi
  local py=python3
  [ -x /opt/torch/.venv/bin/python3 ] && py=/opt/torch/.venv/bin/python3
  if [ -f "$stage/hf_peer_bench.py" ]; then
    step hf-peer 150 "$py" "$stage/hf_peer_bench.py" sdpa
  fi
  local sanitizer=/usr/local/cuda/bin/compute-sanitizer
  if [ "${MEMCHECK:-1}" != 0 ] && [ -x "$sanitizer" ]; then
    # Every kernel and both attention kernels, graphs, batches and the
    # decoder, without repeating what only differs on the host side.
    step memcheck 150 env LD_LIBRARY_PATH="$ourlib" "$sanitizer" --tool memcheck \
      --error-exitcode 9 --leak-check no "$stage/bin/test-cuda" \
      -p /cuda/features -p /cuda/features-fused -p /cuda/features-flash \
      -p /cuda/L0-derive/encode -p /cuda/L1-side8/decode -p /cuda/batch-graphs \
      -p /cuda/llm/fixture/avq.L0-derive -p /cuda/llm/batch \
      -p /cuda/llm/graph-replay -p /cuda/llm/gqa/BF16 -p /cuda/llm/random-weights \
      -p /cuda/llm-flash/gqa/F16
  fi

  echo "=== summary"
  cat "$logs/steps"
  "$py" - "$logs" <<'EOF'
import json, os, sys
logs = sys.argv[1]

def figures():
    """(log name, figure dict) of every JSON line of the benchmark logs."""
    for name in ("bandwidth", "bench-cuda", "bench-cuda-llm", "hf-peer"):
        path = os.path.join(logs, name + ".log")
        if not os.path.exists(path):
            continue
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                yield name, json.loads(line)
            except ValueError:
                continue

rows = []
for name, d in figures():
    fig = d.pop("figure", "?")
    val = d.pop("median_ms", d.pop("ms", None))
    rest = ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("min_ms", "max_ms"))
    rows.append((name, fig, "" if val is None else f"{val:.3f}", rest))
print(f"{'source':<14} {'figure':<40} {'median ms':>10}  notes")
for r in rows:
    print(f"{r[0]:<14} {r[1]:<40} {r[2]:>10}  {r[3]}")

# The issue's targets, computed from the figures above (medians of one run;
# "ours" answers add the cloud vision pass to the LLM's answer, both timed
# here; HF's generate includes its vision tower).
fig = {}
for name, d in figures():
    key = d.get("figure", "?")
    if "batch" in d and name == "hf-peer":
        key += "_b%s" % d["batch"]
    if "new_tokens" in d:
        key += "_t%s" % d["new_tokens"]
    fig[key] = d

def ms(key):
    d = fig.get(key)
    return None if d is None else d.get("median_ms", d.get("ms"))

def line(what, ours, peer=None, target=None, unit="ms"):
    if ours is None:
        print(f"{what:<46} missing")
        return
    text = f"{what:<46} {ours:9.3f} {unit}"
    if peer:
        text += f"   HF {peer:9.3f} {unit}   HF/ours {peer / ours:6.2f}x"
    if target:
        text += f"   target {target}"
    print(text)

print()
print("targets (H200):")
line("cloud vision, frame -> features, b1", ms("avq_cuda_decode_L0"))
line("unsplit image features, b1", ms("avq_cuda_image_features"),
     ms("hf_image_features_b1"), "<= 2.5 ms")
line("unsplit image features, b8", ms("avq_cuda_image_features_b8"),
     ms("hf_image_features_b8"))
line("edge encode L1 (layer 0 + LN1 + VQ), b1", ms("avq_cuda_encode_L1"),
     ms("torch_edge_L1_ln1_vq_b1"))
line("edge encode L1, b8", ms("avq_cuda_encode_L1_b8"), ms("torch_edge_L1_ln1_vq_b8"))
line("edge encode L0 derive, b1", ms("avq_cuda_encode_L0"))
line("edge encode L0 derive, b8", ms("avq_cuda_encode_L0_b8"))
v1, a1 = ms("avq_cuda_decode_L0"), ms("llm_cuda_answer_b1")
v8, a8 = ms("avq_cuda_decode_L0_b8"), ms("llm_cuda_answer_b8")
t1 = ms("llm_cuda_ttft_611")
line("answer b1 (vision + 611 prefill + 16 tokens)", v1 + a1 if v1 and a1 else None,
     ms("hf_generate_b1_t16"), "<= 90 ms")
line("answer b8 (8 answers)", v8 + a8 if v8 and a8 else None, ms("hf_generate_b8_t16"),
     "HF/ours >= 3x")
line("time to first token b1 (vision + prefill)", v1 + t1 if v1 and t1 else None,
     ms("hf_generate_b1_t1"))
dec = fig.get("llm_cuda_decode_b1_graphs_on")
bw = fig.get("cuda_copy_bandwidth")
if dec and bw:
    floor = dec["weight_bytes"] / (bw["gb_per_s"] * 1e9) * 1e3
    print(f"{'decode b1 ms/token (graphs)':<46} {dec['median_ms']:9.3f} ms   floor "
          f"{floor:.3f} ms at {bw['gb_per_s']:.0f} GB/s   ratio "
          f"{dec['median_ms'] / floor:.2f}   target <= 1.25")
line("decode b1 ms/token, graphs off", ms("llm_cuda_decode_b1_graphs_off"))
line("decode b8 ms/step (graphs)", ms("llm_cuda_decode_b8_graphs_on"))
line("decode b1 ms/token, sampling candidates", ms("llm_cuda_decode_b1_candidates"))
line("decode b8 ms/step, sampling candidates", ms("llm_cuda_decode_b8_candidates"))
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run"; exit 2 ;;
esac

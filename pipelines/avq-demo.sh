#!/usr/bin/env bash
# The main job: install build dependencies, build, and run the edge and
# cloud halves on a model (default: the tiny model bundled in tests/data).
#
#   bash pipelines/avq-demo.sh [--model DIR] [--avq FILE] [IMAGE...]
#
# With the real weights: --model /path/to/llava-1.5-7b-hf --avq my-codebook.safetensors
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
model="$top/tests/data/tiny-llava"
avq="$top/tests/data/tiny-llava/avq-L0-derive.safetensors"
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --avq) avq=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) images+=("$1"); shift ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=("$top/tests/data/tiny-llava/images/chelsea.png")

bash "$top/pipelines/install-deps.sh"
build="$top/build"
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
avqcli="$build/lib/cli/avq"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== edge: ${images[*]} -> AVQ frames"
"$avqcli" encode --model "$model" --avq "$avq" -o "$work/frames.avq" "${images[@]}"
"$avqcli" inspect "$work/frames.avq" | awk '/^frame/{print} /^indices/{printf "  %s ... (%d indices)\n", substr($0, 1, 60), NF-1}'
echo "== wire: $(stat -c %s "$work/frames.avq") bytes for ${#images[@]} frame(s)"
echo "== cloud: AVQ frames -> projected image features"
"$avqcli" features --model "$model" --avq "$avq" -o "$work/features.safetensors" "$work/frames.avq"

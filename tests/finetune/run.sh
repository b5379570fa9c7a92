#!/usr/bin/env bash
# Fine-tune recipe suite (models/finetune), independent of the C core suite:
#   1. the PyTorch split path reproduces the fixture reference (spec 4/5);
#   2. a short DLP + EMA codebook + LoRA run on the tiny fixture lowers the
#      loss, and its exported AVQ file reloads to the same model;
#   3. the C engine run on the exported file matches PyTorch (indices, side
#      codes, image features, greedy answer with LoRA), for a fresh run and
#      for the committed artifacts in tests/data/finetune/.
#
# usage: tests/finetune/run.sh [AVQ_CLI]      (default: build/lib/cli/avq)
# env:   FINETUNE_VENV   venv to create/reuse (default ~/.cache/avq-finetune-venv)
#        FINETUNE_UPDATE=1  refresh tests/data/finetune/ from this run
#        FINETUNE_THREADS   torch threads (default 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
CLI=$(realpath "${1:-build/lib/cli/avq}")
VENV=${FINETUNE_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/avq-finetune-venv}
THREADS=${FINETUNE_THREADS:-2}
MODEL=tests/data/tiny-llava

[ -x "$CLI" ] || { echo "finetune: no avq CLI at $CLI (build first)"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r models/finetune/requirements.txt
PY="$VENV/bin/python"
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
step() {  # step NAME COMMAND...
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

step "split path vs fixture reference" "$PY" tests/finetune/verify_fixture.py --model "$MODEL"

# L = 0, derive: the default split; its outputs are the committed artifacts.
"$CLI" train-codebook -m "$MODEL" -l 0 -k 256 -s 1 -t "$THREADS" \
  -o "$WORK/init-L0.safetensors" "$MODEL/images" >/dev/null 2>&1
update=()
[ "${FINETUNE_UPDATE:-0}" = 1 ] && update=(--update-artifacts)
step "train + export (L0 derive)" "$PY" tests/finetune/finetune_test.py --init "$WORK/init-L0.safetensors" \
  --out "$WORK/l0" --steps 24 --threads "$THREADS" "${update[@]}"
step "C engine vs PyTorch (L0 derive, this run)" "$PY" tests/finetune/check_equivalence.py --cli "$CLI" \
  --avq "$WORK/l0/trained.safetensors" --reference "$WORK/l0/reference.safetensors"
step "C engine vs PyTorch (committed tests/data/finetune)" "$PY" tests/finetune/check_equivalence.py \
  --cli "$CLI" --avq tests/data/finetune/trained.safetensors \
  --reference tests/data/finetune/reference.safetensors

# L = 1, side information (8 bits): a shorter run, same checks.
"$CLI" train-codebook -m "$MODEL" -l 1 --side-bits 8 -k 256 -s 1 -t "$THREADS" \
  -o "$WORK/init-L1.safetensors" "$MODEL/images" >/dev/null 2>&1
step "train + export (L1 side8)" "$PY" tests/finetune/finetune_test.py --init "$WORK/init-L1.safetensors" \
  --out "$WORK/l1" --steps 8 --threads "$THREADS"
step "C engine vs PyTorch (L1 side8, this run)" "$PY" tests/finetune/check_equivalence.py --cli "$CLI" \
  --avq "$WORK/l1/trained.safetensors" --reference "$WORK/l1/reference.safetensors"

echo "finetune: $passed passed, $failed failed"
[ "$failed" = 0 ]

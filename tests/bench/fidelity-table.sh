#!/bin/bash
# fidelity-table.sh [options] IMAGESET WORKDIR
#
# Trains AVQ codebooks on IMAGESET/train (made by make-image-set.sh) at
# several K, for L = 0 "derive" and L = 1 "side" (8 side bits), evaluates
# each on IMAGESET/eval with `avq eval --json`, adds the model's reference
# AVQ files (avq-L0-derive.safetensors, avq-L1-side8.safetensors, K = 4096,
# not trained on this data) evaluated on the same images, and prints a
# markdown table on stdout. Codebooks, training logs and eval JSON go to
# WORKDIR.
#
# Options (defaults in brackets):
#   --avq PATH        avq binary [build/lib/cli/avq]
#   --model DIR       LLaVA model directory [tests/data/tiny-llava]
#   --ks "K..."       codebook sizes ["64 256 1024 4096"]
#   --iters N         most Lloyd iterations [25]
#   --max-tokens M    train-codebook --max-tokens [1000000: every token of
#                     a few hundred images; the tokens used are logged]
#   --seed S          train-codebook --seed [0]
#   --threads T       --threads for train-codebook and eval, and
#                     OPENBLAS_NUM_THREADS [1]
#
# Run from the repository root. Timings are wall-clock seconds of the whole
# train-codebook run (loading, vision tower over every training image,
# k-means++ and the Lloyd iterations) on whatever else the machine is doing.
set -euo pipefail

AVQ=build/lib/cli/avq
MODEL=tests/data/tiny-llava
KS="64 256 1024 4096"
ITERS=25
MAXTOK=1000000
SEED=0
THREADS=1
usage () { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --avq) AVQ=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --ks) KS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --max-tokens) MAXTOK=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || usage
SET=$1
WORK=$2
[ -d "$SET/train" ] && [ -d "$SET/eval" ] || { echo "$0: $SET/train and $SET/eval needed (make-image-set.sh)" >&2; exit 1; }
[ -x "$AVQ" ] || { echo "$0: $AVQ is not an executable (--avq)" >&2; exit 1; }
command -v jq >/dev/null || { echo "$0: jq is needed (apt-get install jq)" >&2; exit 1; }
mkdir -p "$WORK"
# train-codebook's --threads covers the k-means GEMMs only; its feature
# extraction runs at OpenBLAS's default thread count, so pin that too.
[ "$THREADS" -gt 0 ] && export OPENBLAS_NUM_THREADS="$THREADS"

now () { date +%s.%N; }
# header FILE: a safetensors file's JSON header
header () {
  local n
  n=$(head -c 8 "$1" | od -An -tu8 | tr -d ' ')
  head -c $(( n + 8 )) "$1" | tail -c +9
}
# meta FILE KEY: a __metadata__ value
meta () { header "$1" | jq -r --arg k "$2" '.__metadata__[$k]'; }

# row LABEL K SPLIT EVAL_JSON TRAIN_SECONDS ITERATIONS TRAIN_MSE
row () {
  local s
  s=$(jq -r '.summary | [.bytes_per_frame, .mean_cosine, .worst_cosine, .mean_rel_error, .quant_mse] | @tsv' "$4")
  local bytes cos worst rel mse
  IFS=$'\t' read -r bytes cos worst rel mse <<< "$s"
  printf '| %s | %s | %s | %s | %.6f | %.6f | %.4f | %.4g | %s | %s | %s |\n' \
    "$1" "$2" "$3" "$bytes" "$cos" "$worst" "$rel" "$mse" "$7" "$5" "$6"
}

ROWS=()
INFO=()
for cfg in "0 derive" "1 side"; do
  read -r L R <<< "$cfg"
  for K in $KS; do
    if [ "$R" = side ]; then split="L=$L side 8"; extra=(--side-bits 8); name="L$L-side8-K$K"
    else split="L=$L derive"; extra=(); name="L$L-derive-K$K"; fi
    cb="$WORK/$name.safetensors"
    echo "training $name ..." >&2
    t0=$(now)
    "$AVQ" train-codebook --model "$MODEL" --layer "$L" --residual "$R" "${extra[@]}" \
      -k "$K" --iters "$ITERS" --max-tokens "$MAXTOK" --seed "$SEED" --threads "$THREADS" \
      -o "$cb" "$SET/train" 2> "$WORK/$name.train.log" \
      || { cat "$WORK/$name.train.log" >&2; exit 1; }
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')
    # "train-codebook: 25 iterations (iteration limit), mse 0.0123 -> FILE"
    last=$(grep '^train-codebook: [0-9]* iterations' "$WORK/$name.train.log")
    iters=$(sed -E 's/^train-codebook: ([0-9]+) iterations \(([^)]*)\).*/\1 (\2)/' <<< "$last")
    iters=${iters/iteration limit/limit}
    # train-codebook's mse is per token (squared distance summed over D);
    # eval's quant_mse is per element: divide by D to compare.
    tmse=$(sed -E 's/.*, mse ([^ ]+) ->.*/\1/' <<< "$last")
    dim=$(header "$cb" | jq -r '.["avq.codebook"].shape[1]')
    tmse=$(awk -v m="$tmse" -v d="$dim" 'BEGIN { printf "%.4g", m / d }')
    INFO+=("$name: $(grep '^tokens:' "$WORK/$name.train.log")")
    echo "evaluating $name ..." >&2
    "$AVQ" eval --json --threads "$THREADS" --model "$MODEL" --avq "$cb" "$SET/eval" \
      > "$WORK/$name.eval.json"
    ROWS+=("$(row "trained" "$K" "$split" "$WORK/$name.eval.json" "$secs" "$iters" "$tmse")")
  done
done

for file in avq-L0-derive.safetensors avq-L1-side8.safetensors; do
  [ -f "$MODEL/$file" ] || { echo "$0: no $MODEL/$file, reference row skipped" >&2; continue; }
  k=$(meta "$MODEL/$file" avq.codebook_size)
  split="L=$(meta "$MODEL/$file" avq.layer) $(meta "$MODEL/$file" avq.residual)"
  [ "$(meta "$MODEL/$file" avq.residual)" = side ] && split="$split $(meta "$MODEL/$file" avq.side_bits)"
  echo "evaluating reference $file ..." >&2
  "$AVQ" eval --json --threads "$THREADS" --model "$MODEL" --avq "$MODEL/$file" "$SET/eval" \
    > "$WORK/ref-${file%.safetensors}.eval.json"
  ROWS+=("$(row "reference ($file)" "$k" "$split" "$WORK/ref-${file%.safetensors}.eval.json" "-" "-" "-")")
done

ntrain=$(find "$SET/train" -name '*.png' | wc -l)
neval=$(find "$SET/eval" -name '*.png' | wc -l)
echo "Model $MODEL; codebooks trained on $ntrain images ($SET/train), evaluated on $neval disjoint images ($SET/eval);"
echo "train-codebook --iters $ITERS --max-tokens $MAXTOK --seed $SEED --threads $THREADS; eval --threads $THREADS; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "| codebook | K | split | bytes/frame | mean cosine | worst cosine | mean rel error | quant MSE (eval) | k-means MSE (train) | train time | k-means iterations |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
echo
echo "cosine and rel error compare the projected image features through the AVQ wire with the unsplit"
echo "model: cosine per token, averaged over an image, then over the eval images (worst: the lowest image);"
echo "rel error ||got - ref|| / ||ref|| per image, averaged. quant MSE (eval): the split-point quantisation"
echo "error per element on the eval images; k-means MSE (train): the same on the training tokens, from the"
echo "last Lloyd pass. Iterations: how many ran, and whether k-means converged or hit --iters."
echo
printf '%s\n' "${INFO[@]}" | sed 's/^/    /'

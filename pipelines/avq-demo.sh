#!/usr/bin/env bash
# The main job: installs the build dependencies, builds, and runs the whole
# edge-to-cloud pipeline over loopback UDP:
#
#   cloud (started first, in the background):
#     udpsrc ! rtpjitterbuffer ! avqdepay ! avqanswer question=... ! fakesink
#   edge (each IMAGE shown as a 25 fps camera for --frames frames):
#     filesrc ! decodebin ! imagefreeze ! videoconvert ! avqencode ! avqpay ! udpsink
#
# then reports what crossed the wire (frames, packets, bytes a frame with and
# without the RTP/UDP/IP headers, losses) and the answers, one an image.
#
#   bash pipelines/avq-demo.sh [--model DIR] [--avq FILE] [--question TEXT]
#                              [--frames N] [--port N] [--mtu N]
#                              [--max-new-tokens N] [IMAGE...]
#
#   --model DIR     LLaVA model directory in the Hugging Face layout, e.g. a
#                   download of llava-hf/llava-1.5-7b-hf (default: the tiny
#                   random-weight model in tests/data/tiny-llava)
#   --avq FILE      AVQ file (codebook + projections) for that model
#                   (default: tests/data/tiny-llava/avq-L0-derive.safetensors)
#   --question TEXT asked about the first frame of each image
#                   ("What is in the picture?")
#   --frames N      frames sent per image, at 25 fps (25)
#   --port N        UDP port on 127.0.0.1 (0: any free port; 0)
#   --mtu N         avqpay MTU (1400: one packet a frame)
#   --max-new-tokens N  longest answer (64)
#   IMAGE...        PNG or JPEG files (default: the three fixture images)
#
# The build goes to build/ (AVQ_BUILD overrides). Exit status 0 when every
# image got its answer.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

model="$top/tests/data/tiny-llava"
avq="$top/tests/data/tiny-llava/avq-L0-derive.safetensors"
question="What is in the picture?"
frames=25 port=0 mtu=1400 max_tokens=64
images=()
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
need () { [ $# -ge 2 ] || { echo "avq-demo.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    --model) need "$@"; model=$2; shift 2 ;;
    --avq) need "$@"; avq=$2; shift 2 ;;
    --question) need "$@"; question=$2; shift 2 ;;
    --frames) need "$@"; frames=$2; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --mtu) need "$@"; mtu=$2; shift 2 ;;
    --max-new-tokens) need "$@"; max_tokens=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) images+=("$1"); shift ;;
  esac
done
tiny=0
[ "$(cd "$model" 2>/dev/null && pwd)" = "$top/tests/data/tiny-llava" ] && tiny=1
[ ${#images[@]} -gt 0 ] || images=("$top"/tests/data/tiny-llava/images/{astronaut,chelsea,coffee}.png)

# ---- set-up: packages, build ----
bash "$top/pipelines/install-deps.sh"
build=${AVQ_BUILD:-$top/build}
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
[ -f "$build/gst/libgstavq.so" ] && [ -x "$build/pipelines/avq-run" ] || {
  echo "avq-demo.sh: the GStreamer plugin was not built (is libgstreamer1.0-dev installed?)" >&2
  exit 1
}

. "$top/pipelines/avq-common.sh"
for v in frames:$frames port:$port mtu:$mtu max-new-tokens:$max_tokens; do
  avq_num "--${v%%:*}" "${v#*:}"
done
[ "$frames" -ge 1 ] || avq_die "--frames must be at least 1"
[ -f "$model/config.json" ] || avq_die "$model is not a model directory (no config.json)"
[ -f "$avq" ] || avq_die "no AVQ file $avq"
for img in "${images[@]}"; do [ -r "$img" ] || avq_die "cannot read image $img"; done
export GST_PLUGIN_PATH="$build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
run="$build/pipelines/avq-run"

work=$(mktemp -d)
rx_pid=""
cleanup () {
  if [ -n "$rx_pid" ] && kill -0 "$rx_pid" 2>/dev/null; then
    kill -TERM "$rx_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$rx_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The receiver's caps, from the AVQ file alone (what an SDP file would carry).
avq_stream_params "$avq" "$model"
caps=$(avq_rtp_caps 96 25)
n_images=${#images[@]}
total=$((frames * n_images))

echo "== model: $model"
echo "   AVQ file: $avq (layer $AVQ_LAYER, $AVQ_TOKENS tokens x $AVQ_INDEX_BITS bits, side bits $AVQ_SIDE_BITS, codebook $AVQ_CODEBOOK)"

# ---- cloud: started first, ready once its model is loaded ----
# wait-for-answer and interval=frames: the first frame of each image is held
# until answered, so answer k is about image k. A live deployment leaves
# wait-for-answer off and lets avqanswer skip frames while it is busy.
timeout_opt=()
[ "$tiny" = 0 ] || timeout_opt=(--timeout 60)
"$run" --stats --frames "$total" --idle 10 "${timeout_opt[@]}" --meta sink \
  udpsrc name=udpsrc address=127.0.0.1 port="$port" caps="$caps" '!' \
  rtpjitterbuffer name=jitterbuffer latency=200 do-lost=true '!' \
  avqdepay name=depay '!' \
  avqanswer name=answer model="$model" avq="$avq" question="$question" \
    interval="$frames" max-new-tokens="$max_tokens" wait-for-answer=true '!' \
  fakesink name=sink > "$work/rx.out" 2> "$work/rx.err" &
rx_pid=$!
echo "== cloud: loading the model ..."
while ! grep -q '^ready' "$work/rx.out"; do
  if ! kill -0 "$rx_pid" 2>/dev/null; then
    echo "avq-demo.sh: the receiver failed:" >&2
    cat "$work/rx.err" >&2
    exit 1
  fi
  sleep 0.1
done
port=$(awk '$1 == "port" { print $3; exit }' "$work/rx.out")
echo "   listening on udp://127.0.0.1:$port"
echo "   udpsrc caps: $caps"

# ---- edge: the images one after the other, as one 25 fps stream ----
sources=()
for img in "${images[@]}"; do
  sources+=(filesrc location="$img" '!' decodebin '!' imagefreeze num-buffers="$frames" '!' c.)
done
echo "== edge: $n_images image(s) x $frames frames -> avqencode -> avqpay (MTU $mtu) -> udp://127.0.0.1:$port"
start=$(date +%s.%N)
if ! "$run" --stats concat name=c '!' "video/x-raw,framerate=25/1" '!' videoconvert '!' \
     avqencode name=encode model="$model" avq="$avq" '!' \
     avqpay name=pay mtu="$mtu" '!' udpsink name=udpsink host=127.0.0.1 port="$port" \
     "${sources[@]}" > "$work/tx.out" 2> "$work/tx.err"; then
  echo "avq-demo.sh: the sender failed:" >&2
  cat "$work/tx.err" >&2
  exit 1
fi
echo "   sent in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
echo "== cloud: answering ..."
status=0
wait "$rx_pid" || status=$?
rx_pid=""
if [ "$status" != 0 ]; then
  echo "avq-demo.sh: the receiver failed (exit $status):" >&2
  cat "$work/rx.err" >&2
  exit 1
fi

# ---- report ----
stat () {   # FILE ELEMENT KEY: a value from avq-run's "stats" lines
  awk -v e="$2" -v k="$3" '$1 == "stats" && $2 == e {
    for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$1"
}
encoded=$(stat "$work/tx.out" encode frames-encoded)
sent=$(stat "$work/tx.out" pay frames-in)
packets=$(stat "$work/tx.out" pay packets-out)
served=$(stat "$work/tx.out" udpsink bytes-served)
rx_packets=$(stat "$work/rx.out" depay packets-received)
received=$(stat "$work/rx.out" depay frames-out)
dropped=$(stat "$work/rx.out" depay frames-dropped)
invalid=$(stat "$work/rx.out" depay frames-invalid)
lost=$(stat "$work/rx.out" jitterbuffer num-lost)
late=$(stat "$work/rx.out" jitterbuffer num-late)
frame_bytes=$(stat "$work/rx.out" depay bytes-out)
answers=$(stat "$work/rx.out" answer answers)
metas=$(grep -c '^meta ' "$work/rx.out" || true)

echo
echo "== what crossed the wire (udp://127.0.0.1:$port, MTU $mtu)"
awk -v enc="$encoded" -v sent="$sent" -v pk="$packets" -v served="$served" \
    -v rxpk="$rx_packets" -v rx="$received" -v drop="$dropped" -v inv="$invalid" \
    -v lost="$lost" -v late="$late" -v fb="$frame_bytes" 'BEGIN {
  printf "   frames sent        %d (%d encoded), in %d RTP packets (%.2f a frame)\n", sent, enc, pk, pk / sent
  printf "   frames received    %d complete, %d dropped incomplete, %d invalid; %d packets received\n", rx, drop, inv, rxpk
  printf "   packets lost       %d (rtpjitterbuffer: %d lost, %d late)\n", pk - rxpk, lost, late
  if (rx > 0 && sent > 0) {
    f = fb / rx; rtp = served / sent; ppf = pk / sent
    printf "   bytes a frame      %d AVQ frame\n", f
    printf "                      %.0f RTP payload (+ %d-byte X-AVQ header a packet)\n", rtp - 12 * ppf, 8
    printf "                      %.0f RTP packets (+ 12-byte RTP header a packet; udpsink sent %d bytes)\n", rtp, served
    printf "                      %.0f on an IPv4 wire (+ 8 UDP + 20 IP a packet)\n", rtp + 28 * ppf
    printf "   at 25 fps          %.1f kbit/s on the wire\n", (rtp + 28 * ppf) * 8 * 25 / 1000
  }
}'
echo
echo "== answers (question: \"$question\")"
[ "$tiny" = 0 ] || echo "   (the bundled model has random weights: its answers are noise; see docs/PIPELINES.md for real weights)"
i=0
while IFS= read -r line; do
  img=${images[$i]:-?}
  text=$(printf '%s\n' "$line" | sed 's/.* answer="\(.*\)"$/\1/')
  timing=$(printf '%s\n' "$line" | sed 's/.* tokens=\([0-9]*\) vision-ms=\([0-9.]*\) prefill-ms=\([0-9.]*\) decode-ms=\([0-9.]*\) .*/\1 tokens; vision \2 ms, prefill \3 ms, decode \4 ms/')
  echo "   $(basename "$img"): $text"
  echo "      ($timing)"
  i=$((i + 1))
done < <(grep '^answer ' "$work/rx.out")
echo "   $answers answer(s), $metas attached to frames as GstAvqAnswerMeta"

if [ "${answers:-0}" -lt "$n_images" ]; then
  echo "avq-demo.sh: expected $n_images answers, got ${answers:-0}" >&2
  sed 's/^/   receiver: /' "$work/rx.err" >&2
  exit 1
fi
if [ "${received:-0}" -lt "$total" ]; then
  echo "   note: $((total - ${received:-0})) of $total frames did not arrive complete (loss on the loopback under load)"
fi
exit 0

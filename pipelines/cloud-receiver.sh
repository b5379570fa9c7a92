#!/usr/bin/env bash
# Cloud side: receives an X-AVQ RTP stream and answers a question about it
# with LLaVA:
#   udpsrc ! rtpjitterbuffer ! avqdepay ! avqanswer question=... ! fakesink
# Each answer is printed as one line (the avq-answer bus message); Ctrl-C
# stops the stream, finishes the answer in flight and prints the element
# statistics (frames received and dropped, packets lost, answers).
#
#   bash pipelines/cloud-receiver.sh [OPTION...]
#
#   --host ADDR        local address to listen on (0.0.0.0: all); a
#                      multicast group address joins that group
#   --port N           UDP port (5000; 0: any free port, printed at start)
#   --cameras N        receive N streams, on ports N, N+2, ... (or each on
#                      a free port with --port 0), one avqanswer per stream,
#                      all sharing one model through the pool (1)
#   --pool NAME        answer pool shared by the avqanswer elements ("cloud"
#                      with --cameras > 1; none otherwise)
#   --max-batch N      most questions answered in one batch by the pool (8)
#   --model DIR        LLaVA model directory (default: the bundled tiny model)
#   --avq FILE         AVQ file the sender encodes with (default: the tiny
#                      fixture's avq-L0-derive.safetensors)
#   --sdp FILE         take port, payload type and stream parameters from an
#                      SDP file (pipelines/avq-sdp.sh writes one) instead of
#                      computing them from --avq
#   --pt N             RTP payload type (96)
#   --question TEXT    question asked about the stream ("What is in the picture?")
#   --interval N       ask about every Nth frame (25); while the model is
#                      busy only the newest such frame waits
#   --max-new-tokens N longest answer in tokens (64)
#   --temperature T    sample answers at temperature T, 0..100 (0: greedy,
#                      the default)
#   --top-p P          nucleus sampling threshold, above 0 and up to 1 (1)
#   --top-k K          sample among the K most likely tokens only (0: all,
#                      the default; HF's generate uses 50)
#   --seed S           sampling seed, 0..4294967295 (0): the same frame,
#                      question and seed give the same answer
#   --wait-for-answer  hold each asked frame until answered (files, tests)
#   --threads N        model compute threads (0: automatic)
#   --latency MS       rtpjitterbuffer latency (200)
#   --frames N         stop after N frames (0: until Ctrl-C)
#   --idle S           stop when no packet came for S seconds (0: never)
#   -n, --dry-run      print the gst-launch-1.0 command line and exit
#
# The receiver's caps must match the sender's AVQ file: codebook id, tokens,
# bit widths and split layer travel as SDP-style string fields.
set -euo pipefail
. "$(dirname "$0")/avq-common.sh"

host=0.0.0.0 port=5000 model=$avq_default_model avq=$avq_default_avq sdp="" pt=96
question="What is in the picture?" interval=25 max_tokens=64 wait=0 threads=""
latency=200 frames=0 idle=0 dry=0 cameras=1 pool="" max_batch=8
temperature="" top_p="" top_k="" seed=""
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
need () { [ $# -ge 2 ] || avq_die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --host) need "$@"; host=$2; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --cameras) need "$@"; cameras=$2; shift 2 ;;
    --pool) need "$@"; pool=$2; shift 2 ;;
    --max-batch) need "$@"; max_batch=$2; shift 2 ;;
    --model) need "$@"; model=$2; shift 2 ;;
    --avq) need "$@"; avq=$2; shift 2 ;;
    --sdp) need "$@"; sdp=$2; shift 2 ;;
    --pt) need "$@"; pt=$2; shift 2 ;;
    --question) need "$@"; question=$2; shift 2 ;;
    --interval) need "$@"; interval=$2; shift 2 ;;
    --max-new-tokens) need "$@"; max_tokens=$2; shift 2 ;;
    --temperature) need "$@"; temperature=$2; shift 2 ;;
    --top-p) need "$@"; top_p=$2; shift 2 ;;
    --top-k) need "$@"; top_k=$2; shift 2 ;;
    --seed) need "$@"; seed=$2; shift 2 ;;
    --wait-for-answer) wait=1; shift ;;
    --threads) need "$@"; threads=$2; shift 2 ;;
    --latency) need "$@"; latency=$2; shift 2 ;;
    --frames) need "$@"; frames=$2; shift 2 ;;
    --idle) need "$@"; idle=$2; shift 2 ;;
    -n|--dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
for o in port:$port pt:$pt interval:$interval max-new-tokens:$max_tokens \
         cameras:$cameras max-batch:$max_batch latency:$latency frames:$frames idle:$idle ${threads:+threads:$threads} \
         ${temperature:+temperature:$temperature} ${top_p:+top-p:$top_p}; do
  avq_num "--${o%%:*}" "${o#*:}"
done
in_range () { awk -v v="$1" -v lo="$2" -v hi="$3" -v open="$4" \
  'BEGIN { exit !((open ? v + 0 > lo + 0 : v + 0 >= lo + 0) && v + 0 <= hi + 0) }'; }
[ -z "$temperature" ] || in_range "$temperature" 0 100 0 || avq_die "--temperature must be 0..100"
[ -z "$top_p" ] || in_range "$top_p" 0 1 1 || avq_die "--top-p must be above 0 and at most 1"
if [ -n "$seed" ]; then
  case $seed in *[!0-9]*|???????????*) avq_die "--seed needs a whole number 0..4294967295, not '$seed'" ;; esac
  [ $((10#$seed)) -le 4294967295 ] || avq_die "--seed must be at most 4294967295"
fi
if [ -n "$top_k" ]; then
  case $top_k in ''|*[!0-9]*|????????*) avq_die "--top-k needs a whole number 0..1000000, not '$top_k'" ;; esac
  [ $((10#$top_k)) -le 1000000 ] || avq_die "--top-k must be at most 1000000"
fi

if [ -n "$sdp" ]; then
  # The SDP gives the port (m=), payload type (a=rtpmap), the stream
  # parameters (a=fmtp, as string caps fields, like sdpdemux makes them)
  # and optionally the frame rate and a multicast destination (c=).
  [ -r "$sdp" ] || avq_die "cannot read $sdp"
  sdp_text=$(tr -d '\r' < "$sdp")
  mline=$(printf '%s\n' "$sdp_text" | grep -m1 '^m=application ') || avq_die "$sdp has no m=application line"
  read -r _ port _ pt _ <<< "$mline"
  avq_num "m= port" "$port"; avq_num "m= payload type" "$pt"
  grep -qi "^a=rtpmap:$pt X-AVQ/90000" <<< "$sdp_text" ||
    avq_die "$sdp: payload type $pt is not X-AVQ/90000"
  fmtp=$(printf '%s\n' "$sdp_text" | sed -n "s/^a=fmtp:$pt //p" | sed -n 1p)
  [ -n "$fmtp" ] || avq_die "$sdp has no a=fmtp:$pt line"
  caps="application/x-rtp, media=(string)application, clock-rate=(int)90000, encoding-name=(string)X-AVQ, payload=(int)$pt"
  IFS=';' read -ra params <<< "$fmtp"
  for kv in "${params[@]}"; do
    kv=${kv// /}
    case $kv in
      *=*) key=${kv%%=*} value=${kv#*=} ;;
      *) avq_die "$sdp: bad fmtp parameter '$kv'" ;;
    esac
    case $key in *[!A-Za-z0-9-]*|'') avq_die "$sdp: bad fmtp key '$key'" ;; esac
    case $value in *[!A-Za-z0-9.-]*|'') avq_die "$sdp: bad fmtp value '$value'" ;; esac
    caps+=", $key=(string)$value"
  done
  fps=$(printf '%s\n' "$sdp_text" | sed -n 's/^a=framerate:\([0-9.]*\)$/\1/p' | sed -n 1p)
  [ -z "$fps" ] || caps+=", a-framerate=(string)$fps"
  cline=$(printf '%s\n' "$sdp_text" | sed -n 's/^c=IN IP[46] \([^/ ]*\).*/\1/p' | sed -n 1p)
  case $cline in 22[4-9].*|23[0-9].*|[fF][fF]*) host=$cline ;; esac
else
  avq_stream_params "$avq" "$model"
  caps=$(avq_rtp_caps "$pt")
fi
if [ "$dry" != 1 ]; then
  [ -f "$model/config.json" ] || avq_die "$model is not a model directory (no config.json)"
  [ -f "$avq" ] || avq_die "no AVQ file $avq"
fi

[ "$cameras" -ge 1 ] || avq_die "--cameras must be at least 1"
[ "$max_batch" -ge 1 ] && [ "$max_batch" -le 64 ] || avq_die "--max-batch must be 1..64"
[ "$cameras" = 1 ] || [ -n "$pool" ] || pool=cloud
case $pool in *[!A-Za-z0-9_-]*) avq_die "--pool takes letters, digits, '-' and '_'" ;; esac
answer=(avqanswer "model=$model" "avq=$avq" "question=$question" "interval=$interval"
        "max-new-tokens=$max_tokens")
[ -z "$temperature" ] || answer+=("temperature=$temperature")
[ -z "$top_p" ] || answer+=("top-p=$top_p")
[ -z "$top_k" ] || answer+=("top-k=$((10#$top_k))")
[ -z "$seed" ] || answer+=("seed=$((10#$seed))")
[ -z "$pool" ] || answer+=("pool=$pool" "max-batch=$max_batch")
[ "$wait" = 0 ] || answer+=(wait-for-answer=true)
[ -z "$threads" ] || answer+=("threads=$threads")
opts=(--stats)
[ "$frames" = 0 ] || opts+=(--frames "$frames")
[ "$idle" = 0 ] || opts+=(--idle "$idle")
# do-lost: the jitter buffer tells avqdepay about a lost packet as soon as
# it gives up on it, so the broken frame is dropped at once.
branches=()
for ((i = 0; i < cameras; i++)); do
  p=$port
  [ "$port" = 0 ] || p=$((port + 2 * i))
  branches+=(udpsrc "name=udpsrc$i" "address=$host" "port=$p" "caps=$caps" '!'
             rtpjitterbuffer "latency=$latency" do-lost=true '!' avqdepay '!'
             "${answer[@]}" "name=answer$i" '!' fakesink)
done
avq_launch "$dry" "-m -e" "${opts[@]}" -- "${branches[@]}"

#!/usr/bin/env bash
# Edge side without a camera: videotestsrc as a live 25 fps camera, encoded
# with avqencode and sent as X-AVQ RTP to a receiver (cloud-receiver.sh).
#
#   bash pipelines/edge-testsrc.sh [OPTION...]
#
# Source options:
#   --pattern NAME     videotestsrc pattern: smpte, ball, snow, ... (smpte)
#   --size WxH         frame size (640x480)
#   --fps N            frame rate (25)
#   --frames N         stop after N frames (0: run until Ctrl-C; 0)
#   --not-live         a non-live source paced by udpsink: avqencode then
#                      encodes every frame instead of dropping late ones
set -euo pipefail
. "$(dirname "$0")/avq-common.sh"

avq_edge_defaults
pattern=smpte size=640x480 fps=25 frames=0 live=true
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; avq_edge_options_help; }
while [ $# -gt 0 ]; do
  avq_edge_option "$@"
  if [ "$_avq_shift" -gt 0 ]; then shift "$_avq_shift"; continue; fi
  case $1 in
    --pattern) pattern=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --fps) fps=${2:?}; shift 2 ;;
    --frames) frames=${2:?}; shift 2 ;;
    --not-live) live=false; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
case $size in [0-9]*x[0-9]*) ;; *) avq_die "--size is WxH, e.g. 640x480" ;; esac
avq_num --fps "$fps"; avq_num --frames "$frames"

# Live: avqencode drops frames it cannot keep up with; send at once.
# Not live: every frame is encoded and udpsink paces them at the frame rate.
sync=false
[ "$live" = true ] || sync=true
avq_edge_tail "$sync"
src=(videotestsrc "is-live=$live" "pattern=$pattern")
[ "$frames" = 0 ] || src+=("num-buffers=$frames")
avq_launch "$dry" -e --stats -- "${src[@]}" '!' \
  "video/x-raw,width=${size%x*},height=${size#*x},framerate=$fps/1" '!' "${avq_tail[@]}"

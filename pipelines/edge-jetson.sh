#!/usr/bin/env bash
# Edge side on an NVIDIA Jetson with a CSI camera (Argus):
# nvarguscamerasrc ! nvvidconv ! video/x-raw,format=RGBA ! avqencode ! avqpay ! udpsink.
#
#   bash pipelines/edge-jetson.sh [OPTION...]
#
# Camera options:
#   --sensor-id N      Argus sensor (0)
#   --size WxH         sensor mode to capture (1280x720)
#   --fps N            capture frame rate (30)
#   --out-size WxH     size nvvidconv scales to on the VIC, in hardware
#                      (default: same as --size). avqencode resizes the
#                      shorter side to 336 anyway; scaling here first saves
#                      CPU, at the price of a resampler other than the
#                      torchvision-exact one the model was evaluated with.
#   --format F         what nvvidconv outputs into system memory: RGBA
#                      (default; avqencode reads it directly), BGRx, NV12
#                      or I420 (avqencode converts those to RGB itself)
#   --frames N         stop after N frames (0: until Ctrl-C; 0)
#
# nvarguscamerasrc produces NVMM (device) buffers; avqencode needs frames in
# system memory, which is what nvvidconv writes when its output caps are
# plain video/x-raw (without the memory:NVMM feature).
set -euo pipefail
. "$(dirname "$0")/avq-common.sh"

avq_edge_defaults
sensor=0 size=1280x720 out_size="" fps=30 format=RGBA frames=0
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; avq_edge_options_help; }
while [ $# -gt 0 ]; do
  avq_edge_option "$@"
  if [ "$_avq_shift" -gt 0 ]; then shift "$_avq_shift"; continue; fi
  case $1 in
    --sensor-id) sensor=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --out-size) out_size=${2:?}; shift 2 ;;
    --fps) fps=${2:?}; shift 2 ;;
    --format) format=${2:?}; shift 2 ;;
    --frames) frames=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
for s in "$size" "${out_size:-$size}"; do
  case $s in [0-9]*x[0-9]*) ;; *) avq_die "--size/--out-size are WxH, e.g. 1280x720" ;; esac
done
case $format in RGBA|BGRx|NV12|I420) ;; *) avq_die "--format is RGBA, BGRx, NV12 or I420" ;; esac
avq_num --sensor-id "$sensor"; avq_num --fps "$fps"; avq_num --frames "$frames"
out_size=${out_size:-$size}

avq_edge_tail false
src=(nvarguscamerasrc "sensor-id=$sensor")
[ "$frames" = 0 ] || src+=("num-buffers=$frames")
src+=('!' "video/x-raw(memory:NVMM),width=${size%x*},height=${size#*x},framerate=$fps/1"
      '!' nvvidconv '!' "video/x-raw,format=$format,width=${out_size%x*},height=${out_size#*x}")
# avqencode accepts all four formats, so videoconvert passes them through.
avq_launch "$dry" -e --stats -- "${src[@]}" '!' "${avq_tail[@]}"

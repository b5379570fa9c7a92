#!/usr/bin/env bash
# Edge side on a V4L2 camera (USB webcam, CSI camera with a V4L2 driver):
# v4l2src ! avqencode ! avqpay ! udpsink.
#
#   bash pipelines/edge-v4l2.sh [OPTION...]
#
# Camera options:
#   --device PATH      V4L2 device (/dev/video0)
#   --size WxH         capture size the camera supports (640x480)
#   --fps N            capture frame rate (30)
#   --mjpeg            capture MJPEG and decode it (jpegdec), for cameras
#                      that give high resolutions only as MJPEG
#   --frames N         stop after N frames (0: until Ctrl-C; 0)
#
# avqencode takes RGB/BGR(x/A), I420 and NV12 directly; videoconvert turns
# anything else (YUY2, the usual webcam format) into one of them. The camera
# is live: when encoding is slower than the camera, avqencode drops frames
# rather than falling behind; --max-rate sets a lower steady rate.
# List what the camera offers with: v4l2-ctl --list-formats-ext
set -euo pipefail
. "$(dirname "$0")/avq-common.sh"

avq_edge_defaults
device=/dev/video0 size=640x480 fps=30 mjpeg=0 frames=0
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; avq_edge_options_help; }
while [ $# -gt 0 ]; do
  avq_edge_option "$@"
  if [ "$_avq_shift" -gt 0 ]; then shift "$_avq_shift"; continue; fi
  case $1 in
    --device) device=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --fps) fps=${2:?}; shift 2 ;;
    --mjpeg) mjpeg=1; shift ;;
    --frames) frames=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
case $size in [0-9]*x[0-9]*) ;; *) avq_die "--size is WxH, e.g. 640x480" ;; esac
avq_num --fps "$fps"; avq_num --frames "$frames"
[ "$dry" = 1 ] || [ -e "$device" ] || avq_die "no camera at $device (see --device)"

avq_edge_tail false
src=(v4l2src "device=$device")
[ "$frames" = 0 ] || src+=("num-buffers=$frames")
if [ "$mjpeg" = 1 ]; then
  src+=('!' "image/jpeg,width=${size%x*},height=${size#*x},framerate=$fps/1" '!' jpegdec)
else
  src+=('!' "video/x-raw,width=${size%x*},height=${size#*x},framerate=$fps/1")
fi
avq_launch "$dry" -e --stats -- "${src[@]}" '!' "${avq_tail[@]}"

#!/usr/bin/env bash
# Describes the AVQ stream an AVQ file produces, for receivers: an SDP file
# (RFC 8866; docs/rtp-payload-format.md section 6) or the matching udpsrc
# caps. Reads only the AVQ file (and the model's config.json for the token
# count); nothing needs to be built.
#
#   bash pipelines/avq-sdp.sh [--avq FILE] [--model DIR] [--host ADDR] [--port N]
#                             [--pt N] [--framerate FPS] [--caps] [-o FILE]
#
#   --avq FILE       AVQ file the sender encodes with (default: the tiny fixture)
#   --model DIR      model directory; its config.json gives the token count
#                    (default: 577 tokens, CLIP ViT-L/14 at 336 px)
#   --host ADDR      address in the c= line: where the stream goes (127.0.0.1)
#   --port N         UDP port in the m= line (5000)
#   --pt N           RTP payload type, 96..127 (96, avqpay's default)
#   --framerate FPS  informative a=framerate (none)
#   --caps           print the udpsrc caps instead of SDP
#   -o FILE          write to FILE instead of stdout
#
# Receive with the SDP file:  bash pipelines/cloud-receiver.sh --sdp FILE
# or, with gstreamer1.0-plugins-bad installed:
#   gst-launch-1.0 -m filesrc location=FILE ! sdpdemux ! avqdepay ! avqanswer ...
set -euo pipefail
. "$(dirname "$0")/avq-common.sh"

avq=$avq_default_avq model="" host=127.0.0.1 port=5000 pt=96 fps="" caps=0 out=""
usage () { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --avq) avq=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --pt) pt=$2; shift 2 ;;
    --framerate) fps=$2; shift 2 ;;
    --caps) caps=1; shift ;;
    -o) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
case $port in ''|*[!0-9]*) avq_die "--port needs a number" ;; esac
case $pt in ''|*[!0-9]*) avq_die "--pt needs a number in 96..127" ;; esac
[ "$pt" -ge 96 ] && [ "$pt" -le 127 ] || avq_die "--pt needs a number in 96..127"
case $fps in ''|[0-9]*) ;; *) avq_die "--framerate needs a number" ;; esac

avq_stream_params "$avq" "$model"

emit () {
  if [ "$caps" = 1 ]; then
    avq_rtp_caps "$pt" "$fps"
    return
  fi
  local ipver=IP4
  case $host in *:*) ipver=IP6 ;; esac
  printf 'v=0\r\n'
  printf 'o=- 0 0 IN %s %s\r\n' "$ipver" "$host"
  printf 's=AVQ stream\r\n'
  printf 'c=IN %s %s\r\n' "$ipver" "$host"
  printf 't=0 0\r\n'
  printf 'm=application %s RTP/AVP %s\r\n' "$port" "$pt"
  printf 'a=rtpmap:%s X-AVQ/90000\r\n' "$pt"
  printf 'a=fmtp:%s version=%s;tokens=%s;index-bits=%s;side-bits=%s;codebook=%s;layer=%s\r\n' \
    "$pt" "$AVQ_VERSION" "$AVQ_TOKENS" "$AVQ_INDEX_BITS" "$AVQ_SIDE_BITS" "$AVQ_CODEBOOK" "$AVQ_LAYER"
  [ -z "$fps" ] || printf 'a=framerate:%s\r\n' "$fps"
}

if [ -n "$out" ]; then
  emit > "$out"
else
  emit
fi

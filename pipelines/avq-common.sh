# Shared by the pipeline scripts in this directory; source it, do not run it.
#
# Provides:
#   avq_top, avq_build         the source tree and the build directory
#                              (AVQ_BUILD or <top>/build)
#   avq_default_model/_avq     the tiny model bundled for tests
#   avq_use_build_tree         puts the built plugin on GST_PLUGIN_PATH
#   avq_stream_params AVQ [MODEL]
#                              reads an AVQ file (and the model's config.json
#                              for the token count) without building anything
#                              and sets AVQ_VERSION AVQ_TOKENS AVQ_INDEX_BITS
#                              AVQ_SIDE_BITS AVQ_CODEBOOK AVQ_LAYER
#   avq_rtp_caps PT [FPS]      the udpsrc caps for those parameters
#   avq_launch DRY_RUN "GST_LAUNCH_FLAGS" AVQ_RUN_OPTS... -- PIPELINE...
#                              runs a pipeline (build/pipelines/avq-run when
#                              built, else gst-launch-1.0 with the flags) or,
#                              with DRY_RUN=1, prints the gst-launch-1.0
#                              command line
#   avq_edge_defaults, avq_edge_option, avq_edge_options_help, avq_edge_tail
#                              the options and the common tail of the edge
#                              scripts (avqencode ! avqpay ! udpsink)
# shellcheck shell=bash

avq_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
avq_build=${AVQ_BUILD:-$avq_top/build}
avq_default_model=$avq_top/tests/data/tiny-llava
avq_default_avq=$avq_top/tests/data/tiny-llava/avq-L0-derive.safetensors

avq_die () {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Puts the build tree's plugin (when built) first on GST_PLUGIN_PATH, ahead
# of an installed one.
avq_use_build_tree () {
  if [ -f "$avq_build/gst/libgstavq.so" ]; then
    export GST_PLUGIN_PATH="$avq_build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
  fi
}

# Sets _avq_header_len and _avq_header: the JSON header of safetensors FILE
# (an 8-byte little-endian length, then the JSON).
_avq_read_header () {
  local file=$1 n
  [ -r "$file" ] || avq_die "cannot read $file"
  n=$(head -c 8 "$file" | od -An -tu8 | tr -d ' ')
  [ -n "$n" ] && [ ${#n} -le 9 ] && [ "$n" -gt 1 ] ||
    avq_die "$file is not a safetensors file (header length '$n')"
  _avq_header_len=$n
  _avq_header=$(head -c $((8 + n)) "$file" | tail -c "$n")
}

_avq_meta () {   # KEY HEADER -> the string value of __metadata__ KEY
  printf '%s' "$2" | grep -o "\"$1\":\"[^\"]*\"" | sed -n 1p | sed 's/.*:"\(.*\)"/\1/'
}

_avq_config_int () {   # KEY CONFIG DEFAULT -> first integer value of KEY
  local v=""
  [ -r "$2" ] && v=$(grep -o "\"$1\"[[:space:]]*:[[:space:]]*[0-9]*" "$2" | sed -n 1p | grep -o '[0-9]*$')
  echo "${v:-$3}"
}

avq_stream_params () {
  local avq=$1 model=${2:-} header entry start end size image patch
  _avq_read_header "$avq"
  header=$_avq_header
  [ "$(_avq_meta avq.format "$header")" = 1 ] ||
    avq_die "$avq: avq.format is not \"1\" (not an AVQ file this version knows)"
  AVQ_VERSION=1
  AVQ_INDEX_BITS=$(_avq_meta avq.index_bits "$header")
  AVQ_SIDE_BITS=$(_avq_meta avq.side_bits "$header")
  AVQ_LAYER=$(_avq_meta avq.layer "$header")
  for v in "$AVQ_INDEX_BITS" "$AVQ_SIDE_BITS" "$AVQ_LAYER"; do
    case $v in ''|*[!0-9]*) avq_die "$avq: missing or bad avq.index_bits/side_bits/layer" ;; esac
  done
  # The codebook id: the first 8 bytes of the SHA-256 of the avq.codebook
  # tensor's bytes as stored (AVQ-SPEC section 2).
  entry=$(printf '%s' "$header" | grep -o '"avq\.codebook":{[^}]*}') ||
    avq_die "$avq has no avq.codebook tensor"
  start=$(printf '%s' "$entry" | sed -n 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1/p')
  end=$(printf '%s' "$entry" | sed -n 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\2/p')
  size=$(stat -L -c %s "$avq")
  [ -n "$start" ] && [ -n "$end" ] && [ "$end" -gt "$start" ] &&
    [ $((8 + _avq_header_len + end)) -le "$size" ] ||
    avq_die "$avq: bad data_offsets for avq.codebook"
  # dd reads exactly the tensor: `tail | head -c` would leave tail writing
  # into a closed pipe (SIGPIPE, which pipefail turns into a silent exit).
  AVQ_CODEBOOK=$(dd if="$avq" iflag=skip_bytes,count_bytes bs=1M status=none \
                   skip=$((8 + _avq_header_len + start)) count=$((end - start)) |
                 sha256sum | cut -c1-16)
  # Tokens: one per patch plus CLS; 336 / 14 unless the model says otherwise.
  image=$(_avq_config_int image_size "${model:+$model/config.json}" 336)
  patch=$(_avq_config_int patch_size "${model:+$model/config.json}" 14)
  [ "$patch" -gt 0 ] || avq_die "bad patch_size in $model/config.json"
  AVQ_TOKENS=$(( (image / patch) * (image / patch) + 1 ))
}

# The receiver's caps: what avqpay announces, as SDP fmtp string fields.
avq_rtp_caps () {
  local pt=${1:-96} fps=${2:-}
  printf 'application/x-rtp, media=(string)application, clock-rate=(int)90000, '
  printf 'encoding-name=(string)X-AVQ, payload=(int)%s, version=(string)%s, ' "$pt" "$AVQ_VERSION"
  printf 'tokens=(string)%s, index-bits=(string)%s, side-bits=(string)%s, ' \
    "$AVQ_TOKENS" "$AVQ_INDEX_BITS" "$AVQ_SIDE_BITS"
  printf 'codebook=(string)%s, layer=(string)%s' "$AVQ_CODEBOOK" "$AVQ_LAYER"
  [ -z "$fps" ] || printf ', a-framerate=(string)%s' "$fps"
  printf '\n'
}

# One argument as the shell should see it, quoted only where needed.
_avq_shell_word () {
  case $1 in
    *[!A-Za-z0-9_.,:/=!+@%-]*|'') printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

avq_launch () {
  local dry=$1 flags=$2; shift 2
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  if [ "$dry" = 1 ]; then
    printf 'gst-launch-1.0 %s' "$flags"
    for w in "$@"; do printf ' '; _avq_shell_word "$w"; done
    printf '\n'
    return 0
  fi
  avq_use_build_tree
  if [ -x "$avq_build/pipelines/avq-run" ]; then
    "$avq_build/pipelines/avq-run" "${opts[@]}" "$@"
  else
    # shellcheck disable=SC2086
    gst-launch-1.0 $flags "$@"
  fi
}

# ---- edge scripts ----

avq_num () {   # NAME VALUE: VALUE must be a plain non-negative number
  case $2 in ''|*[!0-9.]*|*.*.*) avq_die "$1 needs a number, not '$2'" ;; esac
}

avq_edge_defaults () {
  host=127.0.0.1 port=5000 model=$avq_default_model avq=$avq_default_avq
  mtu=1400 pt=96 interval="" max_rate="" preprocess="" threads="" dry=0
}

# Consumes one option common to the edge scripts: sets _avq_shift to the
# number of words used (0: not a common option).
avq_edge_option () {
  _avq_shift=2
  case $1 in
    --host) host=${2-} ;;
    --port) port=${2-} ;;
    --model) model=${2-} ;;
    --avq) avq=${2-} ;;
    --mtu) mtu=${2-} ;;
    --pt) pt=${2-} ;;
    --interval) interval=${2-} ;;
    --max-rate) max_rate=${2-} ;;
    --preprocess) preprocess=${2-} ;;
    --threads) threads=${2-} ;;
    -n|--dry-run) dry=1; _avq_shift=1 ;;
    *) _avq_shift=0 ;;
  esac
  [ "$_avq_shift" -ne 2 ] || [ $# -ge 2 ] || avq_die "$1 needs a value"
}

avq_edge_options_help () {
  cat <<'HELP'
Common options:
  --host ADDR        receiver address (127.0.0.1)
  --port N           receiver UDP port (5000)
  --model DIR        LLaVA model directory (default: the bundled tiny model)
  --avq FILE         AVQ file, the same one the receiver uses
                     (default: tests/data/tiny-llava/avq-L0-derive.safetensors)
  --mtu N            RTP packet size limit in bytes (1400: one packet a frame)
  --pt N             RTP payload type, 96..127 (96)
  --interval N       encode every Nth camera frame (avqencode interval)
  --max-rate FPS     encode at most FPS frames a second (avqencode max-rate)
  --preprocess crop|pad  (avqencode preprocess; crop)
  --threads N        encoder compute threads (0: automatic)
  -n, --dry-run      print the gst-launch-1.0 command line and exit
HELP
}

# Sets the array avq_tail: "videoconvert ! avqencode ... ! avqpay ! udpsink".
# SYNC (true|false) is udpsink's sync: false for live cameras (send each
# frame as soon as it is encoded), true to pace a file at its frame rate.
avq_edge_tail () {
  local sync=$1
  avq_num --port "$port"; avq_num --mtu "$mtu"; avq_num --pt "$pt"
  [ -z "$interval" ] || avq_num --interval "$interval"
  [ -z "$max_rate" ] || avq_num --max-rate "$max_rate"
  [ -z "$threads" ] || avq_num --threads "$threads"
  case $preprocess in ''|crop|pad) ;; *) avq_die "--preprocess is crop or pad" ;; esac
  if [ "$dry" != 1 ]; then
    [ -f "$model/config.json" ] || avq_die "$model is not a model directory (no config.json)"
    [ -f "$avq" ] || avq_die "no AVQ file $avq"
  fi
  avq_tail=(videoconvert '!' avqencode "model=$model" "avq=$avq")
  [ -z "$interval" ] || avq_tail+=("interval=$interval")
  [ -z "$max_rate" ] || avq_tail+=("max-rate=$max_rate")
  [ -z "$preprocess" ] || avq_tail+=("preprocess=$preprocess")
  [ -z "$threads" ] || avq_tail+=("threads=$threads")
  avq_tail+=('!' avqpay "mtu=$mtu" "pt=$pt" '!' udpsink "host=$host" "port=$port" "sync=$sync")
}

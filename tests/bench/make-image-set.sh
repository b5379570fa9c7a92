#!/bin/bash
# make-image-set.sh [--no-icons] OUTDIR
#
# Builds two disjoint image sets for codebook training and evaluation:
# OUTDIR/train/ and OUTDIR/eval/, PNG, 151 images each (131 without the
# icons), plus OUTDIR/MANIFEST (file, md5, md5 of the 336x336 centre crop,
# the pipeline that made it). Only Debian-packaged material is used:
#   - GStreamer's videotestsrc (every pattern, with colours, zone-plate
#     coefficients, later frames of the animated ones, scrolling), mixed by
#     compositor, recoloured by videobalance, turned by videoflip, run
#     through the effectv filters, and with textoverlay text in DejaVu
#     fonts (gstreamer1.0-plugins-base/-good, fonts-dejavu-core);
#   - the three photographs of the tiny fixture (tests/data/tiny-llava/
#     images, scikit-image's sample data): crops, flips and recolourings,
#     train from the left half of each photo, eval from the right half, so
#     the two sets share no pixel of them;
#   - when installed (and not --no-icons), the 512x512 icons of
#     adwaita-icon-theme composited on backgrounds, alternate icons to each
#     set.
# Every parameter comes from a fixed-seed generator: the same machine and
# package versions give byte-identical files (GStreamer 1.22 / Debian 12
# here; another version may render some patterns differently, the MANIFEST
# says what was made). The script fails unless every file is distinct (md5)
# and no two images are identical after a 336x336 centre crop either
# (videoscale's, close to what the CLIP preprocessing keeps), across both
# sets.
#
# Cost: ~900 short gst-launch-1.0 runs, a few minutes of one core.
set -euo pipefail
set -f   # pipeline texts are split on spaces; never glob them

usage() { echo "usage: $0 [--no-icons] OUTDIR" >&2; exit 2; }
ICONS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-icons) ICONS=0; shift ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PHOTOS=$(cd "$HERE/../data/tiny-llava/images" && pwd)
ICON_DIR=/usr/share/icons/Adwaita/512x512
command -v gst-launch-1.0 >/dev/null || { echo "$0: gst-launch-1.0 not found" >&2; exit 1; }

if [ -e "$OUT/train" ] || [ -e "$OUT/eval" ]; then
  echo "$0: $OUT/train or $OUT/eval exists; remove it first" >&2
  exit 1
fi
mkdir -p "$OUT/train" "$OUT/eval"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MANIFEST="$OUT/MANIFEST"
: > "$MANIFEST.tmp"

# --- deterministic random numbers (31-bit LCG, no overflow in bash) ---
S=1
seed () { S=$(( ($1 * 7919 + 12345) & 0x7fffffff )); rnd 2; rnd 2; }
# R = uniform integer in [0, $1)
rnd () { S=$(( (S * 1103515245 + 12345) & 0x7fffffff )); R=$(( (S >> 4) % $1 )); }
# R = uniform integer in [$1, $2]
range () { rnd $(( $2 - $1 + 1 )); R=$(( R + $1 )); }
# R = one of the arguments
pick () { local a=("$@"); rnd ${#a[@]}; R=${a[$R]}; }
# R = an opaque colour 0xffRRGGBB
colour () { rnd 4096; local hi=$R; rnd 4096; printf -v R '0xff%03x%03x' $hi $R; }
# R = $1/100 as a decimal ("-0.25")
dec () { local v=$1 s=""; [ "$v" -lt 0 ] && { s=-; v=$(( -v )); }; printf -v R '%s%d.%02d' "$s" $(( v / 100 )) $(( v % 100 )); }

SIZES=(640x480 800x600 336x336 1280x720 480x640 720x405 512x512 1000x336 336x600 960x540 400x300 600x800)
size () { pick "${SIZES[@]}"; W=${R%x*}; H=${R#*x}; }
# videoflip video-direction: identity (3 in 10), 90r, 180, 90l, horiz, vert,
# ul-lr, ur-ll. (Its deprecated "method" property does nothing in
# GStreamer 1.22.)
flip () { pick 0 0 0 1 2 3 4 5 6 7; FLIP="videoflip video-direction=$R"; }
# a random recolouring
balance () {
  range -30 30; dec $R; local hue=$R
  range 40 160; dec $R; local sat=$R
  range -20 20; dec $R; local bri=$R
  range 70 130; dec $R; local con=$R
  BAL="videobalance hue=$hue saturation=$sat brightness=$bri contrast=$con"
}

N=0          # images made in the current set
SET=         # train or eval
# emit NAME FRAMES PIPELINE: run PIPELINE (a gst-launch text producing raw
# video, FRAMES buffers), keep its last frame as $SET/NNN-NAME.png.
emit () {
  local name=$1 frames=$2 pipe=$3
  local file
  printf -v file '%s/%03d-%s.png' "$SET" "$N" "$name"
  set +f; rm -f "$TMP"/f*.png; set -f
  # Intermediate frames uncompressed (cheap), the kept one re-encoded.
  if ! gst-launch-1.0 -q $pipe ! videoconvert ! video/x-raw,format=RGB \
        ! pngenc compression-level=0 \
        ! multifilesink location="$TMP/f%06d.png" max-files=1 >"$TMP/log" 2>&1; then
    echo "$0: pipeline failed for $file: $pipe" >&2
    cat "$TMP/log" >&2
    exit 1
  fi
  set +f; local got=("$TMP"/f*.png); set -f
  if [ ${#got[@]} -ne 1 ] || [ ! -f "${got[0]}" ]; then
    echo "$0: no frame from $pipe" >&2; exit 1
  fi
  local last=$(basename "${got[0]}" .png); last=$(( 10#${last#f} ))
  if [ "$last" -ne $(( frames - 1 )) ]; then
    echo "$0: $file: expected frame $(( frames - 1 )), got $last" >&2; exit 1
  fi
  gst-launch-1.0 -q filesrc location="${got[0]}" ! pngdec ! videoconvert \
    ! video/x-raw,format=RGB ! pngenc ! filesink location="$OUT/$file" >"$TMP/log" 2>&1 \
    || { cat "$TMP/log" >&2; exit 1; }
  printf '%s\t%s\n' "$file" "$pipe" >> "$MANIFEST.tmp"
  N=$(( N + 1 ))
}

# ---- families; $1 = set number (0 train, 1 eval) ----

# Every videotestsrc pattern once, later frames, random colours, size,
# orientation and recolouring.
fam_patterns () {
  seed $(( $1 * 100 + 1 ))
  local p
  for p in $(seq 0 25); do
    size; range 0 30; local f=$R; colour; local fg=$R; colour; local bg=$R
    flip; balance
    emit "pattern$p" $(( f + 1 )) "videotestsrc pattern=$p num-buffers=$(( f + 1 )) foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1 ! videoconvert ! $FLIP ! $BAL"
  done
}

# Zone plates (luma and chroma) with random coefficients and frame offsets.
fam_zoneplates () {
  seed $(( $1 * 100 + 2 ))
  local i
  for i in $(seq 0 23); do
    size; range 0 30; local f=$R
    local p=$(( i % 2 ? 16 : 14 ))
    range -40 40; local kx=$R; range -40 40; local ky=$R
    range 0 60; local kx2=$R; range 0 60; local ky2=$R
    range -20 20; local kxy=$R; range 0 20; local kt=$R
    range -10 10; local kxt=$R; range -10 10; local kyt=$R; range 0 4; local kt2=$R
    range -200 200; local xo=$R; range -200 200; local yo=$R; range 0 255; local k0=$R
    colour; local fg=$R; colour; local bg=$R
    emit "zoneplate" $(( f + 1 )) "videotestsrc pattern=$p num-buffers=$(( f + 1 )) kx=$kx ky=$ky kx2=$kx2 ky2=$ky2 kxy=$kxy kt=$kt kxt=$kxt kyt=$kyt kt2=$kt2 xoffset=$xo yoffset=$yo k0=$k0 foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1"
  done
}

# The moving ball, three motions, later frames.
fam_ball () {
  seed $(( $1 * 100 + 3 ))
  local i
  for i in $(seq 0 9); do
    size; range 1 60; local f=$R; colour; local fg=$R; colour; local bg=$R
    local motion=$(( i % 3 )); pick true false; local fl=$R
    emit "ball" $(( f + 1 )) "videotestsrc pattern=ball animation-mode=frames motion=$motion flip=$fl num-buffers=$(( f + 1 )) foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1"
  done
}

# Patterns scrolled sideways (horizontal-speed), later frames.
fam_scroll () {
  seed $(( $1 * 100 + 4 ))
  local i
  for i in $(seq 0 9); do
    size; pick 0 8 9 10 11 13 18 20 21 22 23 24 25; local p=$R
    range 3 40; local f=$R; range 2 60; local sp=$R; pick 1 -1; sp=$(( sp * R ))
    colour; local fg=$R; colour; local bg=$R; flip
    emit "scroll$p" $(( f + 1 )) "videotestsrc pattern=$p horizontal-speed=$sp num-buffers=$(( f + 1 )) foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1 ! videoconvert ! $FLIP"
  done
}

RICH=(0 7 9 10 11 13 14 15 18 20 21 22 23 24 25)
# Two patterns mixed: blended, picture-in-picture, or split.
fam_composite () {
  seed $(( $1 * 100 + 5 ))
  local i
  for i in $(seq 0 19); do
    size; range 0 25; local f=$R; local nb=$(( f + 1 ))
    pick "${RICH[@]}"; local p0=$R; pick "${RICH[@]}"; local p1=$R
    colour; local fg0=$R; colour; local bg0=$R; colour; local fg1=$R; colour; local bg1=$R
    range 20 90; local kx=$R; range 20 90; local ky=$R
    local pads w1 h1 mode=$(( i % 3 ))
    case $mode in
      0) range 30 70; dec $R; pads="sink_1::alpha=$R"; w1=$W; h1=$H ;;
      1) range $(( W / 4 )) $(( W * 2 / 3 )); w1=$R; range $(( H / 4 )) $(( H * 2 / 3 )); h1=$R
         range 0 $(( W - w1 )); local x=$R; range 0 $(( H - h1 )); pads="sink_1::xpos=$x sink_1::ypos=$R" ;;
      2) w1=$(( W / 2 )); h1=$H; pads="sink_1::xpos=$(( W - w1 ))" ;;
    esac
    emit "composite" $nb "compositor name=c background=black $pads ! video/x-raw,width=$W,height=$H ! identity name=o videotestsrc pattern=$p0 num-buffers=$nb kx2=$kx ky2=$ky foreground-color=$fg0 background-color=$bg0 ! video/x-raw,width=$W,height=$H,framerate=30/1 ! c.sink_0 videotestsrc pattern=$p1 num-buffers=$nb horizontal-speed=$(( i - 10 )) foreground-color=$fg1 background-color=$bg1 ! video/x-raw,width=$w1,height=$h1,framerate=30/1 ! c.sink_1 o."
  done
}

# The effectv filters over moving patterns.
fam_effects () {
  seed $(( $1 * 100 + 6 ))
  local fx
  for fx in edgetv warptv rippletv shagadelictv radioactv vertigotv agingtv dicetv quarktv revtv optv streaktv; do
    pick 640x480 320x240 480x360 800x600; W=${R%x*}; H=${R#*x}
    # Moving sources only: an effect over a still picture can return it
    # unchanged (quarktv, rippletv).
    pick 0 13 18 21 22 11 20 23 14; local p=$R
    range 6 30; local f=$R; range 2 12; local sp=$R; pick 1 -1; sp=$(( sp * R ))
    colour; local fg=$R; colour; local bg=$R; flip
    emit "$fx" $(( f + 1 )) "videotestsrc pattern=$p horizontal-speed=$sp kx2=20 ky2=20 kt=$(( f % 7 + 1 )) num-buffers=$(( f + 1 )) foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1 ! videoconvert ! $fx ! videoconvert ! $FLIP"
  done
}

WORDS=(camera kitchen street bicycle window garden river station market
       harbour bridge forest library museum airport stadium)
# Text on pattern backgrounds.
fam_text () {
  seed $(( $1 * 100 + 7 ))
  local i
  for i in $(seq 0 7); do
    size; pick 23 17 9 0 24 11 21; local p=$R
    colour; local fg=$R; colour; local bg=$R; colour; local tc=$R
    pick "${WORDS[@]}"; local w1=$R; pick "${WORDS[@]}"; local w2=$R
    range 18 72; local pt=$R; pick left center right; local ha=$R; pick top center bottom; local va=$R
    pick "DejaVu Sans Bold" "DejaVu Serif" "DejaVu Sans Mono"; local font=$R
    pick true false; local shade=$R
    emit "text" 1 "videotestsrc pattern=$p num-buffers=1 foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1 ! textoverlay text=\"$w1 $w2 $(( i + 10 * $1 ))\" font-desc=\"$font $pt\" color=$tc halignment=$ha valignment=$va shaded-background=$shade"
  done
}

# Crops of the fixture photographs: train from the left half, eval from the
# right half of each.
fam_photos () {
  seed $(( $1 * 100 + 8 ))
  local photo dims pw ph
  for photo in astronaut:512x512 chelsea:451x300 coffee:600x400; do
    dims=${photo#*:}; photo=${photo%%:*}
    pw=${dims%x*}; ph=${dims#*x}
    local x0=$(( $1 ? pw / 2 : 0 )) hw
    hw=$(( $1 ? pw - pw / 2 : pw / 2 ))
    local i
    for i in $(seq 0 6); do
      range $(( hw * 6 / 10 )) $hw; local cw=$R; range $(( ph * 5 / 10 )) $ph; local ch=$R
      range 0 $(( hw - cw )); local cx=$(( x0 + R )); range 0 $(( ph - ch )); local cy=$R
      flip; balance
      [ $i -eq 0 ] && { FLIP="videoflip"; BAL="videobalance"; }
      emit "$photo" 1 "filesrc location=$PHOTOS/$photo.png ! pngdec ! videoconvert ! videocrop left=$cx right=$(( pw - cx - cw )) top=$cy bottom=$(( ph - cy - ch )) ! videoconvert ! $FLIP ! $BAL"
    done
  done
}

# adwaita-icon-theme's 512x512 icons over pattern backgrounds; alternate
# icons (sorted by path) to train and eval, 20 each.
ICON_LIST=()
fam_icons () {
  [ ${#ICON_LIST[@]} -gt 0 ] || return 0
  seed $(( $1 * 100 + 9 ))
  local i
  for i in $(seq 0 19); do
    local icon=${ICON_LIST[$(( 2 * i + $1 ))]}
    size; pick 17 23 11 9 0 21 14; local p=$R
    colour; local fg=$R; colour; local bg=$R
    local s=$(( (W < H ? W : H) * 6 / 10 )); range $(( s / 2 )) $s; s=$R
    range 0 $(( W - s )); local x=$R; range 0 $(( H - s )); local y=$R
    emit "icon-$(basename "$icon" .png)" 1 "compositor name=c sink_1::xpos=$x sink_1::ypos=$y ! video/x-raw,width=$W,height=$H ! identity name=o videotestsrc pattern=$p num-buffers=1 kx2=30 ky2=30 foreground-color=$fg background-color=$bg ! video/x-raw,width=$W,height=$H,framerate=30/1 ! c.sink_0 filesrc location=$icon ! pngdec ! videoconvert ! imagefreeze num-buffers=1 ! videoscale ! video/x-raw,width=$s,height=$s,framerate=30/1 ! c.sink_1 o."
  done
}

ICON_NOTE="no icons"
if [ $ICONS = 1 ] && [ -d "$ICON_DIR" ]; then
  set +f
  mapfile -t ICON_LIST < <(LC_ALL=C ls -1 "$ICON_DIR"/*/*.png 2>/dev/null | LC_ALL=C sort)
  set -f
  if [ ${#ICON_LIST[@]} -ge 40 ]; then
    ICON_NOTE="icons from $ICON_DIR ($(dpkg-query -W -f='${Package} ${Version}' adwaita-icon-theme 2>/dev/null || echo 'package version unknown'))"
  else
    ICON_LIST=()
  fi
fi

for SETNO in 0 1; do
  SET=$([ $SETNO = 0 ] && echo train || echo eval)
  N=0
  fam_patterns $SETNO
  fam_zoneplates $SETNO
  fam_ball $SETNO
  fam_scroll $SETNO
  fam_composite $SETNO
  fam_effects $SETNO
  fam_text $SETNO
  fam_photos $SETNO
  fam_icons $SETNO
  echo "$SET: $N images" >&2
done

# ---- checks: distinct files, distinct 336x336 centre crops, disjoint sets ----
{
  echo "# make-image-set.sh: $(gst-launch-1.0 --version | sed -n 2p), $ICON_NOTE"
  echo "# file	md5	crop336-md5	pipeline"
} > "$MANIFEST"
while IFS=$'\t' read -r file pipe; do
  md5=$(md5sum < "$OUT/$file" | cut -d' ' -f1)
  crop=$(gst-launch-1.0 -q filesrc location="$OUT/$file" ! pngdec ! videoconvert \
           ! aspectratiocrop aspect-ratio=1/1 ! videoscale ! video/x-raw,format=RGB,width=336,height=336 \
           ! fdsink | md5sum | cut -d' ' -f1)
  printf '%s\t%s\t%s\t%s\n' "$file" "$md5" "$crop" "$pipe"
done < "$MANIFEST.tmp" >> "$MANIFEST"
rm -f "$MANIFEST.tmp"

fail=0
dups=$(grep -v '^#' "$MANIFEST" | cut -f2 | sort | uniq -d)
[ -z "$dups" ] || { echo "$0: identical files (md5): $dups" >&2; fail=1; }
dups=$(grep -v '^#' "$MANIFEST" | cut -f3 | sort | uniq -d)
[ -z "$dups" ] || { echo "$0: identical 336x336 centre crops: $dups" >&2; fail=1; }
for s in train eval; do
  n=$(grep -c "^$s/" "$MANIFEST")
  [ "$n" -ge 100 ] || { echo "$0: $s has only $n images" >&2; fail=1; }
done
[ $fail = 0 ] || exit 1
echo "ok: $(grep -c '^train/' "$MANIFEST") train + $(grep -c '^eval/' "$MANIFEST") eval images, all distinct (file and 336x336 crop md5), $ICON_NOTE; manifest: $MANIFEST" >&2
